"""Accuracy metrics where gold answers exist: strategies, test@1, pass@k, curves, calibration.

``evaluate`` takes the candidates of many problems, however they were loaded (a JSONL file for
``verisolve evaluate``, the database for ``verisolve report``), and returns one report.

Problems may have different numbers of candidates. ``N`` is the largest count; at a subset size
``k`` a problem with fewer than ``k`` candidates uses all of them, so every curve ends, at
``k = N``, on the full-candidate number, except the first sample's, which is the single-sample
accuracy at every size (the first of a random subset is a random sample). Problems without a
gold answer count towards the parse and calculator rates only; a graded problem without
candidates counts as unsolved.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from verisolve.answers import is_correct
from verisolve.selection import DEFAULT_TOP_K, CandidateView, Strategy, select

DEFAULT_DRAWS = 32
CALIBRATION_BINS = 10


@dataclass(frozen=True, slots=True)
class EvalCandidate(CandidateView):
    """A candidate with the generation facts the metrics read."""

    calc_calls: int | None = None  # calculator annotations evaluated; None when not recorded
    calc_failures: int | None = None  # of those, errors and timeouts


@dataclass(frozen=True, slots=True)
class ProblemCandidates:
    """One problem's gold answer (canonical, None when unknown) and its candidates."""

    problem_id: str
    gold: str | None
    candidates: tuple[EvalCandidate, ...]

    def __post_init__(self) -> None:
        indices = [c.sample_index for c in self.candidates]
        if len(set(indices)) != len(indices):
            raise ValueError(f"problem {self.problem_id!r}: sample indices are not unique")


@dataclass(frozen=True, slots=True)
class CalculatorStats:
    """How candidates used the calculator (over candidates that record it)."""

    candidates: int
    use_rate: float  # fraction of candidates with at least one call
    calls_per_candidate: float
    failure_rate: float | None  # failed calls / calls; None when there were no calls


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """Every metric of one evaluation; accuracy fields are None or empty without gold answers."""

    n_problems: int
    n_candidates: int
    n_graded: int
    k: int
    seed: int
    draws: int
    strategies: dict[Strategy, float]
    test_at_1: float | None
    coverage: float | None
    pass_at_k: dict[int, float]
    curves: dict[Strategy, dict[int, float]]
    parse_failure_rate: float
    calculator: CalculatorStats | None
    auroc: float | None
    ece: float | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; strategy names and k values become string keys."""
        return {
            "n_problems": self.n_problems,
            "n_candidates": self.n_candidates,
            "n_graded": self.n_graded,
            "k": self.k,
            "strategies": {s.value: acc for s, acc in self.strategies.items()},
            "test_at_1": self.test_at_1,
            "coverage": self.coverage,
            "pass_at_k": {str(k): v for k, v in self.pass_at_k.items()},
            "curves": {
                s.value: {str(k): v for k, v in curve.items()} for s, curve in self.curves.items()
            },
            "curve_draws": self.draws,
            "curve_seed": self.seed,
            "parse_failure_rate": self.parse_failure_rate,
            "calculator": asdict(self.calculator) if self.calculator else None,
            "auroc": self.auroc,
            "ece": self.ece,
        }


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i): no huge binomials.
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def curve_ks(n: int) -> list[int]:
    """Subset sizes 1, 2, 4, ... below n, then n itself."""
    ks = [2**e for e in range(max(n, 1).bit_length()) if 2**e < n]
    return [*ks, n] if n > 0 else []


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count half); None without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # Tied scores share the mean of the 1-based ranks they span.
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = mean_rank[inverse]
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def expected_calibration_error(
    scores: Sequence[float], labels: Sequence[bool], bins: int = CALIBRATION_BINS
) -> float | None:
    """ECE over equal-width bins of [0, 1] (1.0 falls in the last); None without scores."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(s) == 0:
        return None
    if np.any((s < 0) | (s > 1)):
        raise ValueError("calibration needs scores in [0, 1]")
    which = np.minimum((s * bins).astype(np.int64), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            gap = abs(float(y[mask].mean()) - float(s[mask].mean()))
            error += int(mask.sum()) / len(s) * gap
    return error


def _is_right(answer: str | None, gold: str | None, memo: dict[str | None, bool]) -> bool:
    if answer not in memo:
        memo[answer] = is_correct(answer, gold)
    return memo[answer]


def _correct_flags(problem: ProblemCandidates) -> list[bool]:
    memo: dict[str | None, bool] = {}
    return [_is_right(c.answer, problem.gold, memo) for c in problem.candidates]


def strategy_hits(
    problems: Sequence[ProblemCandidates], strategy: Strategy, *, k: int = DEFAULT_TOP_K
) -> list[bool]:
    """Per problem, whether the strategy's selected answer equals the gold answer."""
    return [is_correct(select(strategy, p.candidates, k=k).answer, p.gold) for p in problems]


def strategy_accuracy(
    problems: Sequence[ProblemCandidates], strategy: Strategy, *, k: int = DEFAULT_TOP_K
) -> float:
    """Fraction of problems whose selected answer equals the gold answer."""
    if not problems:
        raise ValueError("accuracy needs at least one problem")
    return sum(strategy_hits(problems, strategy, k=k)) / len(problems)


def single_sample_accuracy(problems: Sequence[ProblemCandidates]) -> float:
    """test@1: the mean per-problem fraction of correct candidates (one sample's accuracy)."""
    fractions = [
        sum(_correct_flags(p)) / len(p.candidates) if p.candidates else 0.0 for p in problems
    ]
    return sum(fractions) / len(fractions)


def coverage(problems: Sequence[ProblemCandidates]) -> float:
    """test@N: the fraction of problems solved by at least one candidate."""
    return sum(any(_correct_flags(p)) for p in problems) / len(problems)


def mean_pass_at_k(problems: Sequence[ProblemCandidates], k: int) -> float:
    """Mean pass@k; a problem with fewer than k candidates uses all of them."""
    values = [
        pass_at_k(len(p.candidates), sum(_correct_flags(p)), min(k, len(p.candidates)))
        if p.candidates
        else 0.0
        for p in problems
    ]
    return sum(values) / len(values)


def _subsets(
    candidates: Sequence[EvalCandidate], size: int, draws: int, rng: np.random.Generator
) -> list[Sequence[EvalCandidate]]:
    """Every size-``size`` subset when there are few (an exact mean), else ``draws`` random ones."""
    n = len(candidates)
    if size >= n:
        return [candidates]
    if math.comb(n, size) <= max(draws, n):
        return [list(sub) for sub in itertools.combinations(candidates, size)]
    return [[candidates[i] for i in rng.choice(n, size=size, replace=False)] for _ in range(draws)]


def _subset_hits(
    problem: ProblemCandidates,
    size: int,
    strategies: Sequence[Strategy],
    *,
    k: int,
    draws: int,
    rng: np.random.Generator,
) -> list[float]:
    """Per strategy, the expected accuracy on a random size-``size`` subset of the candidates.

    The first sample of a random subset is a random sample, so its curve is the single-sample
    accuracy at every size, computed exactly rather than estimated.
    """
    subsets = _subsets(problem.candidates, size, draws, rng)
    memo: dict[str | None, bool] = {}
    flags = _correct_flags(problem)
    return [
        (sum(flags) / len(flags) if flags else 0.0)
        if s is Strategy.FIRST
        else sum(_is_right(select(s, sub, k=k).answer, problem.gold, memo) for sub in subsets)
        / len(subsets)
        for s in strategies
    ]


def accuracy_curves(
    problems: Sequence[ProblemCandidates],
    strategies: Sequence[Strategy],
    *,
    k: int = DEFAULT_TOP_K,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> dict[Strategy, dict[int, float]]:
    """Accuracy against subset size (curve_ks of the largest N), expected over subsets.

    Exact where a problem has few subsets of a size (always at sizes 1 and N - 1), else the mean
    over ``draws`` random subsets.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    rng = np.random.default_rng(seed)
    curves: dict[Strategy, dict[int, float]] = {s: {} for s in strategies}
    if not problems:
        return curves
    for size in curve_ks(max(len(p.candidates) for p in problems)):
        totals = [0.0] * len(strategies)
        for problem in problems:
            hits = _subset_hits(problem, size, strategies, k=k, draws=draws, rng=rng)
            totals = [t + h for t, h in zip(totals, hits, strict=True)]
        for strategy, total in zip(strategies, totals, strict=True):
            curves[strategy][size] = total / len(problems)
    return curves


def calculator_stats(problems: Sequence[ProblemCandidates]) -> CalculatorStats | None:
    """Calculator use and failure rates; None when no candidate records calculator calls."""
    recorded = [
        (c.calc_calls, c.calc_failures or 0)
        for p in problems
        for c in p.candidates
        if c.calc_calls is not None
    ]
    if not recorded:
        return None
    calls = sum(n for n, _ in recorded)
    failures = sum(f for _, f in recorded)
    return CalculatorStats(
        candidates=len(recorded),
        use_rate=sum(n > 0 for n, _ in recorded) / len(recorded),
        calls_per_candidate=calls / len(recorded),
        failure_rate=failures / calls if calls else None,
    )


def _score_metrics(graded: Sequence[ProblemCandidates]) -> tuple[float | None, float | None]:
    """AUROC and ECE of the verifier's scores against correctness, pooled over candidates."""
    scores: list[float] = []
    labels: list[bool] = []
    for problem in graded:
        for cand, right in zip(problem.candidates, _correct_flags(problem), strict=True):
            if cand.score is not None:
                scores.append(cand.score)
                labels.append(right)
    # ECE means something only for probabilities; scores from other systems may be logits.
    in_unit = all(0.0 <= s <= 1.0 for s in scores)
    ece = expected_calibration_error(scores, labels) if in_unit else None
    return auroc(scores, labels), ece


def evaluate(
    problems: Sequence[ProblemCandidates],
    *,
    k: int = DEFAULT_TOP_K,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> EvaluationReport:
    """All metrics; score-based strategies only when every candidate carries a score."""
    all_cands = [c for p in problems for c in p.candidates]
    scored = bool(all_cands) and all(c.score is not None for c in all_cands)
    strategies = [s for s in Strategy if scored or not s.needs_scores]
    graded = [p for p in problems if p.gold is not None]
    n_max = max((len(p.candidates) for p in graded), default=0)
    auc, ece = _score_metrics(graded) if scored else (None, None)
    return EvaluationReport(
        n_problems=len(problems),
        n_candidates=len(all_cands),
        n_graded=len(graded),
        k=k,
        seed=seed,
        draws=draws,
        strategies={s: strategy_accuracy(graded, s, k=k) for s in strategies} if graded else {},
        test_at_1=single_sample_accuracy(graded) if graded else None,
        coverage=coverage(graded) if graded else None,
        pass_at_k={size: mean_pass_at_k(graded, size) for size in curve_ks(n_max)},
        curves=accuracy_curves(graded, strategies, k=k, seed=seed, draws=draws),
        parse_failure_rate=(
            sum(c.answer is None for c in all_cands) / len(all_cands) if all_cands else 0.0
        ),
        calculator=calculator_stats(problems),
        auroc=auc,
        ece=ece,
    )
