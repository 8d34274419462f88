"""The default at its automatic strength against the baselines of the unseen-CT benchmark, per anatomy and dose.

    python training/scripts/compare_auto_strength.py [--out training/docs/benchmark/auto-strength]

Joins two committed reports made on the same simulated low-dose cases (same noise model and seeds):
`benchmark/default-0.4/benchmark.json` (LDCT, tuned BM3D, the previous default, the default at strength 1.0;
`benchmark_unseen_ct.py`) and `benchmark/auto-strength/auto-strength.json` (the default at strength 1.0 and
auto; `evaluate_auto_strength.py`). It checks that both agree on the default's strength-1.0 PSNR, so a row
is never matched to another case's simulation.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmark"
BASELINES = ("BM3D (tuned)", "previous-default-0.3.0")


def joined_rows(benchmark: dict, auto: dict) -> list:
    """One row per case and dose: PSNR (dB) of the default at auto and 1.0, and of each baseline."""
    rows = []
    for entry in auto["rows"]:
        results = benchmark["results"][f"{entry['case']}@{entry['dose']:g}"]
        if abs(results["default-0.4.0"]["psnr_db"] - entry["psnr_db_strength_1"]) > 0.01:
            raise SystemExit(f"{entry['case']} at {entry['dose']:g}: the two reports disagree on the default's PSNR")
        rows.append({"case": entry["case"], "anatomy": entry["anatomy"], "dose": entry["dose"],
                     "strength": entry["strength"], "auto": entry["psnr_db_auto"], "strength_1": entry["psnr_db_strength_1"],
                     **{name: results[name]["psnr_db"] for name in BASELINES}})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS / "auto-strength")
    args = parser.parse_args()
    benchmark = json.loads((DOCS / "default-0.4" / "benchmark.json").read_text())
    auto = json.loads((DOCS / "auto-strength" / "auto-strength.json").read_text())
    rows = joined_rows(benchmark, auto)
    groups = defaultdict(list)
    for row in rows:
        groups[(row["anatomy"], row["dose"])].append(row)
    summary = {"rows": len(rows)}
    for label, column in (("strength_1", "strength_1"), ("auto", "auto")):
        for baseline in BASELINES:
            gaps = np.array([row[column] - row[baseline] for row in rows])
            summary[f"{label}_minus_{baseline}"] = {"mean_db": round(float(gaps.mean()), 3), "wins": int((gaps > 0).sum())}
    lines = ["# The default at its automatic strength against the baselines (unseen CT, PSNR at [-160, 240] HU)", "",
             "Per anatomy and dose: the mean PSNR difference (dB) of the default at strength 1.0 and at auto against "
             "tuned BM3D and the previous default 0.3.0, and the range over the cases.", "",
             "| anatomy | dose | cases | 1.0 - BM3D | auto - BM3D (range) | auto - 0.3.0 (range) |",
             "| --- | ---: | ---: | ---: | --- | --- |"]
    for (anatomy, dose), members in sorted(groups.items()):
        def gaps(column, baseline):
            return np.array([m[column] - m[baseline] for m in members])
        to_bm3d, to_bm3d_auto, to_previous = gaps("strength_1", BASELINES[0]), gaps("auto", BASELINES[0]), \
            gaps("auto", BASELINES[1])
        lines.append(f"| {anatomy} | {dose:g} | {len(members)} | {to_bm3d.mean():+.2f} | {to_bm3d_auto.mean():+.2f} "
                     f"({to_bm3d_auto.min():+.2f} to {to_bm3d_auto.max():+.2f}) | {to_previous.mean():+.2f} "
                     f"({to_previous.min():+.2f} to {to_previous.max():+.2f}) |")
    for baseline in BASELINES:
        before, after = summary[f"strength_1_minus_{baseline}"], summary[f"auto_minus_{baseline}"]
        lines.append("")
        lines.append(f"Against {baseline}, over {len(rows)} case-doses: strength 1.0 {before['mean_db']:+.2f} dB mean "
                     f"(wins {before['wins']}), auto {after['mean_db']:+.2f} dB mean (wins {after['wins']}).")
    lines.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "against-baselines.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    (args.out / "against-baselines.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
