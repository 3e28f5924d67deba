"""The multi-LoRA engine against the strongest baselines and against this CPU's own matmul limit.

In ONE process run, on the same records (the first ``--records`` of ``examples/data/jigsaw/train.parquet``),
the same adapters (the bundled MiniLM, rank-8 PEFT LoRA on ``query, key, value, dense`` with random
non-zero weights, saved and promoted in a real registry, built by ``tests/engine_fixtures.make_adapter``),
the same max length, dtype (fp32) and torch threads, each method after a warm-up, at each depth
(top 1 / top 2 / all 6 layers) and adapter count (``--adapters``, default 1 7 32):

* the engine (``Scorer.score_texts``, what ``assay score`` runs), and the engine with its LoRA stacks
  switched off (same fan-out, no LoRA math: what the LoRA products cost);
* the baselines of ``bench/engine_baselines.py``: (1) PEFT one adapter at a time, (2) PEFT mixed batches,
  (3) PEFT on cached lower layers, (4) one merged model per question, all length-sorted under the
  engine's token budget; (5) the base alone (the floor).

Reported, on process CPU seconds and on the wall-clock: records x questions per second (median of
``--repeats``, method order rotated per repeat, with the min-max spread), the engine's ratio to the
strongest of 1-4 (per repeat), max |dP| of every method against the engine, the LoRA overhead per adapter
against the base alone (``(t_engine / t_base - 1) / adapters``), and MFU: the FLOPs the engine must do
(``bench/flops.py``, real token counts) over its time, against the best ``F.linear`` rate at the engine's
shapes measured at the start of the same run and around every engine run. ``--cell-work`` bounds each
cell's work so one invocation per depth stays near 10 minutes on the 2-core machine when it is quiet:

    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_engine.py --depths top1 --threads 1 \\
        --out bench/results/engine_top1.json
    .venv/bin/python bench/bench_engine.py --records 24 --adapters 1 3 --depths top1 --repeats 1   # smoke
    .venv/bin/python bench/bench_engine.py --replot bench/results/engine_top1.json               # redraw the PNG
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pyarrow.parquet as pq
import torch
from rich.console import Console
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the PEFT adapter builders the engine tests use
sys.path.insert(0, str(ROOT / "bench"))

import engine_baselines as bl  # noqa: E402
import engine_report  # noqa: E402
import flops  # noqa: E402
from engine_fixtures import make_adapter, minilm, publish  # noqa: E402
from provenance import provenance, write_result  # noqa: E402

from assay.distill.cache import CACHE_BATCH_TOKENS  # noqa: E402
from assay.engine.batching import encode  # noqa: E402
from assay.engine.scorer import CHUNK_ROWS, DEFAULT_BATCH_TOKENS, Scorer  # noqa: E402
from assay.schemas.registry import Registry  # noqa: E402

RECORDS = ROOT / "examples" / "data" / "jigsaw" / "train.parquet"
JIGSAW = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate", "is_bad")
TARGETS = ["query", "key", "value", "dense"]
DEPTHS = {"top1": [5], "top2": [4, 5], "full": None}  # layers_to_transform of MiniLM's 6 layers
BASELINES = ("peft_one_at_a_time", "peft_mixed", "peft_shared_lower", "merged_per_question")
ENGINE_VARIANTS = ("engine_lora_off", "engine_all_queries", "engine_whole_last_layer")
METHODS = ("engine", *ENGINE_VARIANTS, *BASELINES, "base_alone")
console = Console(stderr=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=64, help="first N records of train.parquet")
    p.add_argument("--cell-work", type=int, default=448,
                   help="at most this many records x questions per cell: a cell of K adapters scores the first "
                        "max(8, min(records, cell-work / K)) records (every method the same ones)")
    p.add_argument("--adapters", type=int, nargs="+", default=[1, 7, 32], help="adapter counts to measure")
    p.add_argument("--depths", nargs="+", choices=list(DEPTHS), default=["top1"])
    p.add_argument("--methods", nargs="+", choices=METHODS,
                   default=[m for m in METHODS if m != "engine_whole_last_layer"],
                   help="the engine always runs; engine_* are the engine with one optimisation undone")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of every method (order rotated)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, every method")
    p.add_argument("--max-length", type=int, default=128, help="token limit (the adapters' training length)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS, help="token budget, every method")
    p.add_argument("--warmup-records", type=int, default=16)
    p.add_argument("--matmul-rows", type=int, nargs="+", default=[512, 2048, 8192],
                   help="rows of the F.linear shapes timed for the machine's rate")
    p.add_argument("--profile", type=Path, default=None, help="write a torch.profiler table per engine run here")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engine_baselines.json")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the figures (default: --out with .png)")
    p.add_argument("--replot", type=Path, default=None, help="only redraw the PNG of this existing result file")
    return p.parse_args(argv)


def question_ids(count: int) -> list[str]:
    """The 7 Jigsaw question ids, then ``extra_07``, ``extra_08`` ... up to ``count``."""
    return [*JIGSAW[:count], *(f"extra_{i:02d}" for i in range(len(JIGSAW), count))]


def build_adapters(root: Path, base: Path, depth: str, count: int, args: argparse.Namespace) -> dict[str, Path]:
    """``count`` PEFT adapters at ``depth``, saved and promoted in a real registry under ``root``."""
    paths = {}
    for seed, qid in enumerate(tqdm(question_ids(count), desc=f"building {count} {depth} adapters", leave=False)):
        adapter = make_adapter(base, root / "adapters" / qid, seed=seed, rank=args.rank, target_modules=TARGETS,
                               layers_to_transform=DEPTHS[depth])
        paths[qid] = publish(root / "registry", qid, 1, adapter, base, max_length=args.max_length)
    return paths


@contextmanager
def engine_variant(scorer: Scorer, variant: str):
    """The engine as shipped (``""``), or with one optimisation undone, for before/after figures in one run:
    ``lora_off`` removes every LoRA stack (fan-out and heads unchanged: what the LoRA math costs),
    ``all_queries`` runs BERT's last-layer attention for every token's query, ``whole_last_layer`` runs the
    last layer at every token (``pooled_only`` off)."""
    model = scorer.model
    stacks = {path: w.stack for path, w in model.wrapped.items()}
    if variant == "lora_off":
        for wrapper in model.wrapped.values():
            wrapper.stack = None
    model.first_query_only = variant not in ("all_queries", "whole_last_layer")
    model.pooled_only = variant != "whole_last_layer"
    try:
        yield
    finally:
        for path, stack in stacks.items():
            model.wrapped[path].stack = stack
        model.first_query_only = model.pooled_only = True


def engine_method(scorer: Scorer, qids: list[str], variant: str = "") -> Callable[[bl.Workload], tuple]:
    """The engine (or a variant, see :func:`engine_variant`) as ``work -> (P, seconds)``."""
    def run(work: bl.Workload) -> tuple[np.ndarray, bl.Clock]:
        with engine_variant(scorer, variant), bl.Clock() as clock:
            probs = scorer.score_texts(work.texts)
        return np.stack([probs[q] for q in qids], 1), clock
    return run


def methods_for(k_qids: list[str], scorer: Scorer, ctx: dict, layer: int, wanted: list[str],
                merged_setup: dict[str, float]) -> dict[str, Callable[[bl.Workload], tuple]]:
    """The chosen methods (the engine always) as ``work -> (P, seconds)`` for the questions ``k_qids``;
    the merged baseline's merge seconds go to ``merged_setup``."""
    peft, base_model, cache_model, paths = ctx["peft"], ctx["base_model"], ctx["cache_model"], ctx["paths"]

    def merged(work: bl.Workload) -> tuple[np.ndarray, bl.Clock]:
        p, scoring, merging = bl.merged_per_question(base_model, paths, work, k_qids)
        merged_setup["merge_s"] = merging.wall
        return p, scoring

    all_methods = {
        "engine": engine_method(scorer, k_qids),
        "engine_lora_off": engine_method(scorer, k_qids, "lora_off"),
        "engine_all_queries": engine_method(scorer, k_qids, "all_queries"),
        "engine_whole_last_layer": engine_method(scorer, k_qids, "whole_last_layer"),
        "peft_one_at_a_time": lambda w: bl.peft_one_at_a_time(peft, w, k_qids),
        "peft_mixed": lambda w: bl.peft_mixed(peft, w, k_qids),
        "peft_shared_lower": lambda w: bl.peft_shared_lower(peft, cache_model, w, k_qids, layer),
        "merged_per_question": merged,
        "base_alone": lambda w: bl.base_alone(base_model, w),
    }
    return {name: fn for name, fn in all_methods.items() if name in wanted or name == "engine"}


def time_methods(methods: dict, work: bl.Workload, repeats: int, warmup: int) -> tuple[dict, dict, dict]:
    """Wall-clock and CPU seconds per repeat of every method (warm-up first, order rotated each repeat),
    and its last P(yes)."""
    names = list(methods)
    for name in names:
        methods[name](work.subset(warmup))
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    probs: dict[str, np.ndarray] = {}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in tqdm(order, desc=f"repeat {r + 1}/{repeats}", leave=False):
            probs[name], clock = methods[name](work)
            wall[name].append(clock.wall)
            cpu[name].append(clock.cpu)
    return wall, cpu, probs


def with_probe(run: Callable[[bl.Workload], tuple], shape: dict, probes: list[dict[str, float]]) -> Callable:
    """``run`` with the matmul rate at ``shape`` measured just before and after it (the mean goes to ``probes``)."""
    def probed(work: bl.Workload) -> tuple:
        before = flops.probe_rate(shape)
        result = run(work)
        after = flops.probe_rate(shape)
        probes.append({clock: (before[clock] + after[clock]) / 2 for clock in before})
        return result
    return probed


def cell_records(k: int, args: argparse.Namespace) -> int:
    """Records a cell of ``k`` adapters scores: bounded work per cell (see ``--cell-work``)."""
    return min(args.records, max(8, args.cell_work // k))


def measure(depth: str, k: int, ctx: dict, args: argparse.Namespace) -> dict:
    """One (depth, adapter count) cell: timings, ratios, parity, FLOPs and MFU."""
    qids = question_ids(k)
    scorer = Scorer.from_registry(Registry(ctx["root"] / "registry"), questions=qids,
                                  batch_tokens=args.batch_tokens, max_length=args.max_length)
    fan = scorer.model.fan_stage
    merged_setup = {"merge_s": 0.0}
    methods = methods_for(qids, scorer, ctx, fan, args.methods, merged_setup)
    probes: list[dict[str, float]] = []
    methods["engine"] = with_probe(methods["engine"], ctx["best_shape"], probes)
    n = cell_records(k, args)
    work, lengths = ctx["work"].subset(n), ctx["lengths"][:n]
    wall, cpu, probs = time_methods(methods, work, args.repeats, args.warmup_records)
    row = {"depth": depth, "adapters": k, "records": n, "tokens": int(sum(lengths)), "fan_stage": fan,
           "max_abs_dp": {m: float(np.abs(probs[m] - probs["engine"]).max()) for m in probs
                          if m in BASELINES or m == "engine"},
           "merge_s": merged_setup["merge_s"]}
    counts = flops.engine_flops(lengths, scorer.model.config, scorer.model.arch,
                                list(scorer.model.adapters.values()), fan)
    row["flops"] = counts
    row["base_flops"] = flops.base_flops(lengths, scorer.model.config)
    padded = [b.input_ids.shape[1] for b in work.batches(copies=k) for _ in b.indices]  # the engine's batches
    row["engine_padded_tokens"] = int(sum(padded))
    row["flops_executed"] = flops.engine_flops(padded, scorer.model.config, scorer.model.arch,
                                               list(scorer.model.adapters.values()), fan)["total"]
    for clock, seconds in (("wall", wall), ("cpu", cpu)):  # the figures on both clocks
        row[clock] = engine_report.figures(seconds, n, k, counts["total"], row["base_flops"], BASELINES,
                                           ctx["peak"][clock], [p[clock] for p in probes[-args.repeats:]])
    if args.profile:
        row["profile"] = engine_report.profile(methods["engine"], work, args.profile / f"engine_{depth}_{k}.txt")
    del scorer
    return row


def setup(args: argparse.Namespace) -> dict:
    """Records, tokenizer, token statistics and the matmul rates: shared by every cell."""
    base = minilm()
    texts = pq.read_table(RECORDS, columns=["text"]).slice(0, args.records).column("text").to_pylist()
    probe = Scorer(base, batch_tokens=args.batch_tokens, max_length=args.max_length)
    work = bl.Workload(texts, probe.tokenizer, args.max_length, args.batch_tokens, probe.pad_id)
    encoded = encode(probe.tokenizer, texts, args.max_length)
    lengths = [len(ids) for ids in encoded.ids]
    rates = flops.matmul_rates(probe.model.config, args.matmul_rows)
    ctx = {"base": base, "work": work, "lengths": lengths, "truncated": encoded.truncated, "rates": rates,
           "peak": {clock: max(r[f"gflops_{clock}"] for r in rates) for clock in ("wall", "cpu")},
           "config": probe.model.config, "best_shape": max(rates, key=lambda r: r["gflops_cpu"])}
    ctx["token_stats"] = engine_report.token_stats(lengths, work, encoded.truncated)
    del probe
    return ctx


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    header = provenance(effective_config(args))
    ctx = setup(args)
    cells = []
    for depth in args.depths:
        with tempfile.TemporaryDirectory() as folder:
            ctx["root"] = Path(folder)
            ctx["paths"] = build_adapters(ctx["root"], ctx["base"], depth, max(args.adapters), args)
            ctx["base_model"] = bl.load_base(ctx["base"])
            ctx["cache_model"] = bl.load_base(ctx["base"])
            ctx["peft"] = bl.load_peft(ctx["base"], ctx["paths"])
            for k in sorted(args.adapters):
                cells.append(measure(depth, k, ctx, args))
                console.print(engine_report.cell_line(cells[-1]))
                results = {"matmul_rates": ctx["rates"], "peak_gflops": ctx["peak"],
                           "token_stats": ctx["token_stats"], "cells": cells, "complete": False}
                write_result(args.out, effective_config(args), results, header)  # after every cell
            del ctx["peft"]
    results["complete"] = True
    write_result(args.out, effective_config(args), results, header)
    return results


def effective_config(args: argparse.Namespace) -> dict:
    """Every setting in effect: the arguments and the library defaults the run relies on."""
    return {**vars(args), "torch_threads": torch.get_num_threads(), "dtype": "float32", "device": "cpu",
            "records_file": str(RECORDS), "lora_targets": TARGETS, "lora_alpha": 2 * args.rank, "lora_std": 0.05,
            "layers_to_transform": {d: DEPTHS[d] for d in args.depths}, "engine_share_lower": True,
            "engine_pooled_only": True, "engine_chunk_rows": CHUNK_ROWS, "cache_batch_tokens": CACHE_BATCH_TOKENS,
            "base": str(minilm())}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.replot:
        results = json.loads(args.replot.read_text())["results"]
        engine_report.plot(results, args.plot or args.replot.with_suffix(".png"))
        return results
    if args.repeats < 1 or args.records < 1 or min(args.adapters) < 1:
        raise SystemExit("--repeats, --records and --adapters must be >= 1")
    results = run(args)
    markdown = engine_report.markdown(results, args)
    print(markdown)
    args.out.with_suffix(".md").write_text(markdown + "\n")
    engine_report.plot(results, args.plot or args.out.with_suffix(".png"))
    return results


if __name__ == "__main__":
    main()
