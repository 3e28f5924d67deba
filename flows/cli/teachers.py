"""`assay teachers check`: before a paid run, check every teacher of a question folder.

For each LLM source: the residency verdict (no connection is opened for a refused endpoint), whether the
API key is set, the price and an estimated cost per 1,000 records; with `--probe`, one request with a
fixed harmless text (never a record) shows latency, the answer and whether log-probabilities come back.
For each local teacher: whether its model folder exists.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from assay.labeling.teacher.prompt import render_prompt
from assay.labeling.teacher.residency import ResidencyError
from assay.labeling.teacher.settings import Settings, SettingsError, load_settings
from assay.schemas import QuestionSpec, QuestionSpecError, load_questions, select
from assay.schemas.questions import LlmSource, LocalLlmSource

if TYPE_CHECKING:
    from assay.labeling.teacher import LlmTeacher

teachers_app = typer.Typer(help="Check the LLM and local teachers of a question folder before a paid run.",
                           no_args_is_help=True)
console = Console()
PROBE_TEXT = "Thanks for fixing the references on this page."
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _probe(teacher: LlmTeacher) -> str:
    """One request with the fixed harmless text (audited like any other send)."""
    start = time.perf_counter()
    request = teacher.prepare("probe", PROBE_TEXT)
    teacher.ledger.sending(request, 1)
    completion = teacher.client().chat.completions.create(**teacher.body(request))
    choice = completion.choices[0]
    logprobs = "with logprobs" if choice.logprobs and choice.logprobs.content else "no logprobs (hard votes)"
    return f"answered {choice.message.content!r} in {time.perf_counter() - start:.2f}s, {logprobs}"


def _check_llm(spec: QuestionSpec, source: LlmSource, settings: Settings, scratch: Path, text_chars: int,
               probe: bool) -> tuple[bool, str, str]:
    """(usable, status, USD per 1k records) of one LLM source; a refused endpoint is never connected to."""
    from assay.labeling.teacher import LlmTeacher, LlmTeacherError  # the openai client: only when checking
    from assay.labeling.teacher.cost import cost_usd, estimate_prompt_tokens
    from assay.labeling.teacher.transport import read_api_key

    estimate, teacher = "-", None
    try:
        teacher = LlmTeacher(spec, source, scratch, settings, progress=False)
        tokens = estimate_prompt_tokens(render_prompt(spec, "x" * text_chars, source.prompt))
        usd = 1000 * cost_usd(teacher.price, tokens, source.max_answer_tokens, source.mode == "batch")
        estimate = f"{usd:.4f}" if teacher.price else "0 (no price: set prices)"
        read_api_key(source)
        return True, _probe(teacher) if probe else "[green]allowed, key set[/green]", estimate
    except (ResidencyError, LlmTeacherError) as error:
        return False, f"[red]{error}[/red]", estimate
    except Exception as error:  # a failed probe: show it (the key blanked), keep checking the others
        return False, f"[red]probe failed: {teacher.describe(error) if teacher else error}[/red]", estimate


@teachers_app.command("check")
def check(folder: Path = typer.Argument(..., help="Folder of question YAML files (or one file)."),
          settings_path: Path | None = typer.Option(None, "--settings", help="assay.yaml (default: $ASSAY_CONFIG "
                                                                               "or ./assay.yaml)"),
          only: str | None = typer.Option(None, "--only", help="Comma-separated question ids."),
          text_chars: int = typer.Option(500, "--text-chars", min=1,
                                         help="Typical record length for the cost estimate."),
          probe: bool = typer.Option(False, "--probe", help="Send one request with a fixed harmless text.")) -> None:
    """Residency, key, price and (optionally) a live probe for every teacher; exit 1 when one is unusable."""
    try:
        settings = load_settings(settings_path)
        questions = select(load_questions(folder), only)
    except (SettingsError, QuestionSpecError, ValueError) as error:
        console.print(f"[red]✗[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    ignored = [name for name in PROXY_VARIABLES if os.environ.get(name)]
    if ignored and not settings.proxy:
        console.print(f"note: {', '.join(ignored)} set but ignored; teachers use a proxy only when assay.yaml names "
                      "one (proxy: ...), checked like an endpoint")
    table = Table(title=f"Teachers in {folder} (residency: {settings.residency})")
    for column in ("question", "source", "endpoint / path", "status", "USD per 1k records"):
        table.add_column(column)
    problems = 0
    with tempfile.TemporaryDirectory() as scratch:
        for spec in (loaded.spec for loaded in questions):
            for source in spec.sources:
                if isinstance(source, LocalLlmSource):
                    ok = Path(source.path).expanduser().is_dir()
                    problems += not ok
                    table.add_row(spec.id, source.name, source.path,
                                  "[green]model folder found[/green]" if ok else "[red]model folder missing[/red]",
                                  "0 (local)")
                elif isinstance(source, LlmSource):
                    ok, status, estimate = _check_llm(spec, source, settings, Path(scratch), text_chars, probe)
                    problems += not ok
                    table.add_row(spec.id, source.name, f"{source.base_url} ({source.model}, {source.mode})", status,
                                  estimate)
    if not table.row_count:
        console.print(f"no llm or local_llm sources in {folder}: nothing to check")
        return
    console.print(table)
    if problems:
        console.print(f"[red]{problems} teacher(s) unusable[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `teachers` command group to the main CLI."""
    app.add_typer(teachers_app, name="teachers")
