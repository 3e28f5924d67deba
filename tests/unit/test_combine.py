"""The combiner: Assay's label model against majority vote and Snorkel on votes with known structure."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from assay.labeling.metrics import binary_scores, f1_threshold
from assay.labeling.model.combine import combine
from assay.labeling.model.label_model import DawidSkene, outcome_counts
from assay.labeling.votes import vote_matrix


def simulate(n: int, prior: float, sources: dict[str, tuple[float, float, float]], seed: int = 0):
    """Votes of sources given as (coverage, P(yes | yes, voted), P(no | no, voted)); returns (table, truth)."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < prior
    columns = {"id": [f"r{i}" for i in range(n)]}
    for name, (coverage, sensitivity, specificity) in sources.items():
        right = np.where(truth, rng.random(n) < sensitivity, rng.random(n) < specificity)
        vote = np.where(right, truth, ~truth).astype(np.int8)
        vote[rng.random(n) >= coverage] = -1
        columns[name] = pa.array(vote, pa.int8())
    return pa.table(columns), truth


def f1_of(result, truth) -> float:
    return binary_scores(truth, result.probs.column("label").to_numpy() == 1)["f1"]


def test_beats_majority_and_snorkel_on_a_rare_class_with_uneven_sources():
    votes, truth = simulate(6000, 0.08, {"good": (0.7, 0.9, 0.97), "noisy_a": (0.9, 0.6, 0.8),
                                         "noisy_b": (0.9, 0.6, 0.8), "rule": (0.5, 0.95, 0.99)})
    ours = combine(votes, method="label_model")
    assert f1_of(ours, truth) > f1_of(combine(votes, method="majority"), truth) + 0.05
    assert f1_of(ours, truth) > f1_of(combine(votes, method="snorkel"), truth)
    assert abs(ours.prior - truth.mean()) < 0.03  # the class balance is estimated, not assumed
    assert ours.source_accuracy["good"] > ours.source_accuracy["noisy_a"]


def test_one_sided_sources_count_through_their_abstains():
    """A rule that only ever votes yes (rarely, precisely) and a teacher that only records no."""
    rng = np.random.default_rng(1)
    n = 5000
    truth = rng.random(n) < 0.2
    rule = np.where(truth & (rng.random(n) < 0.5), 1, -1).astype(np.int8)
    no_only = np.where(~truth & (rng.random(n) < 0.8), 0, -1).astype(np.int8)
    votes = pa.table({"id": [str(i) for i in range(n)], "rule": rule, "teacher_no": no_only})
    result = combine(votes, method="label_model")
    p_yes = result.probs.column("p_yes").to_numpy()
    labels = result.probs.column("label").to_numpy()
    assert p_yes[rule == 1].min() > 0.75 and labels[rule == 1].all()
    assert p_yes[no_only == 0].max() < 0.25 and not labels[no_only == 0].any()
    assert f1_of(result, truth) > 0.65  # unvoted records (38% yes) all yes: F1 0.71; all no: 0.67


@pytest.mark.parametrize("names", [["only"], ["first", "second"]])
def test_one_or_two_sources_give_informative_probabilities(names):
    sources = {name: (1.0, 0.85, 0.9) for name in names}
    votes, truth = simulate(3000, 0.3, sources, seed=2)
    result = combine(votes)
    p_yes = result.probs.column("p_yes").to_numpy()
    assert result.method == "label_model"
    assert np.unique(np.round(p_yes, 4)).size >= 2 and not np.allclose(p_yes, 0.5)
    assert f1_of(result, truth) > 0.75


def test_confidence_half_is_an_abstain_and_confidence_one_a_hard_vote():
    votes, _ = simulate(2000, 0.3, {"a": (1.0, 0.9, 0.9), "b": (1.0, 0.8, 0.8)}, seed=3)
    matrix = vote_matrix(votes)
    half = np.full(matrix.votes.shape, 0.5, dtype=np.float32)
    counts_half = outcome_counts(matrix.votes, half)
    counts_abstain = outcome_counts(np.full_like(matrix.votes, -1))
    assert np.allclose(counts_half, counts_abstain)
    assert np.allclose(outcome_counts(matrix.votes, np.ones_like(half)), outcome_counts(matrix.votes))


def test_confidences_make_a_difference_and_are_read_from_conf_columns():
    votes, truth = simulate(4000, 0.3, {"a": (1.0, 0.75, 0.75), "b": (1.0, 0.75, 0.75), "c": (1.0, 0.75, 0.75)},
                            seed=4)
    # `a` is sure exactly when it is right: its confidence carries the information
    right = votes.column("a").to_numpy() == truth.astype(np.int8)
    conf = np.where(right, 0.99, 0.55).astype(np.float32)
    with_conf = votes.append_column("a__conf", pa.array(conf))
    assert f1_of(combine(with_conf, method="label_model"), truth) > f1_of(combine(votes, method="label_model"),
                                                                          truth) + 0.05
    soft = combine(with_conf, method="weighted").probs.column("p_yes").to_numpy()
    hard = combine(votes, method="weighted").probs.column("p_yes").to_numpy()
    assert np.abs(soft - hard)[~right].min() > 0.1  # a's unsure votes count for less in weighted vote too


def test_records_without_votes_get_about_the_estimated_prior():
    """P(yes | every source abstained) under the model: near the prior; the smoothing prior (which expects
    the yes class to draw yes votes) moves it a little towards 0.5."""
    votes, _ = simulate(3000, 0.25, {"a": (0.8, 0.9, 0.9), "b": (0.8, 0.9, 0.9), "c": (0.8, 0.9, 0.9)}, seed=5)
    result = combine(votes)
    none = (vote_matrix(votes).votes < 0).all(axis=1)
    assert none.any()
    unvoted = result.probs.column("p_yes").to_numpy()[none]
    assert np.allclose(unvoted, unvoted[0]) and result.prior <= unvoted[0] < result.prior + 0.1
    assert set(result.probs.column("label").to_numpy().tolist()) <= {0, 1}
    assert result.probs.schema.field("p_yes").type == pa.float32()
    assert result.probs.schema.field("label").type == pa.int8()


def test_with_gold_auto_picks_the_best_method_and_says_why():
    votes, truth = simulate(3000, 0.3, {"a": (1.0, 0.9, 0.9), "b": (1.0, 0.7, 0.7), "c": (1.0, 0.7, 0.7)}, seed=6)
    gold = pa.table({"id": votes.column("id").to_pylist()[:300], "label": truth[:300].astype(np.int8)})
    result = combine(votes, gold=gold)
    assert set(result.candidates) == {"label_model", "weighted", "majority", "snorkel"}
    best = max(result.candidates.values(), key=lambda s: s["f1"])["f1"]
    assert result.candidates[result.method]["f1"] == best
    assert "300 gold records" in result.reason and result.method in result.reason


def test_source_weights_from_the_votes_metadata_drive_weighted_vote():
    votes = pa.table({"id": ["x", "y"], "strong": pa.array([1, 0], pa.int8()), "weak": pa.array([0, 1], pa.int8())})
    tagged = votes.replace_schema_metadata({b"assay.weights": b'{"strong": 3.0, "weak": 1.0}'})
    assert combine(tagged, method="weighted").probs.column("p_yes").to_pylist() == [0.75, 0.25]
    assert combine(votes, method="weighted").probs.column("p_yes").to_pylist() == [0.5, 0.5]  # unweighted: a tie


@pytest.mark.parametrize(("table", "message"), [
    (pa.table({"key": ["a"], "s": pa.array([1], pa.int8())}), "no `id` column"),
    (pa.table({"id": ["a"]}), "no source columns"),
    (pa.table({"id": ["a"], "s": pa.array([2], pa.int8())}), "'s' holds [2]"),
    (pa.table({"id": ["a"], "s": ["yes"]}), "must be integers"),
    (pa.table({"id": ["a"], "s": pa.array([1], pa.int8()), "s__conf": pa.array([0.2], pa.float32())}), "[0.5, 1]"),
])
def test_bad_votes_tables_are_refused_with_the_reason(table, message):
    with pytest.raises(ValueError) as error:
        combine(table)
    assert message in str(error.value)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown combine method"):
        combine(pa.table({"id": ["a"], "s": pa.array([1], pa.int8())}), method="vote")


def test_f1_threshold_sits_low_for_rare_classes_and_near_half_for_sure_ones():
    rng = np.random.default_rng(7)
    rare = np.concatenate([rng.uniform(0.2, 0.6, 50), rng.uniform(0.0, 0.05, 5000)])
    assert f1_threshold(rare, rare) < 0.5
    sure = np.array([0.99] * 100 + [0.01] * 100)
    assert ((sure > f1_threshold(sure, sure)) == (sure == 0.99)).all()
    assert f1_threshold(np.zeros(0), np.zeros(0)) == 0.5


def test_label_model_converges_and_reports_iterations():
    votes, _ = simulate(1000, 0.4, {"a": (1.0, 0.9, 0.9), "b": (1.0, 0.8, 0.8), "c": (1.0, 0.8, 0.8)}, seed=8)
    matrix = vote_matrix(votes)
    model = DawidSkene().fit(outcome_counts(matrix.votes))
    assert 1 < model.iterations < model.max_iter
    assert np.allclose(model.theta.sum(axis=2), 1.0)


def test_a_two_way_source_the_data_shows_far_below_chance_is_read_inverted():
    """Four sources 75 % right and one 30 % right (two-way, 60 % coverage each). Projected onto "no evidence",
    the inverted source added nothing (accuracy 0.792, as without it); the data says strongly that it is wrong,
    so the fit keeps its rates and reads its votes the other way round. A yes-only list that fires more on
    "no" is still projected: that is how a fit explains a class away."""
    rng = np.random.default_rng(7)
    n = 5000
    truth = rng.random(n) < 0.4

    def two_way(accuracy: float, coverage: float) -> np.ndarray:
        votes = np.where(rng.random(n) < accuracy, truth, ~truth).astype(np.int8)
        return np.where(rng.random(n) < coverage, votes, -1).astype(np.int8)

    columns = {f"good{j}": two_way(0.75, 0.6) for j in range(4)}
    columns["inverted"] = two_way(0.3, 0.6)
    columns["wrong_list"] = np.where(rng.random(n) < np.where(truth, 0.05, 0.2), 1, -1).astype(np.int8)

    def accuracy_without(*left_out: str):
        table = pa.table({"id": pa.array([f"r{i}" for i in range(n)]),
                          **{name: pa.array(v) for name, v in columns.items() if name not in left_out}})
        result = combine(table, method="label_model")
        return result, float(((result.probs.column("label").to_numpy() == 1) == truth).mean())

    result, with_it = accuracy_without()
    _, without_it = accuracy_without("inverted")
    assert result.source_accuracy["inverted"] < 0.35 and "collapsed" not in result.reason
    assert with_it > without_it + 0.01
    counts = outcome_counts(np.stack([columns[name] for name in columns], axis=1))
    model = DawidSkene().fit(counts)
    wrong_list = list(columns).index("wrong_list")
    assert model.theta[wrong_list, 0, 2] == pytest.approx(model.theta[wrong_list, 1, 2])  # its yes: no evidence
