"""The short Markdown summary of a bench/gpu/run.sh run: what ran, the goals, the figures, the failures.

    python bench/gpu/summarize.py OUT_DIR --status "kernels=0 parity=0 ..."    # run.sh calls this
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CHECKS = ("kernels", "parity", "qlora", "score", "engine")
TOLERANCES = """\
**Tolerances.** Kernels: u is the unit roundoff (bf16 2^-8, fp16 2^-11). Products of bf16/fp16 operands are
exact in fp32 and the kernels accumulate in fp32, so the shrink result y may differ from the fp32 reference
only by summation order (~sqrt(K) 2^-24, 4e-6 at K=5120): bound 2^-13. The output is rounded twice — y to the
operand dtype before the expand product (<= u per term; independent signs give ~u/sqrt(3) of the delta) and
the stored result (<= u) — so out must be within 2u (bf16 7.8e-3, fp16 9.8e-4), relative Frobenius error
against the torch backend in fp32 on the same rounded inputs (TF32 off). Models: bf16 P(yes) must be within
3 x (PEFT's own bf16 error against PEFT fp32, max over the adapters) + 1e-3 of PEFT fp32; fp32 within 1e-4;
a zeroed-LoRA control must move P(yes) by more than 10x the bf16 tolerance. On the 7B shape (32 bf16 layers)
engine-vs-PEFT and one-record-vs-batch P(yes) use a coarse 0.05."""


def load(out: Path) -> dict[str, dict[str, Any]]:
    docs = {}
    for name in CHECKS:
        path = out / f"{name}.json"
        if path.is_file():
            docs[name] = json.loads(path.read_text())
    return docs


def cases(doc: dict | None) -> dict[str, dict[str, Any]]:
    return {c["case"]: c for c in (doc or {}).get("results", {}).get("cases", [])}


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def status_lines(docs: dict, status: dict[str, str]) -> list[str]:
    meaning = {"0": "ran", "124": "**killed at its time limit**", "137": "**killed at its time limit**",
               "skipped": "**skipped: total budget spent**"}
    lines = ["| check | process | cases | failed | skipped | seconds |", "|---|---|---:|---:|---:|---:|"]
    for name in CHECKS:
        r = docs.get(name, {}).get("results", {})
        rc = status.get(name, "not run")
        lines.append(f"| {name} | {meaning.get(rc, f'**exit {rc}**')} | {r.get('n_cases', '—')} | "
                     f"{len(r.get('failed', [])) if r else '—'} | {len(r.get('skipped', [])) if r else '—'} | "
                     f"{r.get('seconds', '—')} |")
    return lines


def goal_lines(docs: dict) -> list[str]:
    k, p, q, s, e = (cases(docs.get(n)) for n in CHECKS)
    kernel_cases = [c for c in k.values() if "pass" in c]
    full8 = e.get("engine, 8 full-depth adapters", {})
    shared = e.get("shared lower layers, 8 top-quarter adapters", {})
    parity = p.get("engine vs PEFT, bf16 and fp32", {})
    trained, trip = q.get(next((n for n in q if "training steps" in n), ""), {}), q.get(
        "saved adapter: PEFT format, engine = PEFT", {})
    score = next((c for n, c in s.items() if "second run" in n), {})
    rows = [
        ("kernels within tolerance everywhere", f"{sum(c['pass'] for c in kernel_cases)}/{len(kernel_cases)} cases",
         bool(kernel_cases) and all(c["pass"] for c in kernel_cases)),
        ("LoRA overhead <= 5 % at 8 adapters", fmt(full8.get("lora_overhead"), "+.1%"),
         full8.get("goal_overhead_le_5pct")),
        ("MFU >= 60 % (8 adapters, vs measured peak)", fmt(full8.get("mfu"), ".1%"), full8.get("goal_mfu_ge_60pct")),
        ("shared lower layers >= 2.5x (8 top-quarter adapters)", fmt(shared.get("speedup"), ".2f") + "x",
         shared.get("goal_speedup_ge_2_5")),
        ("engine = PEFT in bf16 (small Llama)", "worst error / tolerance " + fmt(max(
            (v["engine_bf16_vs_peft_fp32"] / v["tolerance"] for v in parity.get("adapters", {}).values()),
            default=None), ".2f"), parity.get("pass")),
        ("QLoRA: loss goes down", f"{fmt(trained.get('first5_mean'))} -> {fmt(trained.get('last5_mean'))}",
         trained.get("pass")),
        ("QLoRA adapter: PEFT format, engine = PEFT", fmt(trip.get("engine_bf16_vs_peft_fp32")), trip.get("pass")),
        ("assay score end to end (second run)", f"{fmt(score.get('records_per_s'))} records/s", score.get("pass")),
    ]
    return ["| goal | measured | met |", "|---|---:|---|"] + [f"| {g} | {m} | {fmt(ok)} |" for g, m, ok in rows]


def kernel_lines(doc: dict | None) -> list[str]:
    lines = ["| case | dispatch | out err (bound) | y err | SGMV ms | BGMV ms | torch ms | x torch | pass |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, c in cases(doc).items():
        if "sgmv_ms" not in c:
            picks = "; ".join(f"{k.split('_')[0]}-row segments: {'/'.join(v)}"
                              for k, v in c.items() if k.endswith("_picked"))
            lines.append(f"| {name} | {c.get('error') or c.get('skipped') or picks} |||||||| "
                         f"{fmt(c.get('pass', c.get('ok')))} |")
            continue
        y = max(c["sgmv_y_err"], c["bgmv_y_err"])
        out = max(c["auto_out_err"], c["sgmv_out_err"], c["bgmv_out_err"])
        lines.append(f"| {name} | {'/'.join(c['dispatch_picked'])} | {out:.2e} ({c['out_bound']:.1e}) | {y:.1e} | "
                     f"{c['sgmv_ms']:.3f} | {c['bgmv_ms']:.3f} | {c['torch_ms']:.3f} | {c['speedup_vs_torch']:.1f} | "
                     f"{fmt(c['pass'])} |")
    return lines


def engine_lines(doc: dict | None) -> list[str]:
    e = cases(doc)
    lines = ["| case | figures |", "|---|---|"]
    keys = ("peak_tflops", "parameters", "call_seconds", "records_x_questions_per_s", "max_abs_dp",
            "engine_vs_peft_speedup", "lora_overhead", "mfu", "base_records_per_s", "speedup", "ideal_speedup",
            "first_adapted_layer",
            "one_record_kernel_calls", "batch_kernel_calls", "max_abs_dp_alone_vs_in_batch", "peak_memory_gib")
    for name, c in e.items():
        figures = [f"{key} {fmt(c[key])}" for key in keys if key in c]
        if name == "base alone":
            figures += [f"{rows}: {fmt(v['tokens_per_s'], ',.0f')} tok/s, MFU {fmt(v['mfu'], '.1%')}"
                        for rows, v in c.items() if isinstance(v, dict)]
        if "error" in c or "skipped" in c:
            figures = [f"**{c.get('error') or c.get('skipped')}**"]
        lines.append(f"| {name} | {'; '.join(figures)} |")
    return lines


def model_lines(docs: dict) -> list[str]:
    lines = []
    parity = cases(docs.get("parity")).get("engine vs PEFT, bf16 and fp32", {})
    for qid, v in parity.get("adapters", {}).items():
        lines.append(f"- parity `{qid}`: engine bf16 vs PEFT fp32 {v['engine_bf16_vs_peft_fp32']:.2e} (tolerance "
                     f"{v['tolerance']:.2e}; PEFT bf16 {v['peft_bf16_vs_fp32']:.2e}); engine fp32 "
                     f"{v['engine_fp32_vs_peft_fp32']:.1e}")
    for name, c in cases(docs.get("qlora")).items():
        if "losses" in c:
            lines.append(f"- QLoRA {name}: 4-bit {fmt(c['quantized_4bit'])}, Linear4bit modules "
                         f"{c['linear4bit_modules']}, loss {c['losses'][0]:.3f} -> {c['losses'][-1]:.3f}")
        elif "p_4bit_model_vs_engine_bf16" in c:
            lines.append(f"- QLoRA round trip: engine bf16 vs PEFT fp32 {c['engine_bf16_vs_peft_fp32']:.2e} "
                         f"(tolerance {c['tolerance']:.2e}); the 4-bit model itself differs by "
                         f"{c['p_4bit_model_vs_engine_bf16']:.2e}")
    for name, c in cases(docs.get("score")).items():
        if "records_per_s" in c:
            lines.append(f"- {name}: {fmt(c['records_per_s'])} records/s, {fmt(c['records_x_questions_per_s'])} "
                         f"records x questions/s, {c['records']} records, command {c['command_wall_s']:.1f} s, "
                         f"ran as {c['ran_as']}")
    return lines


def failure_lines(docs: dict) -> list[str]:
    lines = []
    for name in CHECKS:
        for case in cases(docs.get(name)).values():
            if "error" in case:
                lines.append(f"- {name} / {case['case']}: `{case['error'][:300]}`")
            elif case.get("pass") is False:
                lines.append(f"- {name} / {case['case']}: criterion not met")
    return lines or ["- none"]


def header(docs: dict, status: dict[str, str], elapsed: str, total: str) -> list[str]:
    first = next(iter(docs.values()), {})
    r = first.get("results", {})
    versions = ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
    device = r.get("device", "?") + (f" ({r['memory_gib']} GiB, sm {r['capability']}, CUDA {r['cuda']})"
                                     if "capability" in r else "")
    commit = first.get("commit") or (first.get("config", {}).get("source_commit", "?") + " (ASSAY_COMMIT)")
    mode = ("CPU dry run (--tiny: tiny shapes, Triton interpreted; figures are not GPU figures, and the goals "
            "(overhead, MFU, shared layers) only mean something on the GPU shapes)") if r.get("tiny") else "GPU run"
    return [f"# GPU checks (issue 15): {mode}", "",
            f"Device: {device}. Commit {commit}, started {first.get('started', '?')}; checks took "
            f"{elapsed} s of a {total} s budget; load average at start {first.get('load_average_at_start', '?')}. "
            f"Versions: {versions}.", "",
            "Command: `bench/gpu/run.sh" + (" --tiny" if r.get("tiny") else "") + " OUT`; per-check JSON in OUT "
            "(settings, commit, machine, every case)."]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--status", default="", help="'check=exit code ...' from run.sh")
    p.add_argument("--elapsed", default="?")
    p.add_argument("--total", default="?")
    args = p.parse_args(argv)
    docs = load(args.out)
    status = dict(item.split("=", 1) for item in args.status.split() if "=" in item)
    lines = [*header(docs, status, args.elapsed, args.total), "", *status_lines(docs, status), "", "## Goals", "",
             *goal_lines(docs), "", "## Kernels (Triton vs torch reference)", "", *kernel_lines(docs.get("kernels")),
             "", "## Engine on the Mistral-7B shape", "", *engine_lines(docs.get("engine")), "",
             "## Parity, QLoRA, assay score", "", *model_lines(docs), "", "## Failures", "", *failure_lines(docs), "",
             TOLERANCES, ""]
    path = args.out / "summary.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines[:40]))
    print(f"-> {path}")
    return path


if __name__ == "__main__":
    main()
