"""Mean PSNR per dose and head-to-head wins of the models in one or more `benchmark_unseen_ct.py` reports.

    python training/scripts/compare_benchmarks.py REPORT.json [REPORT.json ...]

Reports are merged per case@dose (the same case and dose in two reports must come from the same
simulation, as they do when run with the same --doses/--fbp-filter). Prints, per dose, the mean PSNR
([-160, 240] HU) of every row, then for every pair of models the mean difference and how many cases
the first one wins.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
from pathlib import Path

INPUT_ROW = "LDCT input"


def merged(paths: list[Path]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for path in paths:
        for key, methods in json.loads(path.read_text())["results"].items():
            rows.setdefault(key, {}).update({m: v["psnr_db"] for m, v in methods.items()})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    rows = merged(parser.parse_args().reports)
    methods = sorted({m for r in rows.values() for m in r if m != INPUT_ROW})
    per_dose: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for key, row in rows.items():
        dose = key.split("@")[1]
        for method in [INPUT_ROW] + methods:
            if method in row:
                per_dose[dose][method].append(row[method])
    for dose in sorted(per_dose, key=float):
        means = {m: f"{sum(v) / len(v):.2f} ({len(v)} cases)" for m, v in per_dose[dose].items()}
        print(f"dose {dose}: {means}")
    for first, second in itertools.combinations(methods, 2):
        differences = [row[first] - row[second] for row in rows.values() if first in row and second in row]
        if differences:
            print(f"{first} - {second}: mean {sum(differences) / len(differences):+.2f} dB, "
                  f"{first} wins {sum(d > 0 for d in differences)}/{len(differences)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
