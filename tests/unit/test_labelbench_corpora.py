"""bench/labelbench: the hold-outs' building blocks. The frozen rule files load as Assay rules sources, the
opposite question swaps every direction and nothing else, a rare variant keeps every "no" record and only
some "yes" ones, the rated, labelled, JSON and WordNet readers parse what the packages ship (column order included),
and the stated rate is the true rate to one significant figure."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from label_suite import stated_rate  # noqa: E402
from labelbench.corpora import (  # noqa: E402
    FOLDOC_PARTS,
    HERE,
    WORDNET_PARTS,
    mail_body,
    rare_variant,
    read_corpus,
    read_foldoc,
    read_fortunes,
    read_labelled_json,
    read_rated,
    read_sotu,
    read_spam_assassin,
    read_wordnet,
    rule_votes,
    swapped,
)
from labelbench.data import BenchSet  # noqa: E402

from assay.schemas.questions import RulesSource  # noqa: E402


@pytest.mark.parametrize("name", ["rules_holdout3.yaml", "rules_holdout4.yaml", "rules_holdout8.yaml",
                                  *(f"rules_{part}.yaml" for part in WORDNET_PARTS + FOLDOC_PARTS),
                                  "rules_holdout18.yaml", "rules_holdout23.yaml"])
def test_frozen_rule_files_are_valid_rules_sources(name: str) -> None:
    spec = yaml.safe_load((HERE / name).read_text())
    sources = spec["sources"] if "sources" in spec else [s for family in spec.values() for s in family["sources"]]
    assert sources
    for source in sources:
        RulesSource(kind="rules", **source)


def test_swapped_exchanges_yes_and_no_only() -> None:
    spec = [{"name": "a", "yes_keywords": ["good"], "no_patterns": ["bad"], "case_sensitive": True}]
    assert swapped(spec) == [{"name": "a", "no_keywords": ["good"], "yes_patterns": ["bad"], "case_sensitive": True}]
    texts, ids = ["good day", "bad day", "a day"], ["1", "2", "3"]
    straight = rule_votes(spec, ids, texts).column("a").to_pylist()
    opposite = rule_votes(swapped(spec), ids, texts).column("a").to_pylist()
    assert straight == [1, 0, -1] and opposite == [0, 1, -1]


def test_rare_variant_keeps_every_no_and_a_fixed_share_of_yes() -> None:
    n = 4000
    truth = np.arange(n) % 2 == 0
    votes = pa.table({"id": [f"r{i}" for i in range(n)], "s": pa.array(np.zeros(n, np.int8))})
    rare = rare_variant(BenchSet("x", "x", votes, truth), 0.1, "x-rare")
    assert rare.name == "x-rare" and (~rare.truth).sum() == (~truth).sum()
    assert 0.07 < rare.truth.sum() / truth.sum() < 0.13
    again = rare_variant(BenchSet("x", "x", votes, truth), 0.1)
    assert again.votes.column("id").to_pylist() == rare.votes.column("id").to_pylist()


def test_read_rated_parses_vader_ground_truth(tmp_path: Path) -> None:
    path = tmp_path / "tweets_GroundTruth.txt"
    path.write_bytes(b"1\t2.5\tso lucky\r\n2\t-1.25\tugh, again\r\nbroken line\r\n")
    ids, texts, rating = read_rated(path)
    assert ids == ["tweets_GroundTruth/1", "tweets_GroundTruth/2"]
    assert texts == ["so lucky", "ugh, again"] and rating.tolist() == [2.5, -1.25]


def test_read_labelled_json_skips_records_without_a_class(tmp_path: Path) -> None:
    path = tmp_path / "yelp.json"
    path.write_text('[{"text": "Loved it.", "class": 1}, {"text": "Cold food.", "class": 0}, {"text": ""}]')
    ids, texts, classes = read_labelled_json(path)
    assert ids == ["yelp/0", "yelp/1"] and texts == ["Loved it.", "Cold food."] and classes.tolist() == [1, 0]


def test_mail_body_drops_the_header_block() -> None:
    assert mail_body("From: a@b\r\nSubject: hi\r\n\r\nDear friend,\r\n\r\nmoney") == "Dear friend,\n\nmoney"
    assert mail_body("From: a@b\nSubject: no body") == ""


def test_read_spam_assassin_flags_spam_folders_and_leaves_out_known_bodies(tmp_path: Path) -> None:
    import json

    for group, name, body in [("easy-ham-1", "00001.x", "patch for the kernel"), ("spam-1", "00001.y", "FREE money"),
                              ("spam-1", "00002.z", "already  in the\nsample")]:
        (tmp_path / group).mkdir(exist_ok=True)
        (tmp_path / group / f"{name}.json").write_text(json.dumps({"text": f"From: x\n\n{body}"}))
        (tmp_path / group / f"{name}.txt").write_text("not read")
    ids, texts, spam = read_spam_assassin(tmp_path, leave_out={"already in the sample"})
    assert ids == ["easy-ham-1/00001.x", "spam-1/00001.y"] and spam.tolist() == [False, True]
    assert read_spam_assassin(tmp_path, groups=("spam-1",))[0] == ["spam-1/00001.y", "spam-1/00002.z"]


def test_read_fortunes_undoes_rot13_in_the_offensive_section_and_drops_texts_filed_twice(tmp_path: Path) -> None:
    import codecs

    (tmp_path / "es" / "off").mkdir(parents=True)
    (tmp_path / "es" / "vida.fortunes").write_text("Vive y deja vivir.\n%\nLa vida es sueño.\n  -- Calderón\n%\n")
    (tmp_path / "es" / "vida.fortunes.dat").write_bytes(b"\x00\x01")
    (tmp_path / "es" / "off" / "varios.fortunes").write_text(codecs.encode("Chiste feo.\n%\nVive y deja vivir.\n", "rot13"))
    (tmp_path / "es" / "alias").symlink_to(tmp_path / "es" / "vida.fortunes")  # another package's link: not read
    ids, texts, files = read_fortunes(tmp_path, "es")
    assert texts == ["Chiste feo.", "La vida es sueño.\n  -- Calderón"]  # the twice-filed text is gone
    assert files == ["off/varios.fortunes", "vida.fortunes"] and ids == ["es/off/varios.fortunes/0", "es/vida.fortunes/1"]


def test_read_sotu_splits_each_address_into_sentences_with_its_year_and_party(tmp_path: Path) -> None:
    import json

    address = {"year": 1862, "name": "Abraham Lincoln", "party": "Republican",
               "text": " Fellow-Citizens of the Senate: Since your last assembling another year has passed. Mr. "
                       "Seward has the papers. Is it well? \"We trust so,\" said he."}
    (tmp_path / "1862_abraham_lincoln_r.json").write_text(json.dumps(address))
    (tmp_path / "2021_joseph_r_biden_d.json").write_text(json.dumps(
        {"year": 2021, "name": "Joseph R. Biden", "party": "Democratic", "text": "Thank you all. America is on the move."}))
    ids, texts, years, parties = read_sotu(tmp_path)
    assert texts == ["Fellow-Citizens of the Senate: Since your last assembling another year has passed.",
                     "Seward has the papers.", '"We trust so," said he.', "America is on the move."]
    assert ids == ["1862_abraham_lincoln_r/0", "1862_abraham_lincoln_r/1", "1862_abraham_lincoln_r/2",
                   "2021_joseph_r_biden_d/0"]
    assert years.tolist() == [1862, 1862, 1862, 2021] and parties == ["Republican"] * 3 + ["Democratic"]


def test_read_foldoc_reads_each_tagged_entry_once_without_its_tags_and_markup(tmp_path: Path) -> None:
    import gzip

    entries = [("IMHO\nIMO\n\n   <chat> In My {Humble} Opinion.\n\n   [{Jargon File}]\n\n   (1998-09-24)\n\n"),
               ("block\n\n   1. <unit> A unit of data.\n\n   2. <operating system, programming> To wait.\n\n"),
               ("ALAM\n\n   A language. Mail <holt@csri.toronto.edu>.\n\n")]
    data, index, digits = b"", [], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def b64(n: int) -> str:
        return (b64(n // 64) if n >= 64 else "") + digits[n % 64]

    for entry in entries:
        raw = entry.encode()
        index.append((entry.split("\n")[0], b64(len(data)), b64(len(raw))))
        data += raw
    index.insert(1, ("IMO", index[0][1], index[0][2]))  # a second headword of the same entry
    (tmp_path / "foldoc.dict.dz").write_bytes(gzip.compress(data))
    (tmp_path / "foldoc.index").write_text("".join(f"{w}\t{o}\t{n}\n" for w, o, n in index))
    ids, texts, tags = read_foldoc(tmp_path)
    assert ids == ["foldoc/A", f"foldoc/{index[2][1]}"]
    assert texts == ["IMHO, IMO: In My Humble Opinion.", "block: 1. A unit of data. 2. To wait."]
    assert tags == [{"chat"}, {"unit", "operating system", "programming"}]


def test_read_wordnet_reads_words_gloss_and_lexicographer_file(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "man/man5").mkdir(parents=True)
    (tmp_path / "wordnet").mkdir()
    (tmp_path / "man/man5/lexnames.5WN.gz").write_bytes(gzip.compress(
        b".TP\n05\tnoun.animal\tnouns denoting animals\n13\tnoun.food\tnouns denoting foods and drinks\n"))
    (tmp_path / "wordnet/data.noun").write_text(
        "  1 This software and database is being provided to you, the LICENSEE, by\n"
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a member of the genus Canis\n"
        "07609840 13 n 01 fortune_cookie(a) 0 000 | thin folded wafer containing a maxim  \n")
    ids, texts, files = read_wordnet(tmp_path, "noun")
    assert ids == ["noun/02084071", "noun/07609840"] and files == ["noun.animal", "noun.food"]
    assert texts == ["dog, domestic dog, Canis familiaris: a member of the genus Canis",
                     "fortune cookie: thin folded wafer containing a maxim"]


def test_read_corpus_takes_either_column_order(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('1,"great, really"\n-1,dull\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text('"great, really",1\ndull,-1\n', encoding="utf-8")
    first = read_corpus(tmp_path / "a.csv", "1")
    second = read_corpus(tmp_path / "b.csv", "1", text_first=True)
    assert first[1] == second[1] == ["great, really", "dull"]
    assert first[2].tolist() == second[2].tolist() == [True, False]


@pytest.mark.parametrize(("rate", "stated"), [(0.0372, 0.04), (0.0241, 0.02), (0.5, 0.5), (0.148, 0.1), (0.003, 0.003)])
def test_stated_rate_is_one_significant_figure(rate: float, stated: float) -> None:
    n = 100_000
    truth = np.arange(n) < round(rate * n)
    assert stated_rate(truth) == pytest.approx(stated)


def test_by_kind_splits_synthetic_jigsaw_and_keyword_sets() -> None:
    from labelbench.report import by_kind

    def row(family: str, assay: float, majority: float, snorkel: float | None = None) -> dict:
        scores = {"assay": {"goal": assay}, "majority": {"goal": majority},
                  "snorkel": None if snorkel is None else {"goal": snorkel}}
        return {"set": family, "family": family, "methods": scores}

    kinds = by_kind([row("synthetic", 0.9, 0.7), row("jigsaw", 0.6, 0.5), row("spam", 0.4, 0.5),
                     row("tweets", 0.2, 0.3, snorkel=0.35)])
    assert kinds["synthetic"] == {"sets": 1, "majority": 0.7, "assay": 0.9}
    assert kinds["jigsaw"] == {"sets": 1, "majority": 0.5, "assay": 0.6}
    assert kinds["keyword lists"]["sets"] == 2 and kinds["keyword lists"]["assay"] == pytest.approx(0.3)
    assert kinds["keyword lists"]["majority"] == pytest.approx(0.4)
    assert kinds["keyword lists"]["snorkel"] == pytest.approx(0.425)  # where it cannot run: majority vote's


def test_the_floor_probe_adds_the_rarer_class_where_p_says_so_and_keeps_the_prevalence_cut_otherwise():
    from label_floor_probe import with_floor

    from assay.labeling.metrics import prevalence_labels

    p = np.array([0.95, 0.9, 0.8, 0.6, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert prevalence_labels(p, 0.1)[0].sum() == 1
    assert with_floor(p, 0.1).tolist() == [True] * 4 + [False] * 6  # every P(yes) > 0.5 is labelled yes
    assert with_floor(1 - p, 0.9).tolist() == [False] * 4 + [True] * 6  # the same for a rare "no"
    assert with_floor(p, 0.5).tolist() == prevalence_labels(p, 0.5)[0].tolist()  # a cut before 0.5 stays


def test_write_question_writes_a_question_file_assay_loads_with_three_plus_three_examples(tmp_path: Path) -> None:
    from labelbench.embedded import write_question

    from assay.schemas.loader import load_questions

    texts = [f"entry number {n} about {'compilers' if n % 4 == 0 else 'printers'}" for n in range(40)]
    pool = pa.table({"id": [str(n) for n in range(40)], "text": texts,
                     "label": pa.array([int(n % 4 == 0) for n in range(40)], pa.int8())})
    family = {"question": "Is this entry about compilers?", "sources": [{"name": "words", "yes_keywords": ["compiler"]}]}
    write_question(tmp_path, "compilers", family, pool, read=20)
    (loaded,) = load_questions(tmp_path)
    answers = [e.answer for e in loaded.spec.examples]
    assert sorted(answers) == [False] * 3 + [True] * 3
    assert all(("compilers" in e.text) == e.answer for e in loaded.spec.examples)
    assert [s.kind for s in loaded.spec.sources] == ["rules", "embedding"]
    assert loaded.spec.expected_yes_rate == pytest.approx(0.25, abs=0.15)
