"""Diagnostics of a label run: per question Markdown + PNG (agreement heat map, P(yes) calibration)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from assay.schemas.questions import QuestionSpec

from .combine import CombineResult, gold_rows, vote_matrix
from .metrics import binary_scores


def source_stats(votes: pa.Table) -> dict[str, dict[str, float]]:
    """Per source: coverage, overlap (it and another source voted), conflict (another voted the opposite)."""
    matrix = vote_matrix(votes)
    cast = matrix.votes >= 0
    stats = {}
    for j, name in enumerate(matrix.sources):
        others = np.delete(matrix.votes, j, axis=1)
        overlap = cast[:, j] & (others >= 0).any(axis=1)
        opposite = np.where(matrix.votes[:, j:j + 1] == 1, others == 0, others == 1)
        conflict = cast[:, j] & opposite.any(axis=1)
        n = max(len(cast), 1)
        stats[name] = {"coverage": cast[:, j].sum() / n, "overlap": overlap.sum() / n, "conflict": conflict.sum() / n,
                       "yes": (matrix.votes[:, j] == 1).sum() / n, "no": (matrix.votes[:, j] == 0).sum() / n}
    return {name: {k: round(float(v), 4) for k, v in s.items()} for name, s in stats.items()}


def agreement_matrix(votes: pa.Table) -> tuple[list[str], np.ndarray]:
    """Pairwise agreement among records both sources voted on (NaN where they never overlap)."""
    matrix = vote_matrix(votes)
    m = len(matrix.sources)
    agreement = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(m):
            both = (matrix.votes[:, a] >= 0) & (matrix.votes[:, b] >= 0)
            if both.any():
                agreement[a, b] = (matrix.votes[both, a] == matrix.votes[both, b]).mean()
    return matrix.sources, agreement


def gold_comparison(votes: pa.Table, result: CombineResult, gold: pa.Table) -> dict[str, dict[str, float]]:
    """Measured scores on the gold records: each source where it voted, every method, and the combined label."""
    matrix = vote_matrix(votes)
    rows, truth = gold_rows(matrix.ids, gold)
    if not len(rows):
        return {}
    scores = {}
    for j, name in enumerate(matrix.sources):  # a source alone: its abstains count as no
        scores[f"source:{name}"] = {**binary_scores(truth, matrix.votes[rows, j] == 1),
                                    "coverage": round(float((matrix.votes[rows, j] >= 0).mean()), 4)}
    scores.update(result.candidates)
    scores["combined"] = binary_scores(truth, result.probs.column("label").to_numpy()[rows] == 1)
    return scores


def _plot_agreement(path, sources: list[str], agreement: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(sources) + 2.5, 1.0 * len(sources) + 2))
    image = ax.imshow(agreement, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(sources)), sources, rotation=30, ha="right")
    ax.set_yticks(range(len(sources)), sources)
    for a in range(len(sources)):
        for b in range(len(sources)):
            if not np.isnan(agreement[a, b]):
                ax.text(b, a, f"{agreement[a, b]:.2f}", ha="center", va="center", fontsize=9,
                        color="black" if agreement[a, b] > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="agreement where both vote")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_calibration(path, p_yes: np.ndarray, truth: np.ndarray | None, threshold: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if truth is not None else 1, figsize=(10 if truth is not None else 5, 4))
    axes = np.atleast_1d(axes)
    axes[0].hist(p_yes, bins=20, range=(0, 1), color="#4c72b0", log=True)
    axes[0].axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:.2f}")
    axes[0].set(xlabel="P(yes)", ylabel="records (log scale)", title="distribution of P(yes)")
    axes[0].legend()
    if truth is not None:
        bins = np.linspace(0, 1, 11)
        which = np.clip(np.digitize(p_yes, bins) - 1, 0, 9)
        centres, rates, sizes = [], [], []
        for b in range(10):
            inside = which == b
            if inside.any():
                centres.append(p_yes[inside].mean())
                rates.append(truth[inside].mean())
                sizes.append(inside.sum())
        axes[1].plot([0, 1], [0, 1], color="grey", linestyle=":")
        axes[1].scatter(centres, rates, s=20 + 200 * np.array(sizes) / max(sizes), color="#4c72b0")
        axes[1].plot(centres, rates, color="#4c72b0")
        axes[1].set(xlabel="mean P(yes) in bin", ylabel="gold yes rate", title="calibration on gold", xlim=(0, 1),
                    ylim=(0, 1))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_question_report(report_dir, spec: QuestionSpec, votes: pa.Table, result: CombineResult,
                          gold: pa.Table | None) -> dict[str, dict[str, float]]:
    """Write `<question>.md` and its PNGs into `report_dir`; return the gold scores (empty without gold)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    stats = source_stats(votes)
    sources, agreement = agreement_matrix(votes)
    _plot_agreement(report_dir / f"{spec.id}_agreement.png", sources, agreement, f"{spec.id}: source agreement")
    scores = gold_comparison(votes, result, gold) if gold is not None else {}
    p_yes = result.probs.column("p_yes").to_numpy()
    truth = None
    if scores:
        rows, truth = gold_rows(result.probs.column("id"), gold)
        p_yes = p_yes[rows]
    _plot_calibration(report_dir / f"{spec.id}_calibration.png", p_yes, truth, result.threshold, spec.id)
    lines = [f"# {spec.id}: {spec.question}", "",
             f"Method **{result.method}** ({result.reason}). Estimated P(yes) {result.prior:.3f}; label threshold "
             f"{result.threshold:.3f}; labelled yes: {result.probs.column('label').to_numpy().mean():.3f}.", "",
             "| source | coverage | yes | no | overlap | conflict | estimated accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in stats.items():
        lines.append(f"| {name} | {s['coverage']:.3f} | {s['yes']:.3f} | {s['no']:.3f} | {s['overlap']:.3f} | "
                     f"{s['conflict']:.3f} | {result.source_accuracy.get(name, float('nan')):.3f} |")
    if scores:
        lines += ["", "Measured on gold (a source alone labels yes only where it votes yes):", "",
                  "| labeller | n | accuracy | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|"]
        for name, s in scores.items():
            lines.append(f"| {name} | {s['n']} | {s['accuracy']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | "
                         f"{s['f1']:.3f} |")
    lines += ["", f"![agreement]({spec.id}_agreement.png)", "", f"![calibration]({spec.id}_calibration.png)", ""]
    (report_dir / f"{spec.id}.md").write_text("\n".join(lines))
    return scores


def write_run_report(report_dir, summary) -> None:
    """`README.md`: one line per question linking to its page."""
    report_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Label run: {summary.seed_rows} seed records from {summary.input}", "",
             "| question | method | est. P(yes) | labelled yes | gold F1 (combined) | gold F1 (majority) |",
             "|---|---|---:|---:|---:|---:|"]
    for qid, q in summary.questions.items():
        combined = q.gold.get("combined", {}).get("f1")
        majority = q.gold.get("majority", {}).get("f1")
        fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| [{qid}]({qid}.md) | {q.method} | {q.prior:.3f} | {q.yes_rate:.3f} | {fmt(combined)} | "
                     f"{fmt(majority)} |")
    (report_dir / "README.md").write_text("\n".join(lines) + "\n")
