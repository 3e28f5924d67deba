"""Evaluation metrics, the F1 threshold on soft labels, evaluation through the engine, promotion rules."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_fixtures import make_adapter, make_llama_base
from test_train import make_texts, spec, write_labels

from assay.distill.evaluate import (
    binary_metrics,
    evaluate,
    expected_calibration_error,
    prevalence_threshold,
    promote_if_better,
    reliability_plot,
    roc_auc,
)
from assay.distill.train import choose_threshold
from assay.labeling.metrics import f1_threshold
from assay.schemas.registry import Registry, base_sha256


def test_threshold_maximises_f1_on_soft_labels():
    p = np.array([0.9, 0.8, 0.3, 0.1])
    assert f1_threshold(p, np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(0.55)
    assert f1_threshold(p, np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.85)
    # soft labels: a 0.6-probable yes at 0.3 is worth taking in, a 0.05 one at 0.1 is not
    assert f1_threshold(p, np.array([0.95, 0.9, 0.6, 0.05])) == pytest.approx(0.2)
    ties = np.array([0.7, 0.7, 0.2])
    assert f1_threshold(ties, np.array([1.0, 0.0, 0.0])) == pytest.approx(0.45)


def test_prevalence_threshold_says_yes_to_the_estimated_share():
    p = np.array([0.9, 0.8, 0.6, 0.3, 0.1])
    assert prevalence_threshold(p, 0.4) == pytest.approx(0.7)  # the top 2 of 5
    assert prevalence_threshold(p, 0.6) == pytest.approx(0.45)  # the top 3
    assert (p >= prevalence_threshold(p, 0.0)).sum() == 0
    assert (p >= prevalence_threshold(p, 1.0)).sum() == 5
    # few held-out yes records: F1 on the hold-out picks a cut that fits them, prevalence keeps the rate
    scores = np.linspace(0.01, 0.2, 800)[::-1]
    soft = np.zeros(800)
    soft[0] = 1.0  # one held-out yes, ranked first
    assert (scores >= choose_threshold(scores, soft, 0.01, "f1")).sum() == 1
    assert (scores >= choose_threshold(scores, soft, 0.01, "prevalence")).sum() == 8
    with pytest.raises(ValueError, match="threshold_rule"):
        choose_threshold(scores, soft, 0.01, "median")


def test_auc_matches_the_rank_definition_with_ties():
    rng = np.random.default_rng(0)
    p = np.round(rng.random(300), 1)  # many ties
    label = (rng.random(300) < p).astype(int)
    pairs = [(a > b) + 0.5 * (a == b) for a in p[label == 1] for b in p[label == 0]]
    assert roc_auc(p, label) == pytest.approx(np.mean(pairs))
    assert roc_auc(p, np.zeros(300, int)) is None


def test_metrics_and_calibration():
    p = np.array([0.9, 0.8, 0.6, 0.2, 0.1, 0.7])
    label = np.array([1, 1, 0, 0, 0, 0])
    m = binary_metrics(p, label, threshold=0.5, soft=np.array([1, 1, 0.4, 0, 0, 0.2]))
    assert (m["n"], m["positives"]) == (6, 2)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == 1.0 and m["f1"] == pytest.approx(2 / 3)
    assert m["auc"] == 1.0 and 0 < m["ece"] < 1 and 0 < m["soft_f1"] < 1
    calibrated = np.repeat([0.05, 0.95], 100)
    outcome = np.r_[np.r_[np.ones(5), np.zeros(95)], np.r_[np.ones(95), np.zeros(5)]]
    assert expected_calibration_error(calibrated, outcome) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.95), np.zeros(10)) == pytest.approx(0.95)


def test_reliability_plot_is_a_png(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.random(200)
    path = reliability_plot(p, (rng.random(200) < p).astype(float), tmp_path / "r.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny base, a label run, a gold file and two random adapters saved as versions with a hold-out."""
    root = tmp_path_factory.mktemp("evaluate")
    base = make_llama_base(root / "base")
    labels = write_labels(root / "labels", n=100)
    texts = make_texts(40, seed=3)
    pq.write_table(pa.table({"id": [f"g{i}" for i in range(40)], "text": texts,
                             "is_bad": [int("idiot" in t or "kill" in t) for t in texts]}), root / "gold.parquet")
    registry = Registry(root / "reg")
    for seed in (1, 2):
        adapter = make_adapter(base, root / f"adapter{seed}", seed=seed, rank=4, target_modules=["q_proj", "v_proj"],
                               head="score")
        (adapter / "holdout_ids.json").write_text(json.dumps([f"r{i}" for i in range(0, 100, 4)]))
        registry.save("is_bad", adapter, {"base_model": str(base), "base_model_sha256": base_sha256(base),
                                          "threshold": 0.5, "max_length": 32,
                                          "training": {"labels_dir": str(labels), "yes_rate": 0.3, "records": 75,
                                                       "holdout_records": 25}})
    return root, registry, labels


def test_evaluate_scores_holdout_and_gold_through_the_engine(setup):
    root, registry, labels = setup
    version = registry.get("is_bad", 1)
    metrics = evaluate(version, labels, root / "gold.parquet")
    assert metrics["holdout"]["n"] == 25 and metrics["gold"]["n"] == 40
    assert set(metrics["gold"]) >= {"precision", "recall", "f1", "auc", "ece", "brier"}
    assert (version.path / "reliability.png").is_file()
    with pytest.raises(ValueError, match="needs a labels folder"):
        evaluate(version, None)


def gated(holdout: dict, baseline_f1: float = 0.1, positives: int = 40) -> dict:
    """Metrics as training leaves them: held-out metrics with the TF-IDF baseline's beside them."""
    return {"holdout": {"precision": 1.0, "ece": 0.05, "positives": positives, **holdout,
                        "baseline": {"name": "tfidf_lr", "f1": baseline_f1}}}


LENIENT = {"min_holdout_positives": 1}  # the fixture's hold-out has 25 records


def test_promotion_follows_the_spec_thresholds_and_the_current_version(setup, tmp_path):
    root, _, labels = setup
    registry = Registry(tmp_path / "reg")
    shutil.copytree(root / "reg" / "is_bad", tmp_path / "reg" / "is_bad")
    one, two = registry.get("is_bad", 1), registry.get("is_bad", 2)
    strict = promote_if_better(registry, one, gated({"f1": 0.4}), spec(promotion={"min_f1": 0.5}))
    assert not strict.promoted and "below the spec's min_f1 0.5" in strict.reason and registry.current("is_bad") is None
    first = promote_if_better(registry, one, gated(evaluate(one, labels)["holdout"], 0.0), spec(promotion=LENIENT))
    assert first.promoted and "first version" in first.reason and registry.current_version("is_bad") == 1
    assert "ECE" in first.reason and "beats tfidf_lr 0.000" in first.reason
    mine, theirs = evaluate(two, labels), evaluate(one, labels, holdout_of=two)
    decision = promote_if_better(registry, two, gated(mine["holdout"], 0.0), spec(promotion=LENIENT))
    assert decision.promoted == (mine["holdout"]["f1"] >= theirs["holdout"]["f1"])
    assert f"{theirs['holdout']['f1']:.3f}" in decision.reason
    better = promote_if_better(registry, two, gated({"f1": 1.0}), spec())
    assert better.promoted and registry.current_version("is_bad") == 2


def test_each_refusal_reason_says_what_to_do(setup, tmp_path):
    root, _, _ = setup
    registry = Registry(tmp_path / "reg")
    shutil.copytree(root / "reg" / "is_bad", tmp_path / "reg" / "is_bad")
    one = registry.get("is_bad", 1)
    refused = {
        "baseline": promote_if_better(registry, one, gated({"f1": 0.60}, baseline_f1=0.62), spec()),
        "tie": promote_if_better(registry, one, gated({"f1": 0.62}, baseline_f1=0.62), spec()),
        "positives": promote_if_better(registry, one, gated({"f1": 0.9}, positives=6), spec()),
        "old": promote_if_better(registry, one, {"holdout": {"f1": 0.9, "precision": 0.9}}, spec()),
        "precision": promote_if_better(registry, one, gated({"f1": 0.9, "precision": 0.2}),
                                       spec(promotion={"min_precision": 0.5})),
    }
    assert all(not d.promoted for d in refused.values()) and registry.current("is_bad") is None
    assert "does not beat tfidf_lr trained on the same labels (0.620)" in refused["baseline"].reason
    assert "label more records" in refused["baseline"].reason and "does not beat" in refused["tie"].reason
    assert "holds 6 yes record(s), fewer than min_holdout_positives 30" in refused["positives"].reason
    assert "--sample 500" in refused["positives"].reason and "--stratify" in refused["positives"].reason
    assert "retrain it with `assay train`" in refused["old"].reason
    assert "min_precision 0.5" in refused["precision"].reason
    off = promote_if_better(registry, one, gated({"f1": 0.5}, baseline_f1=0.6), spec(promotion={"beat_baseline": False}))
    assert off.promoted


@pytest.mark.parametrize("yes_rate", [0.96, 1.0, 0.001])
def test_degenerate_labels_are_never_promoted(setup, tmp_path, yes_rate):
    root, _, _ = setup
    registry = Registry(tmp_path / "reg")
    shutil.copytree(root / "reg" / "is_bad", tmp_path / "reg" / "is_bad")
    version = registry.update_manifest(registry.get("is_bad", 1),
                                       training={**registry.get("is_bad", 1).manifest["training"], "yes_rate": yes_rate})
    decision = promote_if_better(registry, version, gated({"f1": 0.99}), spec())
    assert not decision.promoted and registry.current("is_bad") is None
    assert f"degenerate labels — they say yes to {yes_rate:.1%} of the 100 seed records" in decision.reason
    assert "assay label --stratify" in decision.reason and "add a source" in decision.reason


@pytest.mark.parametrize(("yes_rate", "stated", "refused"), [(0.004, 0.005, False), (0.96, 0.95, False),
                                                              (0.001, 0.02, True), (0.0, 0.005, True)])
def test_a_stated_rate_sets_what_degenerate_labels_are(setup, tmp_path, yes_rate, stated, refused):
    # min_yes_rate 0.5 % would refuse a stated 0.5 % question whose labels round to 0.4 %: labels outside the
    # bounds pass when within a factor of 1.5 of the stated rate; all one answer never does
    root, _, _ = setup
    registry = Registry(tmp_path / "reg")
    shutil.copytree(root / "reg" / "is_bad", tmp_path / "reg" / "is_bad")
    version = registry.update_manifest(registry.get("is_bad", 1),
                                       training={**registry.get("is_bad", 1).manifest["training"], "yes_rate": yes_rate})
    decision = promote_if_better(registry, version, gated({"f1": 0.99}), spec(expected_yes_rate=stated))
    assert decision.promoted is not refused
    if refused:
        assert f"degenerate labels — they say yes to {yes_rate:.1%}" in decision.reason
        assert f"far from the stated expected_yes_rate {stated}" in decision.reason


def test_labels_with_a_guessed_class_balance_are_not_promoted(setup, tmp_path):
    root, _, _ = setup
    registry = Registry(tmp_path / "reg")
    shutil.copytree(root / "reg" / "is_bad", tmp_path / "reg" / "is_bad")
    reason = "no gold labels; the label model collapsed (...), with the class balance unknown (0.5)"
    version = registry.update_manifest(registry.get("is_bad", 1), sources={
        "label_model": {"reason": reason, "prior": 0.5, "balance_known": False}})
    decision = promote_if_better(registry, version, gated({"f1": 0.99}), spec())
    assert not decision.promoted and registry.current("is_bad") is None
    assert "could not estimate how often the answer is yes" in decision.reason and reason in decision.reason
    assert "expected_yes_rate" in decision.reason and "both ways" in decision.reason
    allowed = promote_if_better(registry, version, gated({"f1": 0.99}), spec(promotion={"require_known_balance": False}))
    assert allowed.promoted


def test_soft_labels_whose_mean_is_far_from_the_balance_are_not_promoted(setup, tmp_path):
    """A fallback vote's P(yes) can average 47 % on a question stated at 3 % while its hard labels follow the
    balance (seen on a new 3 %-positive question, bench/new_questions.py --read 200): the student learns the 47 %."""
    root, _, _ = setup
    registry = Registry(tmp_path / "reg")
    shutil.copytree(root / "reg" / "is_bad", tmp_path / "reg" / "is_bad")
    version = registry.get("is_bad", 1)
    label_model = {"reason": "no gold labels; the label model collapsed; weighted vote is used instead",
                   "prior": 0.03, "balance_known": True, "labels_follow_balance": True}
    far = registry.update_manifest(version, training={**version.manifest["training"], "estimated_prevalence": 0.466},
                                   sources={"label_model": label_model})
    decision = promote_if_better(registry, far, gated({"f1": 0.99}), spec())
    assert not decision.promoted and registry.current("is_bad") is None
    assert "P(yes) averages 46.6% for a class balance of 3.0%" in decision.reason
    assert "add sources that vote both ways" in decision.reason
    near = registry.update_manifest(far, training={**far.manifest["training"], "estimated_prevalence": 0.04})
    assert promote_if_better(registry, near, gated({"f1": 0.99}), spec()).promoted


def test_labels_a_tie_group_moved_off_the_balance_are_not_promoted(setup, tmp_path):
    root, _, _ = setup
    registry = Registry(tmp_path / "reg")
    shutil.copytree(root / "reg" / "is_bad", tmp_path / "reg" / "is_bad")
    version = registry.update_manifest(registry.get("is_bad", 1), sources={
        "label_model": {"reason": "no gold labels; the label model is the default", "prior": 0.28,
                        "balance_known": True, "labels_follow_balance": False}})
    decision = promote_if_better(registry, version, gated({"f1": 0.99}), spec())
    assert not decision.promoted and registry.current("is_bad") is None
    rate = version.manifest["training"]["yes_rate"]
    assert f"the labels say yes to {rate:.1%} of the seed for a class balance of 28.0%" in decision.reason
    assert "labelled alike" in decision.reason and "add a source that votes on those records" in decision.reason
    allowed = promote_if_better(registry, version, gated({"f1": 0.99}),
                                spec(promotion={"require_labels_near_balance": False}))
    assert allowed.promoted
