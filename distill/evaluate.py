"""Evaluate adapter versions and decide promotion.

Metrics (precision, recall, F1, AUC, ECE, Brier) on the held-out seed records (against the combined
labels) and, when given, on a gold file (``assay.labeling.gold.gold_labels``); scoring goes through the
engine's :class:`~assay.engine.scorer.Scorer`, every adapter of a call in the same batches. A version
is promoted only when it passes its spec's ``promotion`` gate (:func:`refusal`: labels not degenerate,
enough held-out yes records, better than TF-IDF + logistic regression on the same labels) and is not
worse than the current version on the same evaluation set (gold when there is one, else the hold-out).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from assay.labeling.gold import gold_labels
from assay.labeling.metrics import f1_threshold, far_from_balance, precision_recall_f1, within_ratio
from assay.schemas.questions import Promotion, QuestionSpec
from assay.schemas.registry import AdapterVersion, Registry, RegistryError

ECE_BINS = 10


@dataclass(frozen=True)
class Decision:
    """Whether a version was promoted, and why (or why not)."""

    promoted: bool
    reason: str


def prevalence_threshold(p: np.ndarray, rate: float) -> float:
    """Threshold on ``p`` that says yes to a ``rate`` share of the records (the label model's prevalence).

    Midway between the k-th and (k+1)-th highest score, k = round(rate x n); it depends on the ranking
    and the estimated prevalence only, so it stays usable when a hold-out has few yes records.
    """
    ps = np.sort(np.asarray(p, dtype=np.float64))[::-1]
    k = int(round(float(np.clip(rate, 0.0, 1.0)) * len(ps)))
    if k <= 0:
        return float(np.nextafter(ps[0], np.inf))
    if k >= len(ps):
        return float(ps[-1])
    return float((ps[k - 1] + ps[k]) / 2)


def expected_calibration_error(p: np.ndarray, label: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with equal-width bins: sum over bins of |mean P(yes) - fraction yes| x share of records."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(p[members].mean() - label[members].mean())
    return float(total)


def roc_auc(p: np.ndarray, label: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None with one class only."""
    positives = int(label.sum())
    negatives = len(label) - positives
    if not positives or not negatives:
        return None
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = p[order]
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    ends = np.r_[starts[1:], len(p)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[label == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def binary_metrics(p: np.ndarray, label: np.ndarray, threshold: float, soft: np.ndarray | None = None) -> dict[str, Any]:
    """Precision, recall, F1 at ``threshold``; AUC, ECE, Brier; soft F1 when soft labels are given."""
    p, label = np.asarray(p, dtype=np.float64), np.asarray(label).astype(np.int64)
    predicted = p >= threshold
    precision, recall, f1 = precision_recall_f1(label == 1, predicted)
    out: dict[str, Any] = {
        "n": int(len(p)), "positives": int(label.sum()), "threshold": float(threshold),
        "precision": precision, "recall": recall, "f1": f1,
        "auc": roc_auc(p, label),
        "ece": expected_calibration_error(p, label), "brier": float(((p - label) ** 2).mean()),
    }
    if soft is not None:
        soft = np.asarray(soft, dtype=np.float64)
        s_tp, s_fp = float(soft[predicted].sum()), float((1 - soft[predicted]).sum())
        s_fn = float(soft[~predicted].sum())
        out["soft_f1"] = 2 * s_tp / (2 * s_tp + s_fp + s_fn) if s_tp else 0.0
    return out


def reliability_plot(p: np.ndarray, label: np.ndarray, path: Path, title: str) -> Path:
    """Reliability diagram (fraction yes vs mean P(yes) per bin, bin sizes below) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    which = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    used = [b for b in range(ECE_BINS) if (which == b).any()]
    mean_p = [p[which == b].mean() for b in used]
    frac = [label[which == b].mean() for b in used]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    top.plot(mean_p, frac, "o-", label=f"adapter (ECE {expected_calibration_error(p, label):.3f})")
    top.set_ylabel("fraction yes")
    top.set_title(title)
    top.legend(loc="upper left")
    bottom.bar(np.arange(ECE_BINS) / ECE_BINS + 0.05, [(which == b).sum() for b in range(ECE_BINS)], width=0.09)
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted P(yes)")
    bottom.set_ylabel("records")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class EvalSet:
    """Records to evaluate one question on: texts, hard labels, soft labels (hold-out only)."""

    name: str  # "holdout" or "gold"
    texts: list[str]
    label: np.ndarray
    soft: np.ndarray | None = None


def holdout_set(labels_dir: str | Path, question_id: str, ids: Sequence[str]) -> EvalSet:
    """The held-out seed records ``ids`` with their combined labels."""
    from .data import load_question_data

    data = load_question_data(labels_dir, question_id)
    where = {i: k for k, i in enumerate(data.ids)}
    index = np.array([where[i] for i in ids if i in where], dtype=np.int64)
    part = data.subset(index)
    return EvalSet("holdout", part.texts, part.label, part.p_yes)


def gold_set(gold_path: str | Path, question_id: str) -> EvalSet:
    """Gold records of a question (``gold_labels``), texts from the same file."""
    labels = gold_labels(gold_path, question_id)
    table = pq.read_table(gold_path, columns=["id", "text"])
    text_of = dict(zip(table.column("id").cast("string").to_pylist(), table.column("text").to_pylist()))
    ids = labels.column("id").to_pylist()
    return EvalSet("gold", [text_of[i] for i in ids], labels.column("label").to_numpy().astype(np.int8))


def score_versions(versions: Sequence[AdapterVersion], texts: Sequence[str], registry: Registry | None = None,
                   ) -> dict[tuple[str, int], np.ndarray]:
    """P(yes) of every version on ``texts``, through the engine (one base load per base model).

    The answer is keyed by (question id, version), so versions of one question from two registries
    (a student and an oracle, both version 1) cannot share a call: that is an error, not an overwrite.
    """
    repeated = sorted(f"{q}@{n}" for (q, n), times in Counter((v.question_id, v.version) for v in versions).items()
                      if times > 1)
    if repeated:
        raise ValueError(f"score_versions: {', '.join(repeated)} given more than once (versions from different "
                         "registries?); score each registry in its own call")
    from assay.engine.scorer import Scorer

    out: dict[tuple[str, int], np.ndarray] = {}
    by_base: dict[str, list[AdapterVersion]] = {}
    for version in versions:
        by_base.setdefault(str(version.manifest.get("base_model")), []).append(version)
    unique = list(dict.fromkeys(texts))
    for base, group in by_base.items():
        scorer = Scorer(base)
        for version in group:
            (registry or Registry(version.path.parent.parent)).check_base(version, base)
            scorer.add_adapter(f"{version.question_id}@{version.version}", version.path, version=version.version,
                               threshold=version.threshold, manifest=version.manifest)
        scores = scorer.score_texts(unique)
        for version in group:
            p = scores[f"{version.question_id}@{version.version}"]
            where = dict(zip(unique, p))
            out[(version.question_id, version.version)] = np.array([where[t] for t in texts], dtype=np.float32)
    return out


def _holdout_ids(version: AdapterVersion) -> list[str]:
    path = version.path / "holdout_ids.json"
    if not path.is_file():
        raise RegistryError(f"{version.path}: no holdout_ids.json (not trained by assay train); evaluate on --gold")
    return json.loads(path.read_text())


def evaluate(version: AdapterVersion, labels_dir: str | Path | None, gold_path: str | Path | None = None,
             holdout_of: AdapterVersion | None = None) -> dict[str, Any]:
    """``{"holdout": metrics, "gold": metrics}`` of one version (hold-out of ``holdout_of``, default itself).

    Writes ``reliability.png`` (gold when given, else hold-out) into the version folder.
    """
    sets = []
    if labels_dir is not None:
        sets.append(holdout_set(labels_dir, version.question_id, _holdout_ids(holdout_of or version)))
    if gold_path is not None:
        sets.append(gold_set(gold_path, version.question_id))
    if not sets:
        raise ValueError("evaluate needs a labels folder (hold-out) or a gold file")
    texts = [t for s in sets for t in s.texts]
    p = score_versions([version], texts)[(version.question_id, version.version)]
    metrics, start = {}, 0
    for s in sets:
        part = p[start:start + len(s.texts)]
        start += len(s.texts)
        metrics[s.name] = binary_metrics(part, s.label, version.threshold, soft=s.soft)
        if holdout_of is None:
            reliability_plot(part, s.label.astype(np.float64), version.path / "reliability.png",
                             f"{version.question_id} v{version.version} — {s.name} (n={len(part)})")
    return metrics


def evaluate_gold(versions: Sequence[AdapterVersion], gold_path: str | Path, registry: Registry,
                  progress: bool = True) -> dict[str, dict[str, Any]]:
    """Gold metrics of new versions, scored together: ``{question_id: {"gold": metrics}}`` + reliability PNGs.

    Questions the gold file has no labels for are left out.
    """
    sets = {}
    for version in versions:
        try:
            sets[version.question_id] = gold_set(gold_path, version.question_id)
        except ValueError:
            continue
    if not sets:
        return {}
    texts = list(dict.fromkeys(t for s in sets.values() for t in s.texts))
    scored = [v for v in versions if v.question_id in sets]
    scores = score_versions(scored, texts, registry)
    out = {}
    for version in scored:
        s = sets[version.question_id]
        where = dict(zip(texts, scores[(version.question_id, version.version)]))
        p = np.array([where[t] for t in s.texts], dtype=np.float32)
        best = f1_threshold(p, s.label.astype(np.float64))  # diagnostic only: how good the ranking is
        out[version.question_id] = {"gold": {**binary_metrics(p, s.label, version.threshold), "path": str(gold_path),
                                             "best_threshold": best,
                                             "best_threshold_f1": binary_metrics(p, s.label, best)["f1"]}}
        reliability_plot(p, s.label.astype(np.float64), version.path / "reliability.png",
                         f"{version.question_id} v{version.version} — gold (n={len(p)})")
    return out


DEGENERATE_FIX = ("read the label report (report/README.md of the label run), add a source or keyword rules "
                  "that vote the other way, or label a stratified seed (assay label --stratify)")


def degenerate(rate: float, rules: Promotion, stated: float | None) -> bool:
    """Whether labels with this yes ``rate`` are degenerate: all one answer, or outside ``min_yes_rate``–
    ``max_yes_rate`` unless within a factor of 1.5 (``within_ratio``) of the question's stated ``expected_yes_rate``
    (a 0.4 % yes rate for a stated 0.5 % is the question, not a collapse)."""
    if rate <= 0.0 or rate >= 1.0:
        return True
    near_stated = stated is not None and within_ratio(rate, stated)
    return (rate > rules.max_yes_rate or rate < rules.min_yes_rate) and not near_stated


def refusal(version: AdapterVersion, metrics: dict[str, Any], spec: QuestionSpec) -> str | None:
    """Why ``version`` must not be promoted (None: it passes) under ``spec.promotion``, checked in order:
    degenerate labels, a guessed class balance, labels a tie group moved far from the balance, soft labels whose
    mean P(yes) is far from it, too few held-out yes records, not better than TF-IDF + logistic regression on
    the same labels, ``min_f1``."""
    rules, stated = spec.promotion, spec.expected_yes_rate
    training, hold = version.manifest.get("training", {}), metrics.get("holdout", {})
    if "yes_rate" not in training or "baseline" not in hold:
        return ("not promoted: the manifest has no label yes rate or baseline measurement (trained by an older "
                "assay); retrain it with `assay train`")
    rate, seed = training["yes_rate"], training["records"] + training["holdout_records"]
    if degenerate(rate, rules, stated):
        side = "more" if rate > rules.max_yes_rate else "less"
        also = f", and far from the stated expected_yes_rate {stated}" if stated is not None else ""
        return (f"not promoted: degenerate labels — they say yes to {rate:.1%} of the {seed:,} seed records, {side} "
                f"than the spec allows (min_yes_rate {rules.min_yes_rate}, max_yes_rate {rules.max_yes_rate}){also}; "
                f"{DEGENERATE_FIX}")
    label_model = version.manifest.get("sources", {}).get("label_model", {})
    if rules.require_known_balance and label_model.get("balance_known") is False:
        return (f"not promoted: the label model could not estimate how often the answer is yes "
                f"({label_model.get('reason', 'its fit collapsed')}), so the labels' yes rate ({rate:.1%}) is a guess; set `expected_yes_rate` in the question file "
                "(the share of yes you expect, from a sample you read) or add sources that vote both ways, then "
                "label and train again")
    if rules.require_labels_near_balance and label_model.get("labels_follow_balance") is False:
        return (f"not promoted: the labels say yes to {rate:.1%} of the seed for a class balance of "
                f"{label_model.get('prior', float('nan')):.1%}, because one large group of records with the same "
                "P(yes) (most often those no source voted on) was labelled alike (see the label report's warning); "
                "add a source that votes on those records (an embedding source votes on every record) and, if "
                "the question file has none, an `expected_yes_rate`; then label and train again")
    prior, trained_on = label_model.get("prior"), training.get("estimated_prevalence")
    if rules.require_labels_near_balance and prior is not None and trained_on is not None and \
            far_from_balance(trained_on, prior):
        return (f"not promoted: the labels' P(yes) averages {trained_on:.1%} for a class balance of {prior:.1%}, so "
                f"the adapter learned, and its threshold says yes to, about {trained_on:.1%}; the combined "
                "probabilities do not follow the balance (a fit's P(yes) need not average to its class balance; "
                "see the label report); add sources that vote both ways (or more examples for the embedding "
                "source), then label and train again")
    if hold["positives"] < rules.min_holdout_positives:
        need = math.ceil(rules.min_holdout_positives * seed / max(hold["positives"], 1))
        return (f"not promoted: the hold-out holds {hold['positives']} yes record(s), fewer than min_holdout_positives "
                f"{rules.min_holdout_positives}: its F1 is too uncertain to compare with anything; label more records "
                f"(assay label --sample {need:,} at this yes rate) or a stratified seed (assay label --stratify)")
    baseline = hold["baseline"]
    if rules.beat_baseline and hold["f1"] <= baseline["f1"]:
        return (f"not promoted: held-out F1 {hold['f1']:.3f} does not beat {baseline['name']} trained on the same labels "
                f"({baseline['f1']:.3f}); the adapter does not earn its cost here — add sources or rules, label "
                "more records, or train more layers (--top-layers)")
    split = "gold" if "gold" in metrics else "holdout"
    if rules.min_f1 is not None and metrics[split]["f1"] < rules.min_f1:
        return f"not promoted: {split} F1 {metrics[split]['f1']:.3f} below the spec's min_f1 {rules.min_f1}"
    if metrics[split]["precision"] < rules.min_precision:
        return (f"not promoted: {split} precision {metrics[split]['precision']:.3f} below the spec's min_precision "
                f"{rules.min_precision}")
    return None


def _passed(metrics: dict[str, Any]) -> str:
    hold = metrics["holdout"]
    return (f"held-out F1 {hold['f1']:.3f} beats {hold['baseline']['name']} {hold['baseline']['f1']:.3f} "
            f"({hold['positives']} held-out yes records, ECE {hold['ece']:.3f})")


def promote_if_better(registry: Registry, version: AdapterVersion, metrics: dict[str, Any],
                      spec: QuestionSpec, labels_dir: str | Path | None = None,
                      gold_path: str | Path | None = None) -> Decision:
    """Promote ``version`` if it passes the gate of ``spec.promotion`` (:func:`refusal`) and is not worse
    than the current version.

    The comparison with the current version is on gold when ``metrics`` has it, else on the new
    version's hold-out; the current version is scored on that same set (``labels_dir`` / ``gold_path``).
    """
    refused = refusal(version, metrics, spec)
    if refused:
        return Decision(False, refused)
    split = "gold" if "gold" in metrics else "holdout"
    mine = metrics[split]
    labels_dir = labels_dir or version.manifest.get("training", {}).get("labels_dir")
    gold_path = gold_path or mine.get("path")
    current = registry.current(version.question_id)
    if current is not None and current.version != version.version:
        try:
            theirs = evaluate(current, labels_dir if split == "holdout" else None,
                              gold_path if split == "gold" else None, holdout_of=version)[split]
        except (RegistryError, ValueError, KeyError) as error:
            theirs = None
            note = f"current v{current.version} could not be scored on the same set ({error})"
        if theirs is not None and theirs["f1"] > mine["f1"]:
            return Decision(False, f"not promoted: {split} F1 {mine['f1']:.3f} is worse than current "
                                   f"v{current.version}'s {theirs['f1']:.3f} on the same records")
        if theirs is not None:
            note = f"current v{current.version} had {split} F1 {theirs['f1']:.3f}"
    else:
        note = "first version"
    reason = f"promoted: {_passed(metrics)}; {note}"
    registry.promote(version.question_id, version.version, reason=reason)
    return Decision(True, reason)
