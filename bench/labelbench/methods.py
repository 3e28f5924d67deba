"""Every combiner of the suite on equal terms: each gets the same class balance (Assay's estimate, made
without gold; or the rate a data team states) and the same decision rule (`prevalence_labels`: the top share
of records by P(yes))."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from assay.labeling.model.combine import combine, majority_vote, weighted_vote
from assay.labeling.votes import VoteMatrix

from .v0 import v0_combine

Scorer = Callable[[VoteMatrix, float], np.ndarray]  # (votes, class balance) -> P(yes)
SNORKEL_EPOCHS, SNORKEL_LR, DS_ITER, DS_SMOOTHING = 500, 0.01, 100, 1.0


def majority(matrix: VoteMatrix, balance: float) -> np.ndarray:
    """Share of yes among the votes; the class balance where nobody voted."""
    return majority_vote(matrix, balance)


def weighted(matrix: VoteMatrix, balance: float) -> np.ndarray:
    """Weighted soft vote (weights x confidences); the class balance where nobody voted."""
    return weighted_vote(matrix, balance)


def snorkel(matrix: VoteMatrix, balance: float) -> np.ndarray:
    """Snorkel's LabelModel given `class_balance` (it needs 3 sources or more)."""
    from snorkel.labeling.model import LabelModel

    if len(matrix.sources) < 3:
        raise ValueError("needs 3 sources")
    model = LabelModel(cardinality=2, verbose=False)
    b = float(np.clip(balance, 1e-4, 1 - 1e-4))
    model.fit(matrix.votes.astype(np.int64), class_balance=np.array([1 - b, b]), n_epochs=SNORKEL_EPOCHS,
              lr=SNORKEL_LR, seed=0, progress_bar=False)
    return model.predict_proba(matrix.votes.astype(np.int64))[:, 1]


def dawid_skene(matrix: VoteMatrix, balance: float) -> np.ndarray:
    """Plain Dawid–Skene: per-source 2x2 confusion over cast votes (abstains ignored), majority-vote start,
    Laplace smoothing, the class prior held at the given balance."""
    votes = matrix.votes
    yes, no = (votes == 1).astype(np.float64), (votes == 0).astype(np.float64)
    post = majority_vote(matrix, balance)
    b = float(np.clip(balance, 1e-6, 1 - 1e-6))
    for _ in range(DS_ITER):
        # P(vote yes | class) per source, from cast votes only
        p1 = (post @ yes + DS_SMOOTHING) / (post @ (yes + no) + 2 * DS_SMOOTHING)
        p0 = ((1 - post) @ yes + DS_SMOOTHING) / ((1 - post) @ (yes + no) + 2 * DS_SMOOTHING)
        log_odds = np.log(b / (1 - b)) + yes @ (np.log(p1) - np.log(p0)) + no @ (np.log1p(-p1) - np.log1p(-p0))
        new = 1 / (1 + np.exp(-np.clip(log_odds, -50, 50)))
        if np.max(np.abs(new - post)) < 1e-6:
            post = new
            break
        post = new
    return post


def _hyper_net():
    import hyperlm
    import torch
    from hyperlm.hyper_label_model import LELAGNN

    checkpoint = torch.load(f"{hyperlm.__path__[0]}/checkpoint.pt", map_location="cpu", weights_only=False)
    net = LELAGNN()
    net.load_state_dict(checkpoint["model_state_dict"])
    return net.eval()


_HYPER = []


def hyper_label_model(matrix: VoteMatrix, balance: float) -> np.ndarray:
    """The pretrained Hyper Label Model (hyperlm's checkpoint, no tuning), binary input as in its wrapper."""
    import torch
    from scipy.sparse import coo_matrix

    if not _HYPER:
        _HYPER.append(_hyper_net())
    mat = np.where(matrix.votes == 1, 1, np.where(matrix.votes == 0, -1, 0)).astype(np.float32)
    if not mat.any():
        return np.full(len(mat), balance)
    sparse = coo_matrix(mat)
    index = torch.from_numpy(np.array([sparse.row, sparse.col]).T).unsqueeze(0)
    value = torch.from_numpy(sparse.data).float().unsqueeze(0)
    with torch.inference_mode():
        pred, _ = _HYPER[0](index, value)
    p = np.atleast_1d(pred.numpy().astype(np.float64))
    out = np.full(len(mat), np.nan)
    rows = np.unique(sparse.row)
    out[: len(p)] = p  # rows after the last voted one are absent from the sparse input
    out[~np.isin(np.arange(len(mat)), rows)] = balance  # nobody voted: the class balance
    return out


def assay(matrix: VoteMatrix, balance: float, told: bool = False) -> np.ndarray:
    """Assay's label model (`combine(method="label_model")`): its own P(yes); with `told`, given the class
    balance (`class_balance`, as a question's `expected_yes_rate` does)."""
    given = balance if told else None
    return combine(matrix, method="label_model", class_balance=given).probs.column("p_yes").to_numpy().astype(
        np.float64)


def assay_v0(matrix: VoteMatrix, balance: float) -> np.ndarray:
    """The pre-issue-12 label model's P(yes) (its own prior), put through the shared decision rule."""
    return v0_combine(matrix.votes, matrix.conf)[0]


METHODS: dict[str, Scorer] = {"majority": majority, "weighted": weighted, "snorkel": snorkel,
                              "dawid_skene": dawid_skene, "hyper_lm": hyper_label_model, "assay_v0": assay_v0,
                              "assay": assay}
BASELINES = ("majority", "weighted", "snorkel", "dawid_skene", "hyper_lm")


def run_method(name: str, matrix: VoteMatrix, balance: float, told: bool = False) -> np.ndarray | None:
    """P(yes) of one method, or None where it cannot run on these votes (e.g. Snorkel with 2 sources). With
    `told`, the balance is the one a data team states, and Assay's label model is given it as well."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return assay(matrix, balance, told=True) if told and name == "assay" else METHODS[name](matrix, balance)
    except ValueError:
        return None
