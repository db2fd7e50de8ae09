"""Selection strategies against cases worked out by hand, ties and unparsed answers included."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verisolve.selection import (
    CandidateView,
    MissingScoresError,
    SelectionResult,
    Strategy,
    select,
    select_all,
)


def cands(*rows: tuple[int, str | None, float | None]) -> list[CandidateView]:
    """Candidates from (sample_index, answer, score) rows."""
    return [CandidateView(i, a, s) for i, a, s in rows]


Row = tuple[int, str | None, float | None]
Want = tuple[str | None, int | None, float | None]


def case(name: str, strategy: Strategy, rows: list[Row], want: Want, k: int = 5) -> object:
    """One table row: candidates as (sample_index, answer, score); want (answer, index, conf)."""
    return pytest.param(strategy, k, cands(*rows), want, id=name)


V, T, W, M, F = (
    Strategy.VERIFIER,
    Strategy.TOPK_VOTE,
    Strategy.WEIGHTED_VOTE,
    Strategy.MAJORITY,
    Strategy.FIRST,
)
FIVE: list[Row] = [(0, "7", 0.9), (1, "8", 0.8), (2, "8", 0.7), (3, "7", 0.1), (4, "7", 0.05)]

CASES = [
    case("verifier-top-score", V, [(0, "1", 0.2), (1, "2", 0.9), (2, "3", 0.5)], ("2", 1, 0.9)),
    case("verifier-tie-lower-index", V, [(1, "2", 0.5), (0, "1", 0.5)], ("1", 0, 0.5)),
    case("verifier-top-unparsed-is-none", V, [(0, None, 0.9), (1, "2", 0.5)], (None, 0, 0.9)),
    case("topk-vote-among-best-3", T, FIVE, ("8", 1, 2 / 3), k=3),
    case("topk-all-5-vote", T, FIVE, ("7", 0, 3 / 5), k=5),
    case(
        "topk-count-tie-higher-total",
        T,
        [(0, "1", 0.9), (1, "2", 0.8), (2, "2", 0.7), (3, "1", 0.1)],
        ("2", 1, 0.5),
        k=4,
    ),
    case(
        "topk-count-and-total-tie-best-ranked",
        T,
        [(3, "1", 0.4), (2, "2", 0.5), (1, "2", 0.5), (0, "1", 0.6)],
        ("1", 0, 0.5),
        k=4,
    ),
    case(
        "topk-unparsed-never-wins",
        T,
        [(0, None, 0.9), (1, None, 0.8), (2, None, 0.7), (3, "4", 0.6), (4, "5", 0.5)],
        ("4", 3, 0.2),
    ),
    case(
        "topk-no-parsed-voter",
        T,
        [(0, None, 0.9), (1, None, 0.8), (2, "5", 0.1)],
        (None, None, None),
        k=2,
    ),
    case("topk-1-is-verifier", T, [(0, "3", 0.2), (1, "4", 0.3)], ("4", 1, 1.0), k=1),
    case("weighted-sum-beats-count", W, FIVE, ("8", 1, 1.5 / 2.55)),
    case(
        "weighted-tie-more-votes",
        W,
        [(0, "1", 0.5), (1, "2", 0.25), (2, "2", 0.25)],
        ("2", 1, 0.5),
    ),
    case("weighted-full-tie-best-ranked", W, [(1, "4", 0.5), (0, "3", 0.5)], ("3", 0, 0.5)),
    case(
        "weighted-sums-and-counts-tie",
        W,
        [(0, "1", 0.25), (1, "1", 0.5), (2, "2", 0.75), (3, "2", 0.0)],
        ("2", 2, 0.5),
    ),
    case("weighted-all-zero", W, [(0, "1", 0.0), (1, "2", 0.0), (2, "2", 0.0)], ("2", 1, 0.0)),
    case("weighted-unparsed-never-wins", W, [(0, None, 0.99), (1, "6", 0.01)], ("6", 1, 0.01)),
    case("majority-over-all", M, FIVE, ("7", 0, 3 / 5)),
    case(
        "majority-tie-first-sample",
        M,
        [(3, "5", None), (1, "6", None), (2, "6", None), (0, "5", None)],
        ("5", 0, 0.5),
    ),
    case("majority-ignores-scores", M, [(0, "1", 0.1), (1, "2", 0.9)], ("1", 0, 0.5)),
    case(
        "majority-unparsed-never-wins",
        M,
        [(0, None, None), (1, None, None), (2, "3", None)],
        ("3", 2, 1 / 3),
    ),
    case("majority-nothing-parsed", M, [(0, None, None), (1, None, None)], (None, None, None)),
    case(
        "first-lowest-index-even-unparsed",
        F,
        [(2, "9", None), (1, None, None), (3, "8", None)],
        (None, 1, None),
    ),
]


@pytest.mark.parametrize(("strategy", "k", "candidates", "want"), CASES)
def test_strategy_hand_cases(
    strategy: Strategy, k: int, candidates: list[CandidateView], want: Want
) -> None:
    answer, index, confidence = want
    result = select(strategy, candidates, k=k)
    assert (result.strategy, result.answer, result.sample_index) == (strategy, answer, index)
    if confidence is None:
        assert result.confidence is None
    else:
        assert result.confidence == pytest.approx(confidence)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_no_candidates_selects_nothing(strategy: Strategy) -> None:
    assert select(strategy, []) == SelectionResult(strategy, None, None, None)


@pytest.mark.parametrize(
    ("strategy", "raises"),
    [
        (Strategy.VERIFIER, True),
        (Strategy.TOPK_VOTE, True),
        (Strategy.WEIGHTED_VOTE, True),
        (Strategy.MAJORITY, False),
        (Strategy.FIRST, False),
    ],
)
def test_missing_scores(strategy: Strategy, raises: bool) -> None:
    partly = cands((0, "1", 0.5), (1, "1", None))
    assert strategy.needs_scores is raises
    if raises:
        with pytest.raises(MissingScoresError, match=rf"{strategy.value}.*sample 1"):
            select(strategy, partly)
    else:
        assert select(strategy, partly).answer == "1"


def test_strategy_names_and_errors() -> None:
    assert select("topk-vote", cands((0, "2", 0.1)), k=1).answer == "2"
    with pytest.raises(ValueError, match=r"unknown strategy 'best'.*majority"):
        select("best", [])
    with pytest.raises(ValueError, match="k must be at least 1"):
        select(Strategy.TOPK_VOTE, cands((0, "2", 0.1)), k=0)
    with pytest.raises(ValueError, match="non-negative"):
        select(Strategy.WEIGHTED_VOTE, cands((0, "2", -0.1)))
    with pytest.raises(ValueError, match="not finite"):
        CandidateView(0, "1", math.nan)


def test_select_all_uses_scored_strategies_only_when_scored() -> None:
    assert set(select_all(cands((0, "1", None), (1, "2", None)))) == {
        Strategy.MAJORITY,
        Strategy.FIRST,
    }
    scored = select_all(cands((0, "1", 0.2), (1, "2", 0.7)), k=1)
    assert set(scored) == set(Strategy)
    assert scored[Strategy.TOPK_VOTE].answer == scored[Strategy.VERIFIER].answer == "2"


candidate_lists = st.lists(
    st.tuples(
        st.sampled_from(["1", "2", "3", None]),
        st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),  # few values, so ties are common
    ),
    min_size=1,
    max_size=8,
)


@given(rows=candidate_lists, k=st.integers(1, 4), data=st.data())
def test_order_of_candidates_does_not_matter(
    rows: list[tuple[str | None, float]], k: int, data: st.DataObject
) -> None:
    views = [CandidateView(i, a, s) for i, (a, s) in enumerate(rows)]
    shuffled = data.draw(st.permutations(views))
    for strategy in Strategy:
        assert select(strategy, shuffled, k=k) == select(strategy, views, k=k)
