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
