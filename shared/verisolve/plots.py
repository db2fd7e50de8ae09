"""Figures of an evaluation: accuracy against candidates per problem, as in the paper."""

from __future__ import annotations

from pathlib import Path

from verisolve.evaluation import EvaluationReport
from verisolve.selection import Strategy

# Label and marker per strategy; distinct markers keep curves that coincide visible.
_STYLE = {
    Strategy.VERIFIER: ("Verifier top-1", "o"),
    Strategy.TOPK_VOTE: ("Top-{k} verifier vote", "^"),
    Strategy.WEIGHTED_VOTE: ("Verifier-weighted vote", "D"),
    Strategy.MAJORITY: ("Majority vote", "v"),
    Strategy.FIRST: ("First sample", "x"),
}


def plot_accuracy_curves(report: EvaluationReport, path: Path, *, title: str | None = None) -> None:
    """Write a PNG of each strategy's accuracy and the coverage (pass@k) against k."""
    if not report.curves or not report.pass_at_k:
        raise ValueError("nothing to plot: the evaluation has no graded problems")
    # Imported here: matplotlib is slow to import and only this command draws. The Figure API
    # (no pyplot) keeps no global state and needs no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ks = sorted(report.pass_at_k)
    ax.plot(
        ks,
        [100 * report.pass_at_k[k] for k in ks],
        linestyle="--",
        marker="s",
        color="0.45",
        label="Coverage (pass@k)",
    )
    for strategy, curve in report.curves.items():
        xs = sorted(curve)
        label, marker = _STYLE[strategy]
        ax.plot(
            xs,
            [100 * curve[x] for x in xs],
            marker=marker,
            markerfacecolor="none",
            label=label.format(k=report.k),
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_ylim(0, 100)
    ax.set_xlabel("Candidates per problem (k)")
    ax.set_ylabel("Problems solved (%)")
    ax.set_title(title or f"Accuracy against k ({report.n_graded} problems)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=120)
