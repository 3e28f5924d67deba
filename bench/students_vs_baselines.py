"""Do the students earn their place? Each question's LoRA student against what a data team would use instead.

    .venv/bin/python bench/students_vs_baselines.py --out bench/results/students_vs_baselines

One command, rerunnable: it labels 4,000 seed records of train.parquet with the bundled questions'
offline sources (skipped when WORK/label-train exists; ``--fresh`` redoes it), trains the students
(``assay train`` defaults) and the **oracle** (the same recipe on the seed's gold labels), fits the
baselines of :mod:`assay.distill.baselines` on the SAME probabilistic labels, the SAME train/hold-out
split and the SAME decision rule (TF-IDF + LR, frozen MiniLM embeddings + LR, SetFit; the keyword rules
alone need no training), and scores everything on two sets nobody trained or tuned on:

- **dev**: all 938 records of dev.parquet (natural rates; used before in this project's reports);
- **untouched**: the 3,506 records of train.parquet outside the seed (toxic-enriched like the seed;
  never used for any choice).

Reported per question and macro: F1 of the yes class against gold, with a 95 % bootstrap interval,
and the paired bootstrap 95 % interval of student minus each method (same resampled records). For
``is_bad``, the recorded GPT-4 answers against the student on the records GPT-4 answered.
The bundled questions state ``expected_yes_rate`` (the yes share of 200 seed records, as a data team
reads them; tests/unit/test_bundled_questions.py); ``--estimate-balance`` drops it, so the label model
estimates every class balance. ``--read N`` labels the same seed again with each question's
``expected_yes_rate`` set to the yes share of N of its seed records and runs everything on those labels.
``--exclude-ids`` drops a file's records from both sets before scoring (a split a choice was made on).
Writes OUT.json (bench/provenance.py), OUT.md and OUT.png.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from rich.console import Console  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import oracle_labels  # noqa: E402
from provenance import provenance, write_result  # noqa: E402
from stats import bootstrap_ci, f1, paired_bootstrap, read_rate_among  # noqa: E402
from students_report import markdown, plot  # noqa: E402

from assay.distill import baselines as B  # noqa: E402
from assay.distill.base import TrainConfig, make_cache, resolve_base  # noqa: E402
from assay.distill.cascade import cascade  # noqa: E402
from assay.distill.data import load_question_data, split_holdout  # noqa: E402
from assay.distill.evaluate import score_versions  # noqa: E402
from assay.distill.train import torch_threads, train_question  # noqa: E402
from assay.flows.demo import CASCADE_SHARE  # noqa: E402
from assay.labeling.gold import gold_labels  # noqa: E402
from assay.schemas import load_questions  # noqa: E402
from assay.schemas.registry import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "jigsaw"
QUESTIONS = ROOT / "examples" / "questions" / "jigsaw"
console = Console()


def label_run(work: Path, questions, sample: int, fresh: bool, estimated: bool) -> Path:
    """The label run over 4,000 seed records of the pool (made once); ``estimated``: without the questions'
    ``expected_yes_rate``, every class balance estimated by the label model."""
    from assay.labeling.pipeline import label_questions

    out = work / ("label-train-estimated" if estimated else "label-train")
    if estimated:
        questions = [replace(q, spec=q.spec.model_copy(update={"expected_yes_rate": None})) for q in questions]
    if fresh or not (out / "summary.json").is_file():
        label_questions(questions, DATA / "train.parquet", out, sample=sample, progress=True)
    return out


def seed_ids(labels: Path) -> set[str]:
    """The ids of a label run's seed records."""
    return set(pq.read_table(labels / "seed.parquet", columns=["id"]).column("id").cast(pa.string()).to_pylist())


def read_label_run(work: Path, questions, plain: Path, sample: int, read: int, fresh: bool) -> Path:
    """The same seed labelled again, each question stating ``expected_yes_rate`` = the yes share of ``read``
    of its seed records: what a data team does after reading a sample (the product path, not a recombination)."""
    from assay.labeling.pipeline import label_questions

    out = work / f"label-train-read{read}"
    if fresh or not (out / "summary.json").is_file():
        seed = seed_ids(plain)
        stated = []
        for q in questions:
            rate = read_rate_among(gold_labels(DATA / "train.parquet", q.spec.id), seed, read)
            stated.append(replace(q, spec=q.spec.model_copy(update={"expected_yes_rate": rate})))
        label_questions(stated, DATA / "train.parquet", out, sample=sample, progress=True)
        if seed_ids(out) != seed:
            raise SystemExit(f"{out}: the second label run drew another seed than {plain}")
    return out


def eval_sets(labels: Path, qids: list[str]) -> dict[str, dict]:
    """dev and untouched (pool minus seed): ids, texts and gold per question."""
    seed = seed_ids(labels)
    sets = {}
    for name, path, keep in (("dev", DATA / "dev.parquet", lambda i: True),
                             ("untouched", DATA / "train.parquet", lambda i: i not in seed)):
        table = pq.read_table(path, columns=["id", "text"])
        ids = [i for i in table.column("id").cast(pa.string()).to_pylist() if keep(i)]
        text_of = dict(zip(table.column("id").cast(pa.string()).to_pylist(), table.column("text").to_pylist()))
        gold = {}
        for qid in qids:
            g = gold_labels(path, qid)
            label_of = dict(zip(g.column("id").to_pylist(), g.column("label").to_pylist()))
            gold[qid] = np.array([label_of[i] for i in ids], dtype=bool)
        sets[name] = {"ids": ids, "texts": [text_of[i] for i in ids], "gold": gold}
    return sets


def without_records(sets: dict, methods: dict, scores: dict, exclude: set[str]) -> tuple[dict, dict, dict]:
    """The sets, every method's answers and the adapters' scores with the records whose id is in ``exclude``
    dropped from every split (``--exclude-ids``)."""
    keep = {split: np.array([i not in exclude for i in s["ids"]]) for split, s in sets.items()}
    sets = {split: {"ids": [i for i, k in zip(s["ids"], keep[split]) if k],
                    "texts": [t for t, k in zip(s["texts"], keep[split]) if k],
                    "gold": {q: g[keep[split]] for q, g in s["gold"].items()}} for split, s in sets.items()}
    methods = {m: {split: {q: a[keep[split]] for q, a in answers.items()} for split, answers in splits.items()}
               for m, splits in methods.items()}
    scores = {g: {split: {q: (p[keep[split]], t) for q, (p, t) in answers.items()} for split, answers in splits.items()}
              for g, splits in scores.items()}
    return sets, methods, scores


def train_all(questions, labels: Path, registry: Path, cache, lexical_head: bool = True, seed: int = 0) -> dict:
    """One adapter per question (not promoted) with the default settings (``lexical_head`` and ``seed`` aside), on
    the shared lower-layer cache."""
    reg = Registry(registry)
    versions = {}
    for loaded in questions:
        started = time.perf_counter()
        versions[loaded.spec.id] = train_question(loaded, labels, reg, progress=False, cache=cache,
                                                  lexical_head=lexical_head, seed=seed)
        console.print(f"  trained {loaded.spec.id} in {time.perf_counter() - started:.0f} s ({registry.name})")
    return versions


def reuse(work: Path, stamp: str | None, kind: str, qids: list[str]) -> dict | None:
    """The newest versions in WORK/registry-KIND-STAMP (``--reuse STAMP``), or None to train."""
    if not stamp:
        return None
    registry = Registry(work / f"registry-{kind}-{stamp}")
    return {q: registry.versions(q)[-1] for q in qids}


def adapter_scores(groups: dict[str, dict], sets: dict) -> dict[str, dict[str, dict[str, tuple[np.ndarray, float]]]]:
    """{group: {split: {qid: (P(yes), threshold)}}} of adapter versions, through the engine: one pass per group (a
    student and an oracle share question ids and version numbers), every split at once."""
    texts = [t for s in sets.values() for t in s["texts"]]
    out: dict = {}
    for name, group in groups.items():
        scores = score_versions(list(group.values()), texts)
        start = 0
        for split, s in sets.items():
            part = slice(start, start + len(s["texts"]))
            out.setdefault(name, {})[split] = {q: (scores[(v.question_id, v.version)][part], v.threshold)
                                               for q, v in group.items()}
            start += len(s["texts"])
    return out


def baseline_answers(questions, labels: Path, sets: dict, which: list[str], config: TrainConfig,
                     setfit_questions: list[str] | None = None) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """{method: {split: {qid: answers}}}; trained baselines use the student's split and threshold rule.
    SetFit runs on ``setfit_questions`` only (None: all)."""
    embed = B.minilm_embedder(labels / "cache")
    out: dict = {}
    for loaded in questions:
        qid = loaded.spec.id
        data = load_question_data(labels, qid)
        train_index, hold_index = split_holdout(data, config.holdout, config.seed)
        train, hold, prevalence = data.subset(train_index), data.subset(hold_index), float(data.p_yes.mean())
        fitted = [B.keyword_rules(loaded.spec)] if "keyword_rules" in which else []
        for name in ("tfidf_lr", "embedding_lr", "setfit"):
            if name not in which or (name == "setfit" and setfit_questions and qid not in setfit_questions):
                continue
            started = time.perf_counter()
            if name == "tfidf_lr":
                fitted.append(B.fit_tfidf_lr(train, hold, prevalence, config.class_weight, config.seed))
            elif name == "embedding_lr":
                fitted.append(B.fit_embedding_lr(train, hold, prevalence, embed, config.class_weight, config.seed))
            else:
                fitted.append(B.fit_setfit(train, hold, prevalence, class_weight=config.class_weight, seed=config.seed))
            console.print(f"  {qid}: {name} fitted in {time.perf_counter() - started:.0f} s")
        for baseline in fitted:
            for split, s in sets.items():
                out.setdefault(baseline.name, {}).setdefault(split, {})[qid] = baseline.answer(s["texts"])
    return out


def cached_baselines(path: Path, compute) -> dict:
    """Baseline answers from ``path`` (.npz, written by an earlier run on the same label run), else computed
    and saved there."""
    if path.is_file():
        flat = np.load(path)
        out: dict = {}
        for key in flat.files:
            method, split, qid = key.split("|")
            out.setdefault(method, {}).setdefault(split, {})[qid] = flat[key]
        return out
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{m}|{sp}|{q}": a for m, splits in out.items() for sp, qs in splits.items()
                      for q, a in qs.items()})
    return out


def gpt4_answers(sets: dict) -> dict[str, dict]:
    """The recorded GPT-4 answers to is_bad on each split: {split: {"mask": answered, "answers": bool}}."""
    table = pq.read_table(DATA / "teacher_gpt4.parquet", columns=["id", "gpt4_is_bad"])
    answer_of = dict(zip(table.column("id").cast(pa.string()).to_pylist(), table.column(1).to_pylist()))
    return {split: {"mask": np.array([i in answer_of for i in s["ids"]]),
                    "answers": np.array([bool(answer_of.get(i)) for i in s["ids"]])} for split, s in sets.items()}


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the columns (questions) of 2-D label and answer arrays."""
    return float(np.mean([f1(y[:, j], pred[:, j]) for j in range(y.shape[1])]))


def is_bad_cascades(student: dict[str, dict[str, tuple[np.ndarray, float]]], gpt4: dict) -> dict[str, dict]:
    """Per split, the is_bad student with the demo's cascade: its least sure ``CASCADE_SHARE`` of the split's
    records sent to the recorded GPT-4 answers, which replace the student's where GPT-4 answered."""
    out = {}
    for split, scores in student.items():
        p, threshold = scores["is_bad"]
        mask, said = gpt4[split]["mask"], gpt4[split]["answers"]
        result = cascade(p, threshold, CASCADE_SHARE, lambda index, m=mask, a=said: (m[index], a[index]))
        out[split] = {"answers": result.answers, "routed": int(result.routed.sum()),
                      "answered": int(result.answered.sum())}
    return out


def summarise(methods: dict, sets: dict, qids: list[str], gpt4: dict, resamples: int,
              cascades: dict | None = None) -> dict:
    """Per split: F1 with interval per method and question, macro, and student-minus-method paired deltas; for
    is_bad, student (and, given ``cascades``, student + cascade) against GPT-4 on the records GPT-4 answered."""
    out = {}
    for split, s in sets.items():
        y = np.stack([s["gold"][q] for q in qids], axis=1)
        rows = {"records": len(s["ids"]), "positives": {q: int(s["gold"][q].sum()) for q in qids}, "methods": {}}
        student = np.stack([methods["student"][split][q] for q in qids], axis=1)
        for name, answers in methods.items():
            pred = np.stack([answers[split][q] for q in qids], axis=1)
            per_q = {q: dict(zip(("f1", "low", "high"), bootstrap_ci(f1, y[:, j], pred[:, j], n=resamples)))
                     for j, q in enumerate(qids)}
            delta = {q: dict(zip(("delta", "low", "high"), paired_bootstrap(f1, y[:, j], student[:, j], pred[:, j],
                                                                            n=resamples))) for j, q in enumerate(qids)}
            macro = dict(zip(("f1", "low", "high"), bootstrap_ci(macro_f1, y, pred, n=resamples)))
            macro_delta = dict(zip(("delta", "low", "high"), paired_bootstrap(macro_f1, y, student, pred, n=resamples)))
            rows["methods"][name] = {"questions": per_q, "macro": macro, "student_minus": delta,
                                     "macro_student_minus": macro_delta}
        if "is_bad" in qids:
            mask, j = gpt4[split]["mask"], qids.index("is_bad")
            yb, sb, gb = y[mask, j], student[mask, j], gpt4[split]["answers"][mask]
            rows["gpt4_is_bad"] = {"records": int(mask.sum()), "gpt4": bootstrap_ci(f1, yb, gb, n=resamples),
                                   "student": bootstrap_ci(f1, yb, sb, n=resamples),
                                   "student_minus_gpt4": paired_bootstrap(f1, yb, sb, gb, n=resamples)}
            if cascades:
                cb = cascades[split]["answers"][mask]
                rows["gpt4_is_bad"]["cascade"] = {
                    "share": CASCADE_SHARE, "routed": cascades[split]["routed"],
                    "answered": cascades[split]["answered"], "student_cascade": bootstrap_ci(f1, yb, cb, n=resamples),
                    "student_cascade_minus_gpt4": paired_bootstrap(f1, yb, cb, gb, n=resamples)}
        out[split] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "students-vs-baselines",
                        help="label run, registries (reused when present)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "students_vs_baselines")
    parser.add_argument("--sample", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--baselines", default="keyword_rules,tfidf_lr,embedding_lr,setfit")
    parser.add_argument("--setfit-questions", help="comma-separated question ids SetFit runs on (default: all; "
                        "it fine-tunes and re-embeds per question, minutes each on 2 cores)")
    parser.add_argument("--only", help="comma-separated question ids (default: all seven)")
    parser.add_argument("--fresh", action="store_true", help="relabel everything")
    parser.add_argument("--read", type=int, help="label the seed again with each question's expected_yes_rate set to "
                        "the yes share of this many seed records (what a team learns reading them), and train and "
                        "fit everything on those labels")
    parser.add_argument("--estimate-balance", action="store_true", help="drop the bundled questions' "
                        "expected_yes_rate, so the label model estimates every class balance (how the labels were "
                        "made before the questions stated their rates)")
    parser.add_argument("--baselines-only", action="store_true", help="fit the baselines, save their answers in "
                        "WORK/baselines-*.npz (a later run reads them) and stop")
    parser.add_argument("--exclude-ids", type=Path, help="Parquet file with an id column: score without these "
                        "records (e.g. a selection split a choice was made on)")
    parser.add_argument("--no-lexical-head", dest="lexical_head", action="store_false", help="train the students "
                        "and the oracle without the lexical head (the adapter alone, the default before 7 December)")
    parser.add_argument("--seed", type=int, default=0, help="TrainConfig.seed for the students, the oracle and the "
                        "trained baselines alike: their hold-out split, initialisation and shuffling (the label run "
                        "is the same)")
    parser.add_argument("--reuse", help="STAMP of WORK/registry-{student,oracle}-STAMP from an earlier run of the same "
                        "label run: score those adapters instead of training again")
    args = parser.parse_args()
    config = {**vars(args), "train_config": asdict(TrainConfig(seed=args.seed)), "setfit_per_class": B.SETFIT_PER_CLASS,
              "setfit_steps": B.SETFIT_STEPS, "c_grid": B.C_GRID}
    header = provenance(config)
    started = time.perf_counter()
    questions = load_questions(QUESTIONS)
    if args.only:
        questions = [q for q in questions if q.spec.id in args.only.split(",")]
    qids = [q.spec.id for q in questions]
    with torch_threads(args.threads):
        labels = label_run(args.work, questions, args.sample, args.fresh, args.estimate_balance)
        if args.read:
            labels = read_label_run(args.work, questions, labels, args.sample, args.read, args.fresh)
        sets = eval_sets(labels, qids)
        console.print("baselines:")
        setfit_on = args.setfit_questions.split(",") if args.setfit_questions else None
        run_key = hashlib.blake2b((labels / "summary.json").read_bytes(), digest_size=6).hexdigest()  # this label run
        seeded = f"-seed{args.seed}" if args.seed else ""
        fitted = cached_baselines(args.work / f"baselines-{args.baselines.replace(',', '+')}-{run_key}{seeded}.npz",
                                  lambda: baseline_answers(questions, labels, sets, args.baselines.split(","),
                                                           TrainConfig(seed=args.seed), setfit_on))
        if args.baselines_only:
            return
        students, oracles = (reuse(args.work, args.reuse, kind, qids) for kind in ("student", "oracle"))
        if students is None or oracles is None:
            cache = make_cache(resolve_base(questions[0], None), TrainConfig.for_spec(questions[0]))
            stamp = time.strftime("%H%M%S")
            console.print("students:")
            students = train_all(questions, labels, args.work / f"registry-student-{stamp}", cache, args.lexical_head,
                                 args.seed)
            console.print("oracle (gold labels of the same seed):")
            gold_dir = oracle_labels(labels, qids, args.work / "labels-oracle", DATA / "train.parquet")
            oracles = train_all(questions, gold_dir, args.work / f"registry-oracle-{stamp}", cache, args.lexical_head,
                                args.seed)
        scores = adapter_scores({"student": students, "oracle": oracles}, sets)
        methods = {group: {split: {q: p >= threshold for q, (p, threshold) in answers.items()}
                           for split, answers in splits.items()} for group, splits in scores.items()}
        methods.update(fitted)
        if args.exclude_ids:
            exclude = set(pq.read_table(args.exclude_ids, columns=["id"]).column("id").cast(pa.string()).to_pylist())
            sets, methods, scores = without_records(sets, methods, scores, exclude)
    gpt4 = gpt4_answers(sets)
    cascades = is_bad_cascades(scores["student"], gpt4) if "is_bad" in qids else None
    results = summarise(methods, sets, qids, gpt4, args.resamples, cascades)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["promotion"] = {q: v.manifest["metrics"]["holdout"] for q, v in students.items()}
    write_result(args.out.with_suffix(".json"), config, results, header=header)
    args.out.with_suffix(".md").write_text(markdown(results, qids))
    plot(results, qids, args.out.with_suffix(".png"))
    console.print(markdown(results, qids))


if __name__ == "__main__":
    main()
