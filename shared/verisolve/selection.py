"""Selection strategies: pure functions that pick one answer from a problem's candidates.

Tie rules (deterministic, independent of the order the candidates are passed in):

- ``verifier``: the highest score wins; equal scores go to the lower ``sample_index``. The
  paper's verifier picks its top-ranked candidate whatever it says, so when that candidate's
  answer did not parse the selected answer is ``None``.
- ``topk-vote``: the ``k`` best candidates by score (ties as for ``verifier``) vote; the answer
  with more votes wins, then the one with the higher total score, then the one whose best-ranked
  voter ranks first.
- ``weighted-vote``: every candidate votes with its score; the higher total wins, then more
  votes, then the answer whose best-ranked voter ranks first.
- ``majority`` (self-consistency, no scores used): more votes wins, then the answer that occurs
  first in sample order.
- ``first``: the candidate with the lowest ``sample_index``, parsed or not.

A candidate whose answer did not parse (``None``) never wins a vote; when no voter has an
answer, the vote selects nothing. The chosen ``sample_index`` of a vote is the winning answer's
best-ranked voter (by score for the score-based votes, by sample order for ``majority``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_TOP_K = 5


class Strategy(StrEnum):
    """The selection strategies, by the names users and the database see."""

    VERIFIER = "verifier"
    TOPK_VOTE = "topk-vote"
    WEIGHTED_VOTE = "weighted-vote"
    MAJORITY = "majority"
    FIRST = "first"

    @property
    def needs_scores(self) -> bool:
        """Whether the strategy reads verifier scores."""
        return self in _SCORED


_SCORED = frozenset({Strategy.VERIFIER, Strategy.TOPK_VOTE, Strategy.WEIGHTED_VOTE})


class MissingScoresError(ValueError):
    """A strategy that needs verifier scores got a candidate without one."""


@dataclass(frozen=True, slots=True)
class CandidateView:
    """What selection needs to know about one candidate."""

    sample_index: int
    answer: str | None  # canonical (verisolve.answers.canonical), None when it did not parse
    score: float | None = None  # verifier probability that the candidate is correct

    def __post_init__(self) -> None:
        if self.score is not None and not math.isfinite(self.score):
            raise ValueError(f"candidate {self.sample_index}: score {self.score} is not finite")


@dataclass(frozen=True, slots=True)
class SelectionResult:
    """The answer a strategy picked, the candidate that carries it, and how sure it is."""

    strategy: Strategy
    answer: str | None
    sample_index: int | None
    # verifier: the chosen score; votes: the winner's share of the votes (or of the total
    # score for weighted-vote); first, or nothing chosen: None.
    confidence: float | None


@dataclass(slots=True)
class _Tally:
    answer: str
    first_rank: int
    representative: CandidateView
    weights: list[float] = field(default_factory=list)

    @property
    def votes(self) -> int:
        return len(self.weights)

    @property
    def weight(self) -> float:
        return math.fsum(self.weights)  # correctly rounded: the total does not depend on order


def _scores(strategy: Strategy, candidates: Sequence[CandidateView]) -> list[float]:
    """Every candidate's score, or a clear error naming the strategy."""
    missing = [c.sample_index for c in candidates if c.score is None]
    if missing:
        raise MissingScoresError(
            f"strategy {strategy.value!r} needs verifier scores; "
            f"{len(missing)} candidate(s) have none (first: sample {missing[0]})"
        )
    return [c.score for c in candidates if c.score is not None]


def _by_score(strategy: Strategy, candidates: Sequence[CandidateView]) -> list[CandidateView]:
    """Candidates best first: higher score, then lower sample_index."""
    _scores(strategy, candidates)
    return sorted(candidates, key=lambda c: (-(c.score or 0.0), c.sample_index))


def _by_sample(candidates: Sequence[CandidateView]) -> list[CandidateView]:
    return sorted(candidates, key=lambda c: c.sample_index)


def _tally(ranked: Sequence[CandidateView]) -> list[_Tally]:
    """One tally per distinct parsed answer, in order of first appearance in ``ranked``."""
    tallies: dict[str, _Tally] = {}
    for rank, cand in enumerate(ranked):
        if cand.answer is None:
            continue
        tally = tallies.setdefault(cand.answer, _Tally(cand.answer, rank, cand))
        tally.weights.append(cand.score or 0.0)
    return list(tallies.values())


def _nothing(strategy: Strategy) -> SelectionResult:
    return SelectionResult(strategy, None, None, None)


def select_verifier(candidates: Sequence[CandidateView], k: int = DEFAULT_TOP_K) -> SelectionResult:
    """The top-scored candidate (the paper's verifier top-1); ``k`` is unused."""
    if not candidates:
        return _nothing(Strategy.VERIFIER)
    best = _by_score(Strategy.VERIFIER, candidates)[0]
    return SelectionResult(Strategy.VERIFIER, best.answer, best.sample_index, best.score)


def select_topk_vote(
    candidates: Sequence[CandidateView], k: int = DEFAULT_TOP_K
) -> SelectionResult:
    """Majority vote among the ``k`` best candidates by verifier score."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    top = _by_score(Strategy.TOPK_VOTE, candidates)[:k]
    tallies = _tally(top)
    if not tallies:
        return _nothing(Strategy.TOPK_VOTE)
    win = min(tallies, key=lambda t: (-t.votes, -t.weight, t.first_rank))
    return SelectionResult(
        Strategy.TOPK_VOTE, win.answer, win.representative.sample_index, win.votes / len(top)
    )


def select_weighted_vote(
    candidates: Sequence[CandidateView], k: int = DEFAULT_TOP_K
) -> SelectionResult:
    """Vote weighted by verifier score over all candidates; ``k`` is unused."""
    scores = _scores(Strategy.WEIGHTED_VOTE, candidates)
    if any(s < 0 for s in scores):
        raise ValueError("weighted-vote needs non-negative scores (probabilities)")
    tallies = _tally(_by_score(Strategy.WEIGHTED_VOTE, candidates))
    if not tallies:
        return _nothing(Strategy.WEIGHTED_VOTE)
    win = min(tallies, key=lambda t: (-t.weight, -t.votes, t.first_rank))
    total = math.fsum(scores)
    confidence = win.weight / total if total > 0 else 0.0
    return SelectionResult(
        Strategy.WEIGHTED_VOTE, win.answer, win.representative.sample_index, confidence
    )


def select_majority(candidates: Sequence[CandidateView], k: int = DEFAULT_TOP_K) -> SelectionResult:
    """Plain majority vote over all candidates (self-consistency); ``k`` is unused."""
    tallies = _tally(_by_sample(candidates))
    if not tallies:
        return _nothing(Strategy.MAJORITY)
    win = min(tallies, key=lambda t: (-t.votes, t.first_rank))
    return SelectionResult(
        Strategy.MAJORITY, win.answer, win.representative.sample_index, win.votes / len(candidates)
    )


def select_first(candidates: Sequence[CandidateView], k: int = DEFAULT_TOP_K) -> SelectionResult:
    """The first sample, the baseline without selection; ``k`` is unused."""
    if not candidates:
        return _nothing(Strategy.FIRST)
    first = min(candidates, key=lambda c: c.sample_index)
    return SelectionResult(Strategy.FIRST, first.answer, first.sample_index, None)


Selector = Callable[[Sequence[CandidateView], int], SelectionResult]

STRATEGIES: Mapping[Strategy, Selector] = {
    Strategy.VERIFIER: select_verifier,
    Strategy.TOPK_VOTE: select_topk_vote,
    Strategy.WEIGHTED_VOTE: select_weighted_vote,
    Strategy.MAJORITY: select_majority,
    Strategy.FIRST: select_first,
}


def select(
    strategy: Strategy | str, candidates: Sequence[CandidateView], *, k: int = DEFAULT_TOP_K
) -> SelectionResult:
    """Apply one strategy, named by enum or string, to one problem's candidates."""
    try:
        chosen = Strategy(strategy)
    except ValueError:
        names = ", ".join(s.value for s in Strategy)
        raise ValueError(f"unknown strategy {strategy!r}; choose one of: {names}") from None
    return STRATEGIES[chosen](candidates, k)


def select_all(
    candidates: Sequence[CandidateView], *, k: int = DEFAULT_TOP_K
) -> dict[Strategy, SelectionResult]:
    """Every strategy the candidates allow: the score-based ones only when all are scored."""
    scored = all(c.score is not None for c in candidates)
    return {
        strategy: select(strategy, candidates, k=k)
        for strategy in Strategy
        if scored or not strategy.needs_scores
    }
