"""Compare decision-threshold rules for trained adapters, choosing only on the held-out seed records.

    .venv/bin/python bench/distill_thresholds.py --registry REG --labels runs/label-train \
        --gold examples/data/jigsaw/dev.parquet --out bench/results/distill_thresholds.json

For each question's newest version in REG (kept with ``bench_train.py --registry``): its held-out
records are split in two by a hash of the text; each rule picks a threshold on one half and is scored
by the expected (soft-label) F1 on the other half, both ways — the selection criterion, no gold used.
Dev F1 at the threshold each rule picks on the whole hold-out is printed as the report only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from assay.distill.data import load_question_data  # noqa: E402
from assay.distill.evaluate import (  # noqa: E402
    _holdout_ids,
    binary_metrics,
    gold_set,
    holdout_set,
    prevalence_threshold,
    score_versions,
)
from assay.labeling.metrics import f1_threshold  # noqa: E402
from assay.schemas.registry import Registry  # noqa: E402

RULES = {
    "f1 (soft labels)": lambda p, soft, prevalence: f1_threshold(p, soft),
    "prevalence (all labels)": lambda p, soft, prevalence: prevalence_threshold(p, prevalence),
    "prevalence (hold-out labels)": lambda p, soft, prevalence: prevalence_threshold(p, float(soft.mean())),
}


def soft_f1(p: np.ndarray, soft: np.ndarray, threshold: float) -> float:
    yes = p >= threshold
    tp = soft[yes].sum()
    return float(2 * tp / (2 * tp + (1 - soft[yes]).sum() + soft[~yes].sum())) if tp else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--gold", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    registry = Registry(args.registry)
    versions = [registry.versions(q)[-1] for q in registry.all_questions()]
    held = {v.question_id: holdout_set(args.labels, v.question_id, _holdout_ids(v)) for v in versions}
    gold = {v.question_id: gold_set(args.gold, v.question_id) for v in versions}
    texts = list(dict.fromkeys([t for s in [*held.values(), *gold.values()] for t in s.texts]))
    scores = score_versions(versions, texts, registry)
    report: dict = {"questions": {}, "macro": {}}
    for v in versions:
        q = v.question_id
        where = dict(zip(texts, scores[(q, v.version)]))
        h, g = held[q], gold[q]
        p_hold = np.array([where[t] for t in h.texts], dtype=np.float64)
        p_gold = np.array([where[t] for t in g.texts], dtype=np.float64)
        soft = h.soft.astype(np.float64)
        prevalence = float(load_question_data(args.labels, q).p_yes.mean())
        half = np.array([hashlib.blake2b(t.encode(), digest_size=1).digest()[0] % 2 for t in h.texts])
        report["questions"][q] = {}
        for name, rule in RULES.items():
            folds = [soft_f1(p_hold[half != f], soft[half != f], rule(p_hold[half == f], soft[half == f], prevalence))
                     for f in (0, 1)]
            threshold = rule(p_hold, soft, prevalence)
            report["questions"][q][name] = {"threshold": threshold, "holdout_2fold_soft_f1": float(np.mean(folds)),
                                            "holdout_yes_rate": float((p_hold >= threshold).mean()),
                                            "dev_f1": binary_metrics(p_gold, g.label, threshold)["f1"],
                                            "dev_yes_rate": float((p_gold >= threshold).mean())}
    for name in RULES:
        rows = [report["questions"][q][name] for q in report["questions"]]
        report["macro"][name] = {key: float(np.mean([r[key] for r in rows]))
                                 for key in ("holdout_2fold_soft_f1", "dev_f1")}
    print(f"{'question':14s} " + " | ".join(f"{n}: hold-out 2-fold / dev" for n in RULES))
    for q, rules in report["questions"].items():
        print(f"{q:14s} " + " | ".join(f"{r['holdout_2fold_soft_f1']:.3f} / {r['dev_f1']:.3f}" for r in rules.values()))
    print(f"{'macro':14s} " + " | ".join(f"{m['holdout_2fold_soft_f1']:.3f} / {m['dev_f1']:.3f}"
                                          for m in report["macro"].values()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
