"""Probe (issue 16): does the student gain from pooling its top layer by the mask-weighted mean of the tokens
(what all-MiniLM-L6-v2 was trained for, and what the embedding baselines and SetFit use) instead of BERT's
pooler on the first token (what the engine runs)?

Pre-registered like `select_base.py`: both arms train the 7 bundled questions with the `assay train` defaults
on the first 4,000 pool records of `select_base.py prepare`'s labels, and are scored on the selection split's
gold; mean pooling would be built into the engine only if it beat the first-token arm by more than 0.01
selection macro-F1. The test split is not read. Both arms are scored by the trained model itself (the cached
lower layers and the model's own top layer; the engine matches it to 1e-6 for the first-token arm), so the
comparison is like for like. Mean pooling is patched into transformers' BERT classes for the run only.

    .venv/bin/python bench/select_base.py prepare --work runs/select-stated
    .venv/bin/python bench/student_pooling_probe.py --work runs/select-stated --out bench/results/student_pooling_probe.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers.models.bert.modeling_bert as bert  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import subsample  # noqa: E402
from provenance import write_result  # noqa: E402
from select_base import CONFIGS, MARGIN, QUESTIONS  # noqa: E402
from stats import f1  # noqa: E402

import assay.distill.train as train  # noqa: E402
from assay.distill.cache import upper_layers_only  # noqa: E402
from assay.distill.data import load_question_data, read_seed  # noqa: E402
from assay.distill.evaluate import gold_set  # noqa: E402
from assay.schemas.loader import load_questions  # noqa: E402
from assay.schemas.models import base_path  # noqa: E402
from assay.schemas.registry import Registry  # noqa: E402

_state: dict = {"mean": False, "mask": None, "model": None}
_model_forward, _pooler_forward, _fit = bert.BertModel.forward, bert.BertPooler.forward, train._fit


def _remember_mask(self, *args, **kwargs):
    _state["mask"] = kwargs.get("attention_mask")
    return _model_forward(self, *args, **kwargs)


def _pool(self, hidden: torch.Tensor) -> torch.Tensor:
    if not _state["mean"]:
        return _pooler_forward(self, hidden)
    mask = _state["mask"]
    mask = (torch.ones(hidden.shape[:2]) if mask is None else mask).unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _keep_model(model, *args, **kwargs):
    _state["model"] = model
    return _fit(model, *args, **kwargs)


def run(work: Path, threads: int) -> dict:
    """Both arms' selection-split F1 and AUC per question, and their macro-F1."""
    bert.BertModel.forward, bert.BertPooler.forward, train._fit = _remember_mask, _pool, _keep_model
    questions = load_questions(QUESTIONS)
    labels = subsample(
        work / "labels",
        [q.spec.id for q in questions],
        CONFIGS["default"][1],
        Path(f"{work}/labels_{CONFIGS['default'][1]}"),
    )
    seed, base = read_seed(labels), base_path(CONFIGS["default"][0])
    cache = train.make_cache(base, train.TrainConfig())
    arms = {}
    with train.torch_threads(threads):
        for arm in ("first_token", "mean"):
            _state["mean"] = arm == "mean"
            registry, rows = Registry(work / "registries" / f"pooling_{arm}"), {}
            for loaded in questions:
                qid, started = loaded.spec.id, time.perf_counter()
                version = train.train_question(
                    loaded, labels, registry, base, False, cache=cache, data=load_question_data(labels, qid, seed=seed)
                )
                model, gold = _state["model"].eval(), gold_set(work / "selection.parquet", qid)
                cache.fill(gold.texts, progress=False)
                with upper_layers_only(model.base_model.model, cache.arch, cache.layer) as feed:
                    p_yes = train._predict(model, feed, cache, gold.texts, "cpu")
                rows[qid] = {
                    "f1": f1(gold.label, p_yes >= version.threshold),
                    "auc": float(roc_auc_score(gold.label, p_yes)),
                    "threshold": version.threshold,
                    "seconds": round(time.perf_counter() - started, 1),
                }
                print(arm, qid, rows[qid], flush=True)
            arms[arm] = {"selection_macro_f1": float(np.mean([r["f1"] for r in rows.values()])), "questions": rows}
    delta = arms["mean"]["selection_macro_f1"] - arms["first_token"]["selection_macro_f1"]
    return {**arms, "mean_minus_first_token": delta, "adopt": delta > MARGIN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/select-stated"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/student_pooling_probe.json"))
    args = parser.parse_args()
    results = run(args.work, args.threads)
    write_result(
        args.out, {**vars(args), "margin": MARGIN, "train_config": "assay.distill.train.TrainConfig defaults"}, results
    )
    print(
        f"selection macro-F1: first token {results['first_token']['selection_macro_f1']:.3f}, mean "
        f"{results['mean']['selection_macro_f1']:.3f} ({results['mean_minus_first_token']:+.3f}); "
        f"adopt: {results['adopt']}"
    )


if __name__ == "__main__":
    main()
