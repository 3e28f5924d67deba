"""What the students' lexical heads cost the engine: the same adapters scored with and without their heads.

    .venv/bin/python bench/bench_lexical.py --registry runs/select-stated/registries/default \
        --out bench/results/bench_lexical.json

The newest version of every question in a registry trained by `assay train` (heads saved beside the adapters),
and copies of the same adapter folders without the head files; both sets scored by one `Scorer` each on the
same records of examples/data/jigsaw/train.parquet, one torch thread, arms alternated per repeat. Process CPU
seconds (the machine is shared, so wall time mostly measures waiting for a core); the heads share one TF-IDF
transform per chunk (they were fitted on one label run's texts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import write_result  # noqa: E402

from assay.engine.lexical import HEAD_FILE, WEIGHTS_FILE  # noqa: E402
from assay.engine.scorer import Scorer  # noqa: E402
from assay.schemas.registry import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def scorer_for(versions: list, folders: list[Path]) -> Scorer:
    """One scorer with every version's adapter loaded from ``folders``."""
    scorer = Scorer(versions[0].manifest["base_model"])
    for version, folder in zip(versions, folders):
        scorer.add_adapter(version.question_id, folder, version.version, version.threshold, version.manifest)
    return scorer


def cpu_seconds(scorer: Scorer, texts: list[str]) -> tuple[float, dict[str, np.ndarray]]:
    """Process CPU seconds of one ``score_texts`` call, and its answer."""
    started = time.process_time()
    scores = scorer.score_texts(texts)
    return time.process_time() - started, scores


def run(registry: Path, records: int, repeats: int) -> dict:
    """Records per CPU second with and without heads, the heads' own share, and how far the fusion moves P(yes)."""
    torch.set_num_threads(1)
    reg = Registry(registry)
    versions = [reg.versions(q)[-1] for q in reg.all_questions()]
    texts = pq.read_table(ROOT / "examples/data/jigsaw/train.parquet", columns=["text"]).column("text").to_pylist()
    texts = texts[:records]
    with tempfile.TemporaryDirectory() as tmp:
        plain = []
        for version in versions:
            folder = Path(tmp) / version.question_id
            shutil.copytree(version.path, folder, ignore=shutil.ignore_patterns(HEAD_FILE, WEIGHTS_FILE))
            plain.append(folder)
        arms = {
            "with_heads": scorer_for(versions, [v.path for v in versions]),
            "adapters_only": scorer_for(versions, plain),
        }
        for scorer in arms.values():  # warm-up
            scorer.score_texts(texts[:32])
        seconds: dict[str, list[float]] = {arm: [] for arm in arms}
        answers = {}
        for repeat in range(repeats):
            for arm in list(arms)[:: 1 if repeat % 2 == 0 else -1]:
                spent, answers[arm] = cpu_seconds(arms[arm], texts)
                seconds[arm].append(spent)
    heads = [arms["with_heads"].model.adapters[v.question_id].lexical for v in versions]
    started = time.process_time()
    features = heads[0].features(texts)
    for head in heads:
        head.logit(features=features)
    head_seconds = time.process_time() - started
    median = {arm: float(np.median(s)) for arm, s in seconds.items()}
    moved = max(
        float(np.abs(answers["with_heads"][q] - answers["adapters_only"][q]).max()) for q in answers["with_heads"]
    )
    return {
        "questions": [v.question_id for v in versions],
        "records": len(texts),
        "cpu_seconds": seconds,
        "records_per_cpu_second": {arm: len(texts) / s for arm, s in median.items()},
        "overhead": median["with_heads"] / median["adapters_only"] - 1,
        "heads_alone_cpu_seconds": head_seconds,
        "heads_alone_records_per_cpu_second": len(texts) / head_seconds,
        "shared_features": len({h.features_key for h in heads}) == 1,
        "max_abs_p_change": moved,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=ROOT / "runs/select-stated/registries/default")
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/bench_lexical.json")
    args = parser.parse_args()
    results = run(args.registry, args.records, args.repeats)
    write_result(args.out, {**vars(args), "threads": 1, "clock": "time.process_time"}, results)
    rate = results["records_per_cpu_second"]
    print(
        f"{len(results['questions'])} questions, {results['records']} records: "
        f"{rate['adapters_only']:.1f} records/CPU s adapters only, {rate['with_heads']:.1f} with heads "
        f"({results['overhead']:+.1%}); heads alone {results['heads_alone_records_per_cpu_second']:.0f} records/CPU s "
        f"(shared features: {results['shared_features']})"
    )


if __name__ == "__main__":
    main()
