"""Diagnostics of a label run: per question Markdown + PNG (agreement heat map, P(yes) calibration)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from assay.schemas.questions import QuestionSpec

from ..gold import gold_rows
from ..votes import VoteMatrix
from .analysis import VoteAnalysis
from .combine import CombineResult


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


def write_question_report(report_dir, spec: QuestionSpec, matrix: VoteMatrix, result: CombineResult,
                          gold: pa.Table | None) -> dict[str, dict[str, float]]:
    """Write `<question>.md` and its PNGs into `report_dir`; return the gold scores (empty without gold)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    analysis = VoteAnalysis(matrix)
    stats = analysis.source_stats()
    _plot_agreement(report_dir / f"{spec.id}_agreement.png", matrix.sources, analysis.agreement(),
                    f"{spec.id}: source agreement")
    scores = analysis.gold_comparison(result, gold) if gold is not None else {}
    p_yes = result.probs.column("p_yes").to_numpy()
    truth = None
    if scores:
        rows, truth = gold_rows(result.probs.column("id"), gold)
        p_yes = p_yes[rows]
    _plot_calibration(report_dir / f"{spec.id}_calibration.png", p_yes, truth, result.threshold, spec.id)
    lines = [f"# {spec.id}: {spec.question}", "",
             f"Method **{result.method}** ({result.reason}). Estimated P(yes) {result.prior:.3f}; label threshold "
             f"{result.threshold:.3f}; labelled yes: {result.probs.column('label').to_numpy().mean():.3f}.", "",
             *[f"> **Warning:** {w}\n" for w in result.warnings],
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
