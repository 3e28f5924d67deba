"""What every GPU check shares: its options, its time budget, guarded cases, timing, the result file.

A check is one process (``bench/gpu/run.sh`` starts each under ``timeout``); it runs named *cases*, each
guarded (an exception is recorded with its traceback and the next case runs) and skipped once the check's
own budget is spent. ``--tiny`` is the CPU dry run: tiny shapes, the Triton kernels interpreted
(``TRITON_INTERPRET=1``, set by run.sh). The result goes to ``OUT/<check>.json`` through
``bench/provenance.py`` (settings, commit, machine, load, and here the GPU and library versions).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bar per model load

ROOT = Path(__file__).resolve().parents[2]
for _extra in (ROOT / "bench", ROOT / "tests"):  # provenance.py; the PEFT adapter builders of the engine tests
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import torch  # noqa: E402
from provenance import provenance, write_result  # noqa: E402

BF16_U = 2.0**-8  # unit roundoff of bfloat16 (8 significand bits): |fl(x) - x| <= u |x|
FP16_U = 2.0**-11  # float16 (11 significand bits)
VERSIONED = ("torch", "triton", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "pyarrow",
             "numpy", "pydantic")


def parse_args(name: str, doc: str, argv: list[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options of every check: ``--out``, ``--budget``, ``--tiny``, ``--device``; plus the check's own."""
    p = argparse.ArgumentParser(prog=f"check_{name}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for <check>.json")
    p.add_argument("--budget", type=float, default=120.0, help="seconds this check may run; later cases are skipped")
    p.add_argument("--tiny", action="store_true", help="CPU dry run: tiny shapes (run.sh sets TRITON_INTERPRET=1)")
    p.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    if extra:
        extra(p)
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    if args.tiny:
        torch.set_num_threads(1)  # tiny shapes gain nothing from threads; on a busy CPU they lose a lot
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"check_{name}: --device cuda but torch sees no CUDA device (use --tiny on a CPU machine)")
    return args


def versions() -> dict[str, str]:
    """Installed versions of the libraries the checks depend on (``missing`` when not installed)."""
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def device_info(device: str) -> dict[str, Any]:
    """The accelerator in words (name, memory, capability, CUDA version) or the CPU."""
    if device != "cuda":
        return {"device": "cpu", "torch_threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(0)
    return {"device": torch.cuda.get_device_name(0), "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, warmup: int = 2, iters: int = 10) -> dict[str, float]:
    """Median and min milliseconds per call of ``fn`` (CUDA events on the GPU, wall clock on CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": times[len(times) // 2], "min_ms": times[0], "iters": iters}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error ``|got - ref| / |ref|`` in float64."""
    ref = ref.double()
    return ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@dataclass
class Check:
    """One check's run: its cases in order, its budget, and its result file."""

    name: str
    args: argparse.Namespace
    started: float = field(default_factory=time.perf_counter)
    cases: list[dict[str, Any]] = field(default_factory=list)
    header: dict[str, Any] | None = None

    @property
    def device(self) -> str:
        return self.args.device

    @property
    def tiny(self) -> bool:
        return self.args.tiny

    def left(self) -> float:
        """Seconds left of this check's budget."""
        return self.args.budget - (time.perf_counter() - self.started)

    def case(self, label: str, fn: Callable[[], dict[str, Any]], needs_s: float = 0.0) -> dict[str, Any] | None:
        """Run ``fn`` as the case ``label``: its dict is recorded with ``ok``/``seconds``; errors are recorded.

        Skipped (recorded as such) when less than ``needs_s`` seconds of the budget are left. A case
        that measures against a criterion puts ``pass: bool`` in its dict.
        """
        if self.left() < needs_s:
            record = {"case": label, "ok": False, "skipped": f"budget: {self.left():.0f} s left, needs {needs_s:.0f}"}
            self.cases.append(record)
            print(f"[{self.name}] SKIP {label}: {record['skipped']}", flush=True)
            return None
        t0 = time.perf_counter()
        try:
            result = fn()
            record = {"case": label, "ok": True, **result}
        except Exception as error:  # noqa: BLE001  (a failing case is recorded, the check goes on)
            record = {"case": label, "ok": False, "error": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc()[-3000:]}
            result = None
        record["seconds"] = round(time.perf_counter() - t0, 2)
        self.cases.append(record)
        self.write({}, complete=False)  # a check killed at its time limit still leaves the cases it finished
        verdict = "FAIL" if not record["ok"] or record.get("pass") is False else "ok"
        print(f"[{self.name}] {verdict} {label} ({record['seconds']} s)"
              + (f": {record['error']}" if "error" in record else ""), flush=True)
        return result

    def write(self, config: dict[str, Any], extra: dict[str, Any] | None = None, complete: bool = True) -> Path:
        """Write ``OUT/<name>.json``: provenance header, the cases so far, summary counts."""
        failed = [c["case"] for c in self.cases if not c.get("skipped") and (not c["ok"] or c.get("pass") is False)]
        results = {
            "check": self.name, "tiny": self.tiny, "complete": complete, **device_info(self.device),
            "versions": versions(), "seconds": round(time.perf_counter() - self.started, 1), "cases": self.cases,
            "n_cases": len(self.cases), "failed": failed,
            "skipped": [c["case"] for c in self.cases if c.get("skipped")],
            **(extra or {}),
        }
        if self.device == "cuda":
            results["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        settings = {**vars(self.args), "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", ""),
                    "source_commit": os.environ.get("ASSAY_COMMIT", ""), **config}  # where the tree has no .git
        if self.header is None:
            self.header = provenance(settings)
        self.header["config"] = {**self.header["config"], **{k: str(v) if isinstance(v, Path) else v
                                                             for k, v in settings.items()}}
        return write_result(self.args.out / f"{self.name}.json", settings, results, header=self.header)

    def finish(self, config: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        """The final ``OUT/<name>.json`` (with the check's settings in ``config``); prints a one-line verdict."""
        path = self.write(config, extra)
        results = json.loads(path.read_text())["results"]
        print(f"[{self.name}] {results['n_cases']} cases, {len(results['failed'])} failed, "
              f"{len(results['skipped'])} skipped in {results['seconds']} s -> {path}", flush=True)
        return path
