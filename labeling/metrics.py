"""Scores of yes/no labels against gold."""

from __future__ import annotations

import numpy as np


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
