"""The cheap sources: rules, labels files, embedding similarity, and the gold-label helper."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.labeling.gold import gold_labels
from assay.labeling.sources.labels_file import LabelsFileError, LabelsFileVoter
from assay.labeling.sources.rules import RulesVoter
from assay.schemas.questions import LabelsFileSource, RulesSource


def rules(**fields) -> RulesVoter:
    return RulesVoter(RulesSource(kind="rules", name="rules", **fields))


def votes_of(voter, texts: list[str]) -> list[int]:
    table = voter.vote([str(i) for i in range(len(texts))], texts)
    assert table.schema.field("vote").type == pa.int8() and table.column("id").to_pylist() == [str(i) for i in
                                                                                                 range(len(texts))]
    return table.column("vote").to_pylist()


def test_keywords_match_whole_words_case_insensitively_by_default():
    voter = rules(yes_keywords=["idiot", "shut up"], no_keywords=["thanks"])
    assert votes_of(voter, ["You IDIOT", "idiotic edit", "please SHUT UP now", "thanks!", "fine"]) == [1, -1, 1, 0, -1]


def test_yes_wins_when_yes_and_no_rules_both_match():
    voter = rules(yes_keywords=["idiot"], no_keywords=["thanks"])
    assert votes_of(voter, ["thanks, you idiot"]) == [1]


def test_case_sensitive_and_substring_options():
    voter = rules(yes_keywords=["NO"], case_sensitive=True, word_boundary=False)
    assert votes_of(voter, ["say NO", "say no", "NOTHING"]) == [1, -1, 1]


def test_patterns_and_keywords_with_regex_characters():
    voter = rules(yes_patterns=[r"f+u+c+k+"], yes_keywords=["c++", "a.b"], no_patterns=[r"\bthank(s| you)\b"])
    assert votes_of(voter, ["fuuuck", "I like c++ a lot", "axb", "thank you", "a.b"]) == [1, 1, -1, 0, 1]


def labels_source(path, **fields) -> LabelsFileSource:
    return LabelsFileSource(kind="labels_file", name="file", path=str(path), **fields)


def test_labels_file_votes_recorded_answers_and_abstains_elsewhere(tmp_path):
    path = tmp_path / "answers.parquet"
    pq.write_table(pa.table({"key": ["a", "b", "c"], "ans": pa.array([1, 0, None], pa.int8())}), path)
    both = LabelsFileVoter(labels_source(path, id_column="key", label_column="ans"), tmp_path / "q.yaml")
    assert votes_of_ids(both, ["a", "b", "c", "zz"]) == [1, 0, -1, -1]
    only_no = LabelsFileVoter(labels_source(path, id_column="key", label_column="ans", vote="no"), tmp_path / "q.yaml")
    assert votes_of_ids(only_no, ["a", "b"]) == [-1, 0]
    only_yes = LabelsFileVoter(labels_source(path, id_column="key", label_column="ans", vote="yes"),
                               tmp_path / "q.yaml")
    assert votes_of_ids(only_yes, ["a", "b"]) == [1, -1]


def votes_of_ids(voter, ids: list[str]) -> list[int]:
    return voter.vote(ids, ["text"] * len(ids)).column("vote").to_pylist()


def test_labels_file_csv_with_words_and_a_relative_path(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "answers.csv").write_text("id,label\n7,yes\n8,False\n009,1\n")
    voter = LabelsFileVoter(labels_source("data/answers.csv"), tmp_path / "question.yaml")
    assert votes_of_ids(voter, ["7", "8", "009", "9"]) == [1, 0, 1, -1]


@pytest.mark.parametrize(("content", "fields", "message"), [
    ("id,label\n1,2\n", {}, "row 1 (id '1'): label=2 is not 0/1"),
    ("id,answer\n1,1\n", {}, "no column(s) label (found: id, answer); set id_column / label_column"),
    ("id,label\n1,1\n1,0\n", {}, "id '1' has conflicting answers"),
])
def test_labels_file_problems_name_the_file_and_the_fix(tmp_path, content, fields, message):
    (tmp_path / "answers.csv").write_text(content)
    with pytest.raises(LabelsFileError) as error:
        LabelsFileVoter(labels_source("answers.csv", **fields), tmp_path / "q.yaml")
    assert message in str(error.value) and "answers.csv" in str(error.value)


def test_labels_file_missing(tmp_path):
    with pytest.raises(LabelsFileError, match="labels file not found"):
        LabelsFileVoter(labels_source("nope.parquet"), tmp_path / "q.yaml")


def test_gold_labels_by_question_column_derived_is_bad_and_label(tmp_path):
    jigsaw = {name: pa.array([0, 0, 0], pa.int8()) for name in
              ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")}
    jigsaw["threat"] = pa.array([0, 1, 0], pa.int8())
    jigsaw["insult"] = pa.array([0, 0, 1], pa.int8())
    path = tmp_path / "gold.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], **jigsaw}), path)
    with pytest.raises(ValueError, match="derive it in .*gold.json"):
        gold_labels(path, "is_bad")  # the library knows nothing about Jigsaw; the data says how
    (tmp_path / "gold.json").write_text('{"derived": {"is_bad": ["toxic", "threat", "insult"]}}')
    assert gold_labels(path, "threat").column("label").to_pylist() == [0, 1, 0]
    assert gold_labels(path, "is_bad").column("label").to_pylist() == [0, 1, 1]
    plain = tmp_path / "plain.csv"
    plain.write_text("id,label\n1,1\n2,0\n")
    gold = gold_labels(plain, "anything")
    assert gold.column("id").to_pylist() == ["1", "2"] and gold.schema.field("label").type == pa.int8()
    with pytest.raises(ValueError, match="add a column named 'is_rude' or `label`"):
        gold_labels(path, "is_rude")


def test_embedding_votes_by_nearest_example_and_abstains_in_the_band(tmp_path):
    from assay.labeling.sources.embedding import EmbeddingVoter, TextEmbedder
    from assay.schemas.questions import EmbeddingSource, QuestionSpec

    spec = QuestionSpec(id="is_rude", version=1, question="Is this rude?",
                        examples=[{"text": "you are a stupid idiot", "answer": True},
                                  {"text": "thank you for your kind help", "answer": False}],
                        sources=[{"kind": "embedding"}])
    embedder = TextEmbedder(cache_dir=tmp_path)
    voter = EmbeddingVoter(spec, EmbeddingSource(kind="embedding", name="embedding", abstain_band=0.05), embedder)
    texts = ["what a moronic idiot you are", "many thanks for helping me", "the train leaves at noon"]
    margins = voter.margins(texts)
    assert margins[0] > 0.05 and margins[1] < -0.05
    assert votes_of(voter, texts)[:2] == [1, 0]
    # cached by text on disk: a fresh embedder reads the vectors back without loading the model
    embedder.save()
    again = TextEmbedder(cache_dir=tmp_path)
    assert np.allclose(again.embed(texts), embedder.embed(texts), atol=1e-6) and again._model is None
    with pytest.raises(ValueError, match="at least one yes and one no example"):
        EmbeddingVoter(spec.model_copy(update={"examples": spec.examples[:1]}),
                       EmbeddingSource(kind="embedding", name="embedding"), embedder)


@pytest.mark.slow
def test_embeddings_match_sentence_transformers():
    """Our plain-transformers encoder gives the vectors sentence-transformers gives for the bundled MiniLM."""
    from sentence_transformers import SentenceTransformer

    from assay.labeling.sources.embedding import MAX_TOKENS, SentenceEncoder
    from assay.schemas.models import bundled_minilm

    texts = ["you are a stupid idiot", "Thanks for the citation.", "word " * 300]
    reference = SentenceTransformer(str(bundled_minilm()), device="cpu")
    reference.max_seq_length = MAX_TOKENS
    expected = reference.encode(texts, normalize_embeddings=True)
    assert np.allclose(SentenceEncoder(bundled_minilm()).encode(texts), expected, atol=1e-5)
