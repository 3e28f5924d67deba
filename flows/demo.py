"""The demo: the whole job on the bundled Jigsaw data, through the same Prefect flows production runs.

label (4,000 seed records of train.parquet: recorded GPT-4 answers, rules, embeddings, plus a live LLM
when one is configured) → train seven adapters → evaluate and promote → score dev.parquet with the
multi-LoRA engine (the monthly-batch flow) → label dev.parquet with the same sources → one table on
the same dev records (:mod:`assay.flows.demo_table`): every source alone, majority vote, combined
labels, the student, the baselines, the cascade, the recorded teacher where it answered; speed and
cost. A re-run reuses finished work. The command is `assay demo` (:mod:`assay.flows.cli.demo`).

The bundled data and questions ship inside the package (``assay/examples``, package data), so the
demo runs from an installed wheel as from a checkout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"  # the repo's examples/, or assay/examples
CASCADE_SHARE = 0.05  # share of dev records the student is least sure about sent to the recorded teacher


class DemoDataError(ValueError):
    """The demo's questions or data are not where they were looked for (the message says what to do)."""


def check_inputs(questions: Path, data: Path) -> None:
    """Fail with what to do when the question folder or the data folder is missing."""
    for path, what in ((questions, "question folder"), (data / "train.parquet", "pool"),
                       (data / "dev.parquet", "dev set")):
        if not path.exists():
            raise DemoDataError(f"{path}: the demo's {what} is missing. The assay package ships it under "
                                f"{EXAMPLES}; reinstall the wheel (pip install --force-reinstall assay) or pass "
                                "--questions DIR and --data DIR (a folder with train.parquet and dev.parquet)")


# ---- a live teacher on top of the offline sources ----------------------------------------------
def with_teacher(questions: Path, out: Path, base_url: str, model: str, api_key_env: str) -> Path:
    """Copies of the question files with one more source, an OpenAI-compatible ``llm`` teacher."""
    import yaml

    from assay.schemas import load_questions
    from assay.schemas.loader import resolve

    out.mkdir(parents=True, exist_ok=True)
    for loaded in load_questions(questions):
        data = yaml.safe_load(loaded.path.read_text())
        for source in data["sources"]:
            if source["kind"] in ("labels_file", "local_llm"):
                source["path"] = str(resolve(loaded.path, source["path"]))  # the copies live elsewhere
        data["sources"].append({"kind": "llm", "name": "live_llm", "base_url": base_url, "model": model,
                                "api_key_env": api_key_env})
        (out / loaded.path.name).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return out


# ---- the flow ------------------------------------------------------------------------------------
def read_student_answers(scores: Path) -> pa.Table | None:
    """The students' answers on dev (the batch's Parquet parts), or None when nothing was scored."""
    import pyarrow.parquet as pq

    from assay.flows.report import output_files

    files = output_files(scores)
    return pq.ParquetDataset(files).read() if files else None


def student_scores(registry: Path, trained: dict[str, Any], texts: list[str]) -> tuple[dict[str, Any], float]:
    """P(yes) and threshold of each question's version trained by this run (promoted or not) on ``texts``, and
    the records/s of that one engine pass (every question's adapter in the same batches)."""
    from assay.distill.evaluate import score_versions
    from assay.schemas.registry import Registry

    reg = Registry(registry)
    versions = [reg.get(q, t["version"]) for q, t in trained.items() if t.get("version")]
    started = time.perf_counter()
    scores = score_versions(versions, texts, reg) if versions else {}
    rate = len(texts) / (time.perf_counter() - started) if versions else 0.0
    return {v.question_id: (scores[(v.question_id, v.version)], v.threshold) for v in versions}, rate


def dev_table(questions: Path, out: Path, dev: Path, trained: dict[str, Any], records_per_second: float,
              cascade_share: float, cascade_budget_usd: float | None) -> dict[str, Any]:
    """The one table on the dev records (:mod:`assay.flows.demo_table`) plus speed, cost and the cascade."""
    import pyarrow.parquet as pq

    from assay.flows import demo_table
    from assay.flows.pipeline import label, labels_dir
    from assay.schemas import load_questions

    label(str(questions), str(dev), str(out / "dev"), sample=None)  # every source over every dev record
    loaded = load_questions(questions)
    table = pq.read_table(dev, columns=["id", "text"])
    ids, texts = table.column("id").cast("string").to_pylist(), table.column("text").to_pylist()
    student, measured = student_scores(out / "registry", trained, texts)
    baselines = demo_table.baseline_answers(loaded, labels_dir(out), texts)
    speed = demo_table.speed_and_cost(loaded, texts, records_per_second or measured)
    per_record = speed["teacher"]["usd_per_1000"] / 1000
    cascades = demo_table.cascades(loaded, ids, dev, student, cascade_share, cascade_budget_usd, per_record)
    rows = demo_table.question_rows(loaded, dev, labels_dir(out / "dev"), ids, student, baselines, cascades)
    return {"questions": rows, "speed": speed}


def run_demo(questions: Path, data: Path, out: Path, sample: int = 4000, cascade_share: float = CASCADE_SHARE,
             cascade_budget_usd: float | None = None) -> dict[str, Any]:
    """The demo as one Prefect flow run of the production flows; writes OUT/report.{md,json} and f1.png."""
    from prefect import flow

    from assay.flows.batch import monthly_batch
    from assay.flows.demo_report import markdown, plot_f1
    from assay.flows.pipeline import evaluate_and_promote, label, labels_dir, train

    check_inputs(questions, data)

    @flow(name="demo")
    def demo_flow() -> dict[str, Any]:
        started = time.perf_counter()
        pool, dev, registry = data / "train.parquet", data / "dev.parquet", out / "registry"
        labelled = label(str(questions), str(pool), str(out), sample=sample)
        trained = train(str(questions), str(out), str(registry))
        decided = evaluate_and_promote(str(questions), str(out), str(registry),
                                       versions={q: t["version"] for q, t in trained.items() if t["version"]})
        promoted = any(d.get("current") for d in decided.values())  # the batch serves current adapters only
        batch = monthly_batch(str(registry), str(out / "batch"), input=str(dev), month="dev") if promoted else {}
        summary = dev_table(questions, out, dev, trained, batch.get("records_per_second") or 0.0, cascade_share,
                            cascade_budget_usd)
        for qid, row in summary["questions"].items():
            decision = decided.get(qid, {})
            row["decision"] = decision.get("reason") or f"not trained: {trained[qid].get('error')}"
            row["current"] = bool(decision.get("current"))
        first = next(iter(labelled.values()))
        files = {"label run (votes, labels, diagnostics)": str(labels_dir(out)),
                 "label diagnostics": str(labels_dir(out) / "report" / "README.md"),
                 "sources over dev": str(labels_dir(out / "dev")), "adapter registry": str(registry)}
        if batch:
            files.update({"dev answers (Parquet)": str(batch["output"]),
                          "batch report": str(Path(batch["output"]).parent / "report.md")})
        summary.update({"seed_rows": first["seed_rows"], "pool": str(pool), "dev": str(dev),
                        "dev_records": next(iter(summary["questions"].values()))["records"],
                        "records_per_second": summary["speed"]["student"]["records_per_second"],
                        "batch_ran": bool(batch), "cascade_share": cascade_share,
                        "seconds": time.perf_counter() - started,
                        "files": {**files, "this report": str(out / "report.md")}})
        (out / "report.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        plot_f1(summary["questions"], out / "f1.png")
        (out / "report.md").write_text(markdown(summary))
        return summary

    return demo_flow()
