"""`assay train` and `assay registry list|show|promote|rollback`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from assay.schemas.registry import AdapterVersion, Registry, RegistryError

console = Console()
registry_app = typer.Typer(help="Inspect adapter versions, promote one, roll back.", no_args_is_help=True)
REGISTRY_OPTION = typer.Option(..., "--registry", help="Adapter registry folder (<question>/<version>/, CURRENT).")


def _fail(error: Exception) -> None:
    console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _when(timestamp: str | None) -> str:
    """``2026-11-23T01:53:17+00:00`` -> ``2026-11-23 01:53`` (UTC)."""
    return (timestamp or "")[:16].replace("T", " ")


def _metric(version: AdapterVersion, split: str, name: str) -> str:
    value = version.metrics.get(split, {}).get(name)
    return "" if value is None else f"{value:.3f}"


@registry_app.command("list")
def list_questions(registry: Path = REGISTRY_OPTION,
                   as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every question in the registry: current version, number of versions, threshold and F1."""
    reg = Registry(registry)
    rows: list[dict[str, Any]] = []
    try:
        for qid in reg.all_questions():
            versions, current = reg.versions(qid), reg.current(qid)
            shown = current or versions[-1]
            rows.append({"question": qid, "current": current.version if current else None,
                         "latest": versions[-1].version, "versions": len(versions),
                         "threshold": shown.threshold, "holdout_f1": shown.metrics.get("holdout", {}).get("f1"),
                         "gold_f1": shown.metrics.get("gold", {}).get("f1"),
                         "created_at": shown.manifest.get("created_at")})
    except RegistryError as error:
        _fail(error)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"registry {registry}")
    for column in ("question", "current", "latest", "versions", "threshold", "held-out F1", "gold F1", "created"):
        table.add_column(column)
    for row in rows:
        fmt = {k: ("" if row[k] is None else f"{row[k]:.3f}") for k in ("threshold", "holdout_f1", "gold_f1")}
        table.add_row(row["question"], "—" if row["current"] is None else str(row["current"]), str(row["latest"]),
                      str(row["versions"]), fmt["threshold"], fmt["holdout_f1"], fmt["gold_f1"],
                      _when(row["created_at"]))
    console.print(table if rows else f"registry {registry}: no adapters yet (train some with `assay train`)")


@registry_app.command("show")
def show(question: str = typer.Argument(..., help="Question id."), registry: Path = REGISTRY_OPTION,
         version: int | None = typer.Option(None, "--version", help="Version to detail (default: current).")) -> None:
    """A question's versions with their metrics, and one version's manifest in detail."""
    reg = Registry(registry)
    try:
        versions = reg.versions(question)
        if not versions:
            raise RegistryError(f"{registry}: no versions of question {question!r} "
                                f"(questions: {', '.join(reg.all_questions()) or 'none'})")
        current = reg.current_version(question)
        detail = reg.get(question, version) if version is not None else (reg.current(question) or versions[-1])
    except RegistryError as error:
        _fail(error)
    table = Table(title=f"{question}: versions")
    for column in ("version", "", "created", "threshold", "held-out F1", "AUC", "gold F1", "AUC", "ECE"):
        table.add_column(column)
    reasons = []
    for item in versions:
        promoted = item.manifest.get("promoted") or {}
        table.add_row(str(item.version), "current" if item.version == current else "",
                      _when(item.manifest.get("created_at")), f"{item.threshold:.3f}",
                      _metric(item, "holdout", "f1"), _metric(item, "holdout", "auc"), _metric(item, "gold", "f1"),
                      _metric(item, "gold", "auc"), _metric(item, "gold", "ece"))
        reason = promoted.get("reason") or item.manifest.get("decision")
        if reason:
            reasons.append(f"v{item.version}: {reason}")
    console.print(table)
    for line in reasons:
        console.print(line, highlight=False, soft_wrap=True)
    info = Table(title=f"{question} v{detail.version} — {detail.path}", show_header=False)
    for key in ("spec_version", "base_model", "base_model_sha256", "max_length", "threshold", "created_at"):
        info.add_row(key, str(detail.manifest.get(key, "")))
    for key in ("training", "sources", "promoted"):
        info.add_row(key, json.dumps(detail.manifest.get(key), default=str))
    console.print(info)


@registry_app.command("promote")
def promote(question: str = typer.Argument(..., help="Question id."),
            version: int = typer.Argument(..., help="Version to make current."),
            registry: Path = REGISTRY_OPTION) -> None:
    """Make a version current by hand (running scorers pick it up on reload)."""
    try:
        previous = Registry(registry).current_version(question)
        Registry(registry).promote(question, version, reason="promoted by hand (assay registry promote)")
    except RegistryError as error:
        _fail(error)
    console.print(f"[green]✓[/green] {question}: current version {previous if previous is not None else 'none'}"
                  f" → {version}", highlight=False)


@registry_app.command("rollback")
def rollback(question: str = typer.Argument(..., help="Question id."), registry: Path = REGISTRY_OPTION) -> None:
    """Make the previously current version current again."""
    try:
        reg = Registry(registry)
        previous = reg.current_version(question)
        restored = reg.rollback(question, reason="rolled back by hand (assay registry rollback)")
    except RegistryError as error:
        _fail(error)
    console.print(f"[green]✓[/green] {question}: rolled back from version {previous} to {restored.version}",
                  highlight=False)


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.3f}"


def train(
    questions: Path = typer.Option(..., "--questions", help="Folder of question YAML files (or one file)."),
    labels: Path = typer.Option(..., "--labels", help="Label run folder written by `assay label --out DIR`."),
    registry: Path = typer.Option(..., "--registry", help="Adapter registry folder (created if missing)."),
    only: str | None = typer.Option(None, "--only", help="Comma-separated question ids to train (default: all)."),
    base: Path | None = typer.Option(None, "--base", help="Base model folder (default: the spec's, else MiniLM)."),
    gold: Path | None = typer.Option(None, "--gold", help="Gold file (id, text, a 0/1 column per question) to "
                                                          "evaluate on and compare versions with."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override the number of epochs."),
    top_layers: int | None = typer.Option(None, "--top-layers", min=1, help="Adapt only the top N layers."),
    max_length: int | None = typer.Option(None, "--max-length", min=8, help="Token limit in training (default 128)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (cuda: 4-bit QLoRA for bases over 2 GiB)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: all cores)."),
    threshold_rule: str | None = typer.Option(None, "--threshold-rule", help="prevalence (default: yes rate on the "
                                              "hold-out = the labels' estimated prevalence) or f1 (maximise "
                                              "held-out F1 on the soft labels)."),
    lexical_head: bool = typer.Option(True, "--lexical-head/--no-lexical-head",
                                      help="Fuse a TF-IDF + LR head with each adapter (default; see docs/QUALITY.md)."),
) -> None:
    """Distil one LoRA adapter per question from the label run, evaluate it, promote it if good enough."""
    from assay.distill.data import LabelsError
    from assay.distill.train import train_questions
    from assay.schemas.loader import QuestionSpecError, load_questions

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device must be cpu or cuda, not {device!r}")
    if threshold_rule not in (None, "prevalence", "f1"):
        raise typer.BadParameter(f"--threshold-rule must be prevalence or f1, not {threshold_rule!r}")
    wanted = [q.strip() for q in only.split(",") if q.strip()] if only else None
    try:
        loaded = load_questions(questions)
        results = train_questions(loaded, labels, registry, base=base, gold_path=gold, only=wanted, epochs=epochs,
                                  top_layers=top_layers, max_length=max_length, device=device, threads=threads,
                                  threshold_rule=threshold_rule, lexical_head=lexical_head)
    except (QuestionSpecError, LabelsError, RegistryError, KeyError, ValueError, OSError) as error:
        _fail(error)
    table, notes = _results_table(results, registry)
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    failed = [r.question_id for r in results if r.error]
    if failed:
        console.print(f"[red]✗[/red] {len(failed)} question(s) not trained: {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)


def _results_table(results: list, registry: Path) -> tuple[Table, list[str]]:
    """The end-of-run table (one row per question) and the notes under it (decisions, warnings, errors)."""
    with_gold = any("gold" in r.metrics for r in results)
    table = Table(title=f"assay train → {registry}")
    for column in ("question", "ver", "records", "thresh", "held-out F1", "AUC",
                   *(("gold F1", "AUC", "ECE") if with_gold else ()), "time", "outcome"):
        table.add_column(column)
    notes = []
    for result in results:
        if result.version is None:
            table.add_row(result.question_id, *[""] * (7 if with_gold else 4), f"{result.seconds:.0f}s", "[red]failed")
            notes.append(f"[red]✗[/red] {result.question_id}: {result.error}")
            continue
        hold, gold_m = result.metrics.get("holdout", {}), result.metrics.get("gold", {})
        training = result.version.manifest["training"]
        gold_cells = (_fmt(gold_m.get("f1")), _fmt(gold_m.get("auc")), _fmt(gold_m.get("ece"))) if with_gold else ()
        table.add_row(result.question_id, str(result.version.version),
                      str(training["records"] + training["holdout_records"]), _fmt(result.version.threshold),
                      _fmt(hold.get("f1")), _fmt(hold.get("auc")), *gold_cells, f"{result.seconds:.0f}s",
                      "[green]promoted" if result.decision.promoted else "kept")
        notes.append(f"{'[green]✓[/green]' if result.decision.promoted else '·'} {result.question_id} "
                     f"v{result.version.version}: {result.decision.reason}")
        notes += [f"[yellow]![/yellow] {result.question_id}: {w}" for w in result.version.manifest.get("warnings", [])]
    return table, notes


def register(app: typer.Typer) -> None:
    """Add `train` and `registry` to the main CLI."""
    app.command("train")(train)
    app.add_typer(registry_app, name="registry")
