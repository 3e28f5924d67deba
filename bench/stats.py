"""Quality-claim helpers: paired bootstrap intervals (the same resampled records for both methods) and the
yes rate a data team sees reading a sample."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    """F1 of the positive class (0 when there is no positive and no predicted positive)."""
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    tp = float((y & pred).sum())
    denom = float(y.sum() + pred.sum())
    return 2 * tp / denom if denom else 0.0


def read_rate(labels: np.ndarray, read: int, seed: int = 7) -> float:
    """The yes share a data team would see reading ``read`` of these records (a fixed random sample; at least
    1/read, since a team that read no yes would still not write 0)."""
    labels = np.asarray(labels)
    sample = np.random.default_rng(seed).choice(len(labels), size=min(read, len(labels)), replace=False)
    return max(float(labels[sample].mean()), 1.0 / len(sample))


def read_rate_among(gold, ids: set[str], read: int) -> float:
    """``read_rate`` over the records of ``gold`` (an ``id``, ``label`` table, in its order) whose id is in
    ``ids``, rounded as a question file states it: the rate a team reads among the seed it labels."""
    labels = [label for i, label in zip(gold.column("id").to_pylist(), gold.column("label").to_pylist()) if i in ids]
    return round(read_rate(np.array(labels), read), 4)


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of records where the prediction equals the label."""
    return float((np.asarray(y, bool) == np.asarray(pred, bool)).mean()) if len(y) else 0.0


def bootstrap_ci(metric: Metric, y: np.ndarray, pred: np.ndarray, n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high): `metric` on all records and its percentile interval over `n` resamples."""
    y, pred = np.asarray(y), np.asarray(pred)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y), size=(n, len(y)))
    values = np.array([metric(y[d], pred[d]) for d in draws])
    return (metric(y, pred), *interval(values, level))


def paired_deltas(metric: Metric, y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n: int = 1000,
                  seed: int = 0) -> tuple[float, np.ndarray]:
    """metric(a) - metric(b) on all records, and on each of `n` resamples of the records (the same for both)."""
    y, pred_a, pred_b = np.asarray(y), np.asarray(pred_a), np.asarray(pred_b)
    draws = np.random.default_rng(seed).integers(0, len(y), size=(n, len(y)))
    deltas = np.array([metric(y[d], pred_a[d]) - metric(y[d], pred_b[d]) for d in draws])
    return metric(y, pred_a) - metric(y, pred_b), deltas


def interval(deltas: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap draws."""
    tail = (1 - level) / 2 * 100
    return float(np.percentile(deltas, tail)), float(np.percentile(deltas, 100 - tail))


def paired_bootstrap(metric: Metric, y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n: int = 1000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(delta, low, high) of metric(a) - metric(b), both scored on the same resampled records each time."""
    delta, deltas = paired_deltas(metric, y, pred_a, pred_b, n, seed)
    return (delta, *interval(deltas, level))
