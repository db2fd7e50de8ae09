"""Validation metrics of a verifier on held-out problems' candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from verisolve.evaluation import auroc
from verisolve.selection import CandidateView, select_majority
from verisolve.training.data import LabelledCandidate


def _by_problem(
    scores: Sequence[float], candidates: Sequence[LabelledCandidate]
) -> dict[str, list[tuple[float, LabelledCandidate]]]:
    """Scored candidates grouped by problem, in their order."""
    grouped: dict[str, list[tuple[float, LabelledCandidate]]] = {}
    for score, candidate in zip(scores, candidates, strict=True):
        grouped.setdefault(candidate.problem, []).append((score, candidate))
    return grouped


def within_problem_auroc(
    grouped: dict[str, list[tuple[float, LabelledCandidate]]],
) -> tuple[float | None, int]:
    """Mean AUROC over problems with both right and wrong candidates, and how many there were."""
    values = []
    for rows in grouped.values():
        value = auroc([s for s, _ in rows], [c.correct for _, c in rows])
        if value is not None:
            values.append(value)
    return (sum(values) / len(values) if values else None), len(values)


def _majority_right(rows: list[tuple[float, LabelledCandidate]]) -> bool:
    """Whether majority vote over the answers picks a right candidate."""
    views = [CandidateView(i, c.answer) for i, (_, c) in enumerate(rows)]
    chosen = select_majority(views).sample_index
    return chosen is not None and rows[chosen][1].correct


def verifier_metrics(
    scores: Sequence[float], candidates: Sequence[LabelledCandidate]
) -> dict[str, Any]:
    """AUROC overall and within problems; verifier top-1 against majority vote and first sample."""
    grouped = _by_problem(scores, candidates)
    within, n_both = within_problem_auroc(grouped)
    n = len(grouped) or 1
    # max() keeps the first of equal scores: ties go to the earlier sample.
    top1 = sum(max(rows, key=lambda r: r[0])[1].correct for rows in grouped.values())
    return {
        "auroc": auroc(list(scores), [c.correct for c in candidates]),
        "auroc_within_problem": within,
        "problems_with_both_labels": n_both,
        "accuracy_verifier_top1": top1 / n,
        "accuracy_majority_vote": sum(_majority_right(r) for r in grouped.values()) / n,
        "accuracy_first_sample": sum(rows[0][1].correct for rows in grouped.values()) / n,
        "problems": len(grouped),
        "candidates": len(candidates),
    }
