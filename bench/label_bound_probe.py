"""Probe: where the label model's two-way bound acts, part by part, with the balance estimated.

For every set of the given parts (default: all), the estimated fit's warnings and fallback reason say whether
the bound held the balance at a two-way source's share of yes ("held at"), or whether the fit fell back
because the balance and every share lie on opposite sides of 0.5 (with the coverage of the source that set
the share). A change to the bound moves a set's labels only where one of these two changes, so comparing two
runs of this probe (before and after) lists every set it can move, without scoring anything:

    PYTHONSAFEPATH=1 .venv/bin/python bench/label_bound_probe.py --out bench/results/label_bound_probe.json
    PYTHONSAFEPATH=1 .venv/bin/python bench/label_bound_probe.py --near-half 1 \
        --out bench/results/label_bound_probe_without.json     # the rule before NEAR_HALF (any fit may cross)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_suite import HOLDOUTS, SEEN_PARTS, all_families, suite  # noqa: E402
from provenance import provenance, write_result  # noqa: E402

from assay.labeling.votes import vote_matrix  # noqa: E402

combine = importlib.import_module("assay.labeling.model.combine")  # the module (the package exports its function)

PARTS = ("tune", "untouched", *sorted(HOLDOUTS, key=lambda p: int(p.removeprefix("holdout"))), *SEEN_PARTS)


def bound_actions(part: str, cache: Path) -> list[dict]:
    """The sets of `part` where the bound held the estimated balance or the fit fell back across 0.5."""
    rows = []
    for bench in suite(part, all_families(part), cache):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = combine.fit_label_model(vote_matrix(bench.votes))
        held = [w for w in fit.warnings if "held at" in w]
        crossed = fit.fallback if fit.fallback and "opposite sides of 0.5" in fit.fallback else None
        if held or crossed:
            rows.append({"set": bench.name, "true_rate": round(float(bench.truth.mean()), 4),
                         "action": "held" if held else "fell back across 0.5", "why": (held or [crossed])[0]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--cache", type=Path, default=Path("runs/labelbench"))
    parser.add_argument("--near-half", type=float, default=combine.NEAR_HALF,
                        help="how near 0.5 the fit must lie for a broad source to carry it across (1: always)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/label_bound_probe.json"))
    args = parser.parse_args()
    combine.NEAR_HALF = args.near_half
    header = provenance(vars(args))
    results = {}
    for part in args.parts.split(","):
        results[part] = bound_actions(part, args.cache)
        print(f"{part}: held {sum(r['action'] == 'held' for r in results[part])}, fell back across 0.5 "
              f"{sum(r['action'] != 'held' for r in results[part])}", flush=True)
        for row in results[part]:
            print(f"  {row['set']} ({row['action']}, true {row['true_rate']:.3f}): {row['why'][:160]}")
    print(f"results: {write_result(args.out, vars(args), results, header)}")


if __name__ == "__main__":
    main()
