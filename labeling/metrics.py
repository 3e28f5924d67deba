"""Scores of yes/no labels against gold."""

from __future__ import annotations

import numpy as np

# A yes rate this far from the class balance (both as a ratio and in points) does not follow it.
BALANCE_RATIO, BALANCE_POINTS = 1.5, 0.05


def within_ratio(rate: float, balance: float) -> bool:
    """Whether a yes rate lies within a factor of ``BALANCE_RATIO`` of the class balance, either way."""
    ratio = (rate + 1e-9) / (balance + 1e-9)
    return 1 / BALANCE_RATIO < ratio < BALANCE_RATIO


def far_from_balance(rate: float, balance: float) -> bool:
    """Whether a yes rate (of labels, or a mean P(yes)) lies far from the class balance: at least
    ``BALANCE_POINTS`` off and outside a factor of ``BALANCE_RATIO`` either way."""
    return abs(rate - balance) >= BALANCE_POINTS and not within_ratio(rate, balance)


def precision_recall_f1(gold: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of the yes class (0 where undefined), unrounded."""
    gold, predicted = np.asarray(gold, dtype=bool), np.asarray(predicted, dtype=bool)
    true_pos = int((gold & predicted).sum())
    precision = true_pos / max(int(predicted.sum()), 1)
    recall = true_pos / max(int(gold.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def binary_scores(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of the yes class (0 where undefined), and the number of records."""
    gold, predicted = np.asarray(gold, dtype=bool), np.asarray(predicted, dtype=bool)
    precision, recall, f1 = precision_recall_f1(gold, predicted)
    accuracy = float((gold == predicted).mean()) if len(gold) else 0.0
    return {"accuracy": round(accuracy, 4), "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(f1, 4), "n": int(len(gold))}


def f1_threshold(p: np.ndarray, soft: np.ndarray) -> float:
    """Threshold on `p` maximising F1 against soft labels `soft` (expected TP = sum of `soft` above it).

    Labels are `p > threshold`; the cut falls only between distinct scores (midway), so a tie group is
    labelled all alike. With `soft = p` this is the F1 a model expects under its own probabilities.
    """
    p = np.asarray(p, dtype=np.float64)
    if len(p) == 0:
        return 0.5
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], np.asarray(soft, dtype=np.float64)[order]
    tp, fp = np.cumsum(ys), np.cumsum(1 - ys)
    f1 = 2 * tp / np.maximum(2 * tp + fp + (ys.sum() - tp), 1e-12)
    last = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])  # cut only between distinct scores
    k = last[np.argmax(f1[last])]
    below = ps[k + 1] if k + 1 < len(ps) else 0.0
    return float((ps[k] + below) / 2)


def prevalence_labels(scores: np.ndarray, rate: float) -> tuple[np.ndarray, float]:
    """Label yes about the `rate` share of records with the highest scores; return (labels, threshold).

    Records with equal scores get the same label, so the cut falls between tie groups: at the one whose
    count of yes is nearest to `rate`·n in ratio (|log((count + 0.5) / (rate·n + 0.5))|; a draw takes
    fewer yes). When every record has the same score there is no ranking to cut: the label is then
    score > 0.5. Labels are `scores > threshold`, the threshold midway between the last score in and the
    first out.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return np.zeros(0, dtype=bool), 0.5
    distinct, counts = np.unique(-scores, return_counts=True)  # highest score first
    if len(distinct) == 1:
        return scores > 0.5, 0.5
    target = float(np.clip(rate, 0.0, 1.0)) * len(scores)
    cuts = np.concatenate([[0], np.cumsum(counts)])  # yes count when cutting after 0, 1, ... groups
    take = int(np.argmin(np.abs(np.log((cuts + 0.5) / (target + 0.5)))))
    upper = -distinct[take - 1] if take > 0 else np.inf
    lower = -distinct[take] if take < len(distinct) else -np.inf
    if np.isinf(upper):
        return np.zeros(len(scores), dtype=bool), float(np.nextafter(lower, np.inf))
    if np.isinf(lower):
        return np.ones(len(scores), dtype=bool), float(np.nextafter(upper, -np.inf))
    threshold = float((upper + lower) / 2)
    return scores > threshold, threshold
