"""The default at its automatic strength against the baselines of the unseen-CT benchmark, per anatomy and dose.

    python training/scripts/compare_auto_strength.py [--out training/docs/benchmark/auto-strength]
    python training/scripts/compare_auto_strength.py --candidates NAME=REPORT.json ... --out FOLDER

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

from report_files import write_report

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmark"
BASELINES = ("BM3D (tuned)", "previous-default-0.3.0")


def joined_rows(benchmark: dict, auto: dict, check_row: str = "default-0.4.0") -> list:
    """One row per case and dose: PSNR (dB) of the model at auto and 1.0, and of each baseline. With
    `check_row` (the same model's row in `benchmark`), both reports must agree on its PSNR at 1.0."""
    rows = []
    for entry in auto["rows"]:
        results = benchmark["results"][f"{entry['case']}@{entry['dose']:g}"]
        if check_row and abs(results[check_row]["psnr_db"] - entry["psnr_db_strength_1"]) > 0.01:
            raise SystemExit(f"{entry['case']} at {entry['dose']:g}: the two reports disagree on the default's PSNR")
        rows.append({"case": entry["case"], "anatomy": entry["anatomy"], "dose": entry["dose"],
                     "strength": entry["strength"], "auto": entry["psnr_db_auto"], "strength_1": entry["psnr_db_strength_1"],
                     **{name: results[name]["psnr_db"] for name in BASELINES}})
    return rows


def candidates_lines(reference: dict, candidates: dict) -> tuple:
    """Each candidate model's PSNR at auto against the reference report's (same cases), per row and in sum."""
    base = {(r["case"], r["dose"]): r["psnr_db_auto"] for r in reference["rows"]}
    names = list(candidates)
    lines = ["| case | dose | " + " | ".join(names) + " |", "| --- | ---: |" + " ---: |" * len(names)]
    changes = {name: [] for name in names}
    by_case = {name: {(r["case"], r["dose"]): r["psnr_db_auto"] for r in report["rows"]}
               for name, report in candidates.items()}
    for key in base:
        cells = []
        for name in names:
            changes[name].append(by_case[name][key] - base[key])
            cells.append(f"{changes[name][-1]:+.2f}")
        lines.append(f"| {key[0]} | {key[1]:g} | " + " | ".join(cells) + " |")
    summary = {}
    for name, values in changes.items():
        values = np.array(values)
        summary[name] = {"mean_db": round(float(values.mean()), 3), "wins": int((values > 0).sum()),
                         "worse_by_more_than_0.1": int((values < -0.1).sum()), "worst_db": round(float(values.min()), 2)}
        lines.append("")
        lines.append(f"{name}: {summary[name]['mean_db']:+.2f} dB mean, wins {summary[name]['wins']} of {len(values)}, "
                     f"{summary[name]['worse_by_more_than_0.1']} worse by more than 0.1 dB (worst "
                     f"{summary[name]['worst_db']:+.2f}).")
    return lines, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS / "auto-strength")
    parser.add_argument("--auto", type=Path, default=DOCS / "auto-strength" / "auto-strength.json",
                        help="evaluate_auto_strength.py's report of the model to compare")
    parser.add_argument("--check-row", default="default-0.4.0",
                        help="that model's row in default-0.4/benchmark.json, checked to agree ('' for a model "
                             "the benchmark did not run)")
    parser.add_argument("--candidates", nargs="*", default=[], metavar="NAME=REPORT",
                        help="other models' evaluate_auto_strength.py reports: their PSNR at auto against the "
                             "default's, into candidates.{json,md}")
    args = parser.parse_args()
    if args.candidates:
        reference = json.loads(args.auto.read_text())
        candidates = {name: json.loads(Path(path).read_text())
                      for name, path in (item.split("=", 1) for item in args.candidates)}
        lines, summary = candidates_lines(reference, candidates)
        lines = ["# Candidate models at their automatic strength against the default at its own (PSNR change, dB)",
                 "", *lines, ""]
        write_report(args.out, "candidates", {"summary": summary, "reports": args.candidates}, "\n".join(lines))
        print("\n".join(lines))
        return 0
    benchmark = json.loads((DOCS / "default-0.4" / "benchmark.json").read_text())
    auto = json.loads(args.auto.read_text())
    rows = joined_rows(benchmark, auto, args.check_row)
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
    write_report(args.out, "against-baselines", {"summary": summary, "rows": rows}, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
