"""Probe (issue 16): does the student gain from fusing its LoRA score with the TF-IDF + logistic regression that
`assay train` already fits on the same labels for the promotion gate (a lexical head beside the encoder)?

Pre-registered (rules committed before any number of the fused arm was computed), like `select_base.py`:

* **Arms.** ``student``: the default adapters that `student_pooling_probe.py` trained (`registries/
  pooling_first_token`: `assay train` defaults on the first 4,000 pool records of `select_base.py prepare`'s
  labels), scored through the engine, at their own thresholds. ``tfidf``: `fit_tfidf_lr` on the same
  train/hold-out split, as `holdout_baseline` fits it. ``fused``: sigmoid of the mean of the two logits, with
  equal weights fixed in advance (no weight is tuned), and a threshold set by the same rule as the student:
  say yes to the label model's estimated share of the hold-out (`prevalence_threshold`).
* **Criterion.** Macro-F1 over the 7 questions on the selection split's gold. The fused student is built into
  `assay train` and the engine only if it beats the student arm by more than 0.01 (``MARGIN``). The test split is
  not read here.
* **Prediction** (written before the run): fused − student between +0.005 and +0.02.

    .venv/bin/python bench/select_base.py prepare --work runs/select-stated
    .venv/bin/python bench/student_pooling_probe.py --work runs/select-stated   # trains the student arm
    .venv/bin/python bench/student_fusion_probe.py --work runs/select-stated --out bench/results/student_fusion_probe.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import write_result  # noqa: E402
from select_base import MARGIN, QUESTIONS  # noqa: E402
from stats import f1  # noqa: E402

from assay.distill.baselines import fit_tfidf_lr  # noqa: E402
from assay.distill.data import load_question_data, read_seed, split_holdout  # noqa: E402
from assay.distill.evaluate import gold_set, prevalence_threshold, score_versions  # noqa: E402
from assay.distill.train import torch_threads  # noqa: E402
from assay.engine.lexical import fuse, logit  # noqa: E402
from assay.schemas.loader import load_questions  # noqa: E402
from assay.schemas.registry import Registry  # noqa: E402


def run(work: Path, threads: int) -> dict:
    """Selection-split F1 of the three arms per question, and their macro-F1."""
    labels = work / "labels_4000"
    seed, registry = read_seed(labels), Registry(work / "registries" / "pooling_first_token")
    rows: dict[str, dict] = {}
    with torch_threads(threads):
        for loaded in load_questions(QUESTIONS):
            qid = loaded.spec.id
            version = registry.versions(qid)[-1]
            config = version.manifest["training"]
            data = load_question_data(labels, qid, seed=seed)
            train_index, hold_index = split_holdout(data, config["holdout"], config["seed"])
            train, hold = data.subset(train_index), data.subset(hold_index)
            prevalence = float(data.p_yes.mean())
            if abs(prevalence - config["estimated_prevalence"]) > 1e-9:
                raise SystemExit(f"{qid}: labels differ from the ones the student was trained on")
            gold = gold_set(work / "selection.parquet", qid)
            tfidf = fit_tfidf_lr(train, hold, prevalence, config["class_weight"], config["seed"])
            student = score_versions([version], [*hold.texts, *gold.texts], registry)[(qid, version.version)]
            s_hold, s_sel = student[: len(hold)], student[len(hold) :]
            t_hold, t_sel = tfidf.score(hold.texts), tfidf.score(gold.texts)
            fused_threshold = prevalence_threshold(fuse(s_hold, logit(t_hold)), prevalence)
            rows[qid] = {
                "student": f1(gold.label, s_sel >= version.threshold),
                "tfidf": f1(gold.label, t_sel >= tfidf.threshold),
                "fused": f1(gold.label, fuse(s_sel, logit(t_sel)) >= fused_threshold),
                "thresholds": {"student": version.threshold, "tfidf": tfidf.threshold, "fused": fused_threshold},
            }
            print(qid, {k: round(v, 3) for k, v in rows[qid].items() if k != "thresholds"}, flush=True)
    macro = {arm: float(np.mean([r[arm] for r in rows.values()])) for arm in ("student", "tfidf", "fused")}
    delta = macro["fused"] - macro["student"]
    return {"questions": rows, "selection_macro_f1": macro, "fused_minus_student": delta, "adopt": delta > MARGIN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/select-stated"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/student_fusion_probe.json"))
    args = parser.parse_args()
    results = run(args.work, args.threads)
    write_result(args.out, {**vars(args), "margin": MARGIN, "fusion": "sigmoid(mean of the two logits)"}, results)
    macro = results["selection_macro_f1"]
    print(
        f"selection macro-F1: student {macro['student']:.3f}, TF-IDF {macro['tfidf']:.3f}, fused "
        f"{macro['fused']:.3f} ({results['fused_minus_student']:+.3f}); adopt: {results['adopt']}"
    )


if __name__ == "__main__":
    main()
