"""The student's lexical head: saved beside the adapter without pickle, read back to the same scores, fused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_baselines import records

from assay.distill.baselines import fit_lexical_head
from assay.engine.lexical import HEAD_FILE, WEIGHTS_FILE, fuse, load_lexical_head, logit


def test_a_saved_head_reads_back_to_the_same_scores_and_features(tmp_path):
    head = fit_lexical_head(records(300, 0), records(80, 1))
    head.save(tmp_path)
    again = load_lexical_head(tmp_path)
    texts = records(50, 2).texts + ["", "an idiot with words never seen: zzqx", "IDIOT!!"]
    np.testing.assert_allclose(again.logit(texts), head.logit(texts), rtol=0, atol=1e-12)
    assert again.features_key == head.features_key
    assert head.probability(["the idiot page"])[0] > 0.5 > head.probability(["thanks for the edit"])[0]
    assert json.loads((tmp_path / HEAD_FILE).read_text())["format"] == 1


def test_a_folder_without_a_head_has_none_and_a_damaged_head_is_an_error(tmp_path):
    assert load_lexical_head(tmp_path) is None
    fit_lexical_head(records(200, 0), records(60, 1)).save(tmp_path)
    described = json.loads((tmp_path / HEAD_FILE).read_text())
    cut = {
        **described,
        "vectorizers": [
            {**described["vectorizers"][0], "terms": described["vectorizers"][0]["terms"][:-1]},
            *described["vectorizers"][1:],
        ],
    }
    (tmp_path / HEAD_FILE).write_text(json.dumps(cut))
    with pytest.raises(ValueError, match="'word': .* idf weights for .* terms"):
        load_lexical_head(tmp_path)
    (tmp_path / HEAD_FILE).write_text(json.dumps({**described, "vectorizers": described["vectorizers"][:1]}))
    with pytest.raises(ValueError, match="coefficients for .* TF-IDF features"):
        load_lexical_head(tmp_path)
    (tmp_path / HEAD_FILE).write_text(json.dumps({**described, "format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        load_lexical_head(tmp_path)
    assert (tmp_path / WEIGHTS_FILE).is_file()


def test_fuse_is_the_sigmoid_of_the_mean_logit():
    p = np.array([0.01, 0.3, 0.5, 0.9, 0.999])
    np.testing.assert_allclose(fuse(p, logit(p)), p, atol=1e-9)  # agreeing parts: unchanged
    assert fuse(np.array([0.5]), np.array([0.0]))[0] == pytest.approx(0.5)
    assert fuse(np.array([0.9]), logit(np.array([0.1])))[0] == pytest.approx(0.5)  # opposite parts cancel
    assert np.all(np.diff(fuse(np.full(5, 0.7), np.linspace(-3, 3, 5))) > 0)  # monotone in each part


def test_heads_of_one_label_run_share_their_vectorizers_in_memory(tmp_path):
    train, hold = records(300, 0), records(80, 1)
    for name, seed in (("a", 0), ("b", 1)):
        (tmp_path / name).mkdir()
        fit_lexical_head(train, hold, seed=seed, class_weight="none" if seed else "sqrt").save(tmp_path / name)
    a, b = load_lexical_head(tmp_path / "a"), load_lexical_head(tmp_path / "b")
    assert a.vectorizers is b.vectorizers and a.features_key == b.features_key
    assert not np.array_equal(a.coef, b.coef)
