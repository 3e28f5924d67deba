"""Token lengths of the seed records under the MiniLM tokenizer: what each --max-length keeps and costs.

The seed sample is drawn exactly as ``assay label --sample N --seed S`` draws it
(``assay.labeling.seed.sample_records``). For each limit: the share of records kept whole and the
mean tokens per record after truncation (the work per record scales with it).

    .venv/bin/python bench/token_lengths.py --out bench/results/token_lengths.json   # 4,000 of train.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import write_result  # noqa: E402

from assay.labeling.seed import sample_records  # noqa: E402
from assay.schemas.models import bundled_minilm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=ROOT / "examples" / "data" / "jigsaw" / "train.parquet")
    p.add_argument("--sample", type=int, default=4000, help="seed records (0: all), as `assay label --sample`")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-lengths", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "token_lengths.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    table, _ = sample_records(args.input, args.sample or None, seed=args.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_minilm()))
    lengths = np.array([len(ids) for ids in tokenizer(table.column("text").to_pylist())["input_ids"]])
    results = {"records": int(len(lengths)), "median": float(np.median(lengths)),
               "p75": float(np.percentile(lengths, 75)), "p95": float(np.percentile(lengths, 95)),
               "mean_untruncated": float(lengths.mean()),
               "limits": {str(m): {"kept_whole": float((lengths <= m).mean()),
                                   "mean_tokens": float(np.minimum(lengths, m).mean())} for m in args.max_lengths}}
    config = {**vars(args), "tokenizer": str(bundled_minilm()), "special_tokens": "[CLS] ... [SEP] counted"}
    write_result(args.out, config, results)
    print(f"{results['records']} records: median {results['median']:.0f} tokens, 75th percentile "
          f"{results['p75']:.0f}, 95th {results['p95']:.0f}")
    for m, r in results["limits"].items():
        print(f"  max_length {m}: {r['kept_whole']:.0%} kept whole, {r['mean_tokens']:.1f} tokens per record")
    return results


if __name__ == "__main__":
    main()
