"""Does a fast preset keep the effect of full depth? Rows of several `python -m guard evaluate` reports, side by side.

    python benchmarks/effect_kept.py docs/eval/v6_engine:v6 docs/eval/v7_fast:v7 --law-cut 0.237 --versus freeze:v6

Each argument is a report folder (its results.csv) and a label for its rows (e.g. the preset it ran).
Every report must hold the noise control at the same images, eps and video seeds, and the controls must
agree (the same photos, seeds and code make the same control videos: a check that the reports compare
alike). Prints per method and label: the flow ratio, mean [95% CI] over images (`guard.evaluate.interval`),
its difference from the control (paired), the posted flow ratio, and the cut (1 - flow ratio) as a share
of `--law-cut`, the cut the embedded model's training law allows at that eps (`benchmarks/law_bound.py`:
1 - its mean "law ratio"); and for each method in two reports, whether one's mean lies in the other's
interval.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from guard.evaluate import by_image, differences_from_control, format_interval, interval  # noqa: E402
from guard.jobs import CONTROL  # noqa: E402


def read(folder: str) -> list[dict]:
    with open(os.path.join(folder, "results.csv"), newline="") as f:
        return [dict(r, eps=int(r["eps"])) for r in csv.DictReader(f)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="FOLDER:LABEL")
    p.add_argument("--law-cut", type=float, required=True, help="the law's mean cut at this eps, in [0, 1]")
    p.add_argument("--eps", type=int, default=8)
    p.add_argument("--versus", help="METHOD:LABEL: paired differences of every other method from this one")
    args = p.parse_args()
    reports = [(spec.rsplit(":", 1)[1], [r for r in read(spec.rsplit(":", 1)[0]) if r["eps"] == args.eps])
               for spec in args.reports]

    controls = [{(r["image"], r["video_seed"]): round(float(r["flow_ratio"]), 6) for r in rows
                 if r["method"] == CONTROL} for _, rows in reports]
    shared = set.intersection(*(set(c) for c in controls))
    same = all(c[k] == controls[0][k] for c in controls[1:] for k in shared)
    print(f"noise controls of the {len(reports)} reports agree on the {len(shared)} (image, seed) they share: {same}")
    if not same:
        return 1

    print(f"\n| method | preset | flow ratio | vs the control | posted flow ratio | cut / law's cut ({args.law_cut:.3f}) |")
    print("|---|---|---|---|---|---|")
    stats = {}
    for label, rows in reports:
        for method in dict.fromkeys(r["method"] for r in rows):
            if method == CONTROL and label != reports[0][0]:
                continue
            flow = interval(by_image([r for r in rows if r["method"] == method], "flow_ratio"))
            posted = interval(by_image([r for r in rows if r["method"] == method], "posted_flow_ratio"))
            delta = interval(differences_from_control(rows, method, args.eps, "flow_ratio")) \
                if method != CONTROL else None
            share = (1 - flow["mean"]) / args.law_cut
            stats.setdefault(method, {})[label] = flow
            print(f"| {method} | {label} | {format_interval(flow)} | "
                  f"{format_interval(delta, mark_nonzero=True) if delta else '-'} | {format_interval(posted)} | "
                  f"{share:.0%} |")

    if args.versus:
        method, label = args.versus.split(":")
        base = {(r["image"], r["video_seed"]): float(r["flow_ratio"]) for r in dict(reports)[label]
                if r["method"] == method}
        print(f"\nPaired differences in flow ratio from {method} ({label}), same image and video seed:")
        for other_label, rows in reports:
            for other in dict.fromkeys(r["method"] for r in rows):
                if (other, other_label) == (method, label) or other == CONTROL:
                    continue
                grouped: dict[str, list[float]] = {}
                for r in rows:
                    key = (r["image"], r["video_seed"])
                    if r["method"] == other and key in base:
                        grouped.setdefault(r["image"], []).append(float(r["flow_ratio"]) - base[key])
                print(f"  {other} ({other_label}) - {method} ({label}): "
                      f"{format_interval(interval(grouped), mark_nonzero=True)}")

    print("\nFast preset's mean inside the full one's interval:")
    for method, by_label in stats.items():
        labels = list(by_label)
        for a in labels:
            for b in labels:
                if a != b and not np.isnan(by_label[b]["low"]):
                    inside = by_label[b]["low"] <= by_label[a]["mean"] <= by_label[b]["high"]
                    print(f"  {method}: {a} mean {by_label[a]['mean']:.3f} in {b}'s "
                          f"[{by_label[b]['low']:.3f}, {by_label[b]['high']:.3f}]: {inside}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
