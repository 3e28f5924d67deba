"""The one `assay` command: each module of this package adds one command group through `register(app)`."""

from __future__ import annotations

import importlib
import logging
import os
import warnings

import typer

COMMAND_MODULES = (  # one module per command group, in the order `assay --help` lists them
    "assay.flows.cli.questions",
    "assay.flows.cli.demo",
    "assay.flows.cli.label",
    "assay.flows.cli.teachers",
    "assay.flows.cli.ops",
    "assay.flows.cli.score",
    "assay.flows.cli.stream",
    "assay.flows.cli.train",
)

# Prefect: a temporary local server starts when PREFECT_API_URL is unset; give it time on a busy machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(help="Assay: distil a teacher LLM into cheap, private yes/no classifiers.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console-script entry point (offline by default: nothing is fetched from a model hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes (imported by PEFT) warns on CPU that the optional `kernels` package is missing; 4-bit
    # CPU kernels are never used here, so the warning is noise in every command's output.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # PEFT still calls a transformers method that transformers 5 deprecates: not the user's concern.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    app()
