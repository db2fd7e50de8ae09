"""Accuracy metrics against hand-computed cases, closed forms and brute force."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from verisolve.evaluation import (
    CalculatorStats,
    EvalCandidate,
    ProblemCandidates,
    accuracy_curves,
    auroc,
    calculator_stats,
    curve_ks,
    evaluate,
    expected_calibration_error,
    pass_at_k,
)
from verisolve.selection import Strategy


def problem(
    pid: str, gold: str | None, *rows: tuple[str | None, float | None]
) -> ProblemCandidates:
    """A problem whose candidates are (answer, score) rows in sample order."""
    cands = tuple(EvalCandidate(i, a, s) for i, (a, s) in enumerate(rows))
    return ProblemCandidates(pid, gold, cands)


# Four problems, four scored candidates each; every number below was worked out by hand.
HAND = [
    problem("p1", "3", ("4", 0.2), ("3", 0.9), ("3", 0.6), (None, 0.4)),
    problem("p2", "5", ("5", 0.1), ("6", 0.8), ("6", 0.7), ("5", 0.3)),
    problem("p3", "1", ("1", 0.5), ("2", 0.5), (None, 0.9), ("1", 0.2)),
    problem("p4", "9", ("8", 0.9), (None, 0.1), ("8", 0.3), ("10", 0.6)),
]
HAND_ACCURACY = {
    # p1 idx1 right; p2 idx1 "6" wrong; p3 idx2 unparsed; p4 wrong.
    Strategy.VERIFIER: 1 / 4,
    # k=2: p1 {3,3}; p2 {6,6}; p3 {None, "1" (wins the 0.5 tie by index)}.
    Strategy.TOPK_VOTE: 2 / 4,
    # p1 "3" 1.5 > 0.2; p2 "6" 1.5 > 0.4; p3 "1" 0.7 > 0.5.
    Strategy.WEIGHTED_VOTE: 2 / 4,
    # p2 "5" and "6" tie 2-2, "5" occurs first.
    Strategy.MAJORITY: 3 / 4,
    Strategy.FIRST: 2 / 4,
}


def test_hand_case_every_metric() -> None:
    report = evaluate(HAND, k=2, seed=0, draws=8)
    assert report.strategies == pytest.approx(HAND_ACCURACY)
    assert (report.n_problems, report.n_candidates, report.n_graded) == (4, 16, 4)
    assert report.test_at_1 == pytest.approx((0.5 + 0.5 + 0.5 + 0.0) / 4)
    assert report.coverage == pytest.approx(3 / 4)
    # Three problems with c=2 of n=4: pass@2 = 1 - C(2,2)/C(4,2) = 5/6 each.
    assert report.pass_at_k == pytest.approx({1: 0.375, 2: 3 * (5 / 6) / 4, 4: 0.75})
    assert report.parse_failure_rate == pytest.approx(3 / 16)
    # Positives .9 .6 .1 .3 .5 .2 against ten negatives: U = 9 + 5.5 + .5 + 2.5 + 4.5 + 1.5.
    assert report.auroc == pytest.approx(23.5 / 60)
    # Bin gaps x counts: .4x2 .3x2 .2x2 .4 0x2 .1x2 .7 .8 (.9 - 1/3)x3, over 16 candidates.
    assert report.ece == pytest.approx(5.6 / 16)
    assert report.calculator is None


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_curves_end_on_full_accuracy(k: int) -> None:
    report = evaluate(HAND, k=k, seed=3, draws=16)
    for strategy, accuracy in report.strategies.items():
        assert list(report.curves[strategy]) == [1, 2, 4]
        expected = report.test_at_1 if strategy is Strategy.FIRST else accuracy
        assert report.curves[strategy][4] == expected


def test_curves_are_deterministic_under_a_seed() -> None:
    one = evaluate(HAND, seed=7, draws=16)
    assert evaluate(HAND, seed=7, draws=16).curves == one.curves
    seeds = [evaluate(HAND, seed=s, draws=4).curves[Strategy.MAJORITY][2] for s in range(8)]
    assert len(set(seeds)) > 1  # the subsets really are random


def test_curve_at_one_is_exactly_test_at_1() -> None:
    # Few draws: at size 1 every singleton is taken, so no estimate enters, whatever the seed.
    for seed in range(4):
        curves = accuracy_curves(HAND, list(Strategy), seed=seed, draws=2)
        for strategy in Strategy:
            # A single candidate is chosen whatever the strategy: its accuracy is test@1.
            assert curves[strategy][1] == 0.375


def test_first_sample_curve_is_flat_single_sample_accuracy() -> None:
    rows = [("2", None)] * 2 + [("1", None)] * 6
    strategies = [Strategy.FIRST, Strategy.MAJORITY]
    curves = accuracy_curves([problem("p", "1", *rows)], strategies, seed=0, draws=4)
    # The literal first sample is wrong, but the first of a random subset is a random sample.
    assert set(curves[Strategy.FIRST].values()) == {6 / 8}


def test_curves_use_random_subsets_not_the_first_k() -> None:
    rows = [("2", None)] * 2 + [("1", None)] * 6
    curves = accuracy_curves([problem("p", "1", *rows)], [Strategy.MAJORITY], seed=0, draws=4)
    # The first two samples are both wrong; a random one of the eight is right with P = 6/8.
    assert curves[Strategy.MAJORITY][1] == 6 / 8
    # With all eight candidates, the majority is right.
    assert curves[Strategy.MAJORITY][8] == 1.0


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, []),
        (1, [1]),
        (2, [1, 2]),
        (5, [1, 2, 4, 5]),
        (8, [1, 2, 4, 8]),
        (100, [1, 2, 4, 8, 16, 32, 64, 100]),
    ],
)
def test_curve_ks(n: int, expected: list[int]) -> None:
    assert curve_ks(n) == expected


def test_pass_at_k_matches_closed_form() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                closed = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)


def test_pass_at_k_matches_enumeration() -> None:
    for n in range(1, 8):
        for c in range(n + 1):
            right = [i < c for i in range(n)]
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(right, k))
                share = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(share, abs=1e-12)


def test_pass_at_k_large_n_is_stable() -> None:
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert pass_at_k(1000, 10, 100) == pytest.approx(1 - math.comb(990, 100) / math.comb(1000, 100))


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        # Positives .9, .8 against .8, .3, .1: 3 + (0.5 + 1 + 1) of 6 pairs.
        ([0.9, 0.8, 0.8, 0.3, 0.1], [True, False, True, False, False], 5.5 / 6),
        ([0.9, 0.1], [True, False], 1.0),
        ([0.1, 0.9], [True, False], 0.0),
        ([0.5, 0.5, 0.5], [True, False, False], 0.5),
        ([0.2, 0.7], [True, True], None),
        ([], [], None),
    ],
)
def test_auroc(scores: list[float], labels: list[bool], expected: float | None) -> None:
    got = auroc(scores, labels)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        # Bins 0, 1 and 9: .05 x 1/4 + .15 x 1/4 + |.5 - .95| x 2/4.
        ([0.05, 0.15, 0.95, 0.95], [False, False, True, False], 0.275),
        ([1.0, 0.0], [True, False], 0.0),
        ([0.25, 0.25, 0.25, 0.25], [True, False, False, False], 0.0),
        ([], [], None),
    ],
)
def test_expected_calibration_error(
    scores: list[float], labels: list[bool], expected: float | None
) -> None:
    got = expected_calibration_error(scores, labels)
    assert got == (None if expected is None else pytest.approx(expected))


def test_ece_rejects_non_probabilities() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.5], [True])


def test_calculator_stats() -> None:
    rows = [(2, 1), (0, 0), (3, 0), (None, None)]
    cands = tuple(EvalCandidate(i, "1", None, n, f) for i, (n, f) in enumerate(rows))
    stats = calculator_stats([ProblemCandidates("p", "1", cands)])
    assert stats == CalculatorStats(
        candidates=3, use_rate=2 / 3, calls_per_candidate=5 / 3, failure_rate=1 / 5
    )
    assert calculator_stats(HAND) is None


def test_without_scores_only_unscored_strategies() -> None:
    unscored = [problem("a", "2", ("2", None), ("3", None)), problem("b", "4", ("5", None))]
    report = evaluate(unscored, draws=4)
    assert report.strategies == {Strategy.MAJORITY: 0.5, Strategy.FIRST: 0.5}
    assert set(report.curves) == {Strategy.MAJORITY, Strategy.FIRST}
    assert (report.auroc, report.ece) == (None, None)
    # Problem b has one candidate: at k=2 it uses it, so pass@2 = (1 + 0) / 2.
    assert report.pass_at_k == {1: 0.25, 2: 0.5}


def test_ungraded_and_empty_problems() -> None:
    mixed = [
        problem("graded", "2", ("2", 0.9), (None, 0.1)),
        problem("ungraded", None, (None, 0.5), ("7", 0.5)),
        problem("empty", "1"),
    ]
    report = evaluate(mixed, draws=4)
    assert (report.n_problems, report.n_graded, report.n_candidates) == (3, 2, 4)
    assert report.strategies[Strategy.VERIFIER] == 0.5  # the empty problem counts as unsolved
    assert report.parse_failure_rate == 0.5  # the ungraded problem counts here
    assert report.coverage == 0.5
    nothing = evaluate([problem("u", None, ("1", None))])
    assert (nothing.strategies, nothing.coverage, nothing.pass_at_k, nothing.curves) == (
        {},
        None,
        {},
        {Strategy.MAJORITY: {}, Strategy.FIRST: {}},
    )


def test_duplicate_sample_index_is_rejected() -> None:
    with pytest.raises(ValueError, match="not unique"):
        ProblemCandidates("p", "1", (EvalCandidate(0, "1"), EvalCandidate(0, "2")))


def test_to_json_has_string_keys_and_round_trips() -> None:
    data = evaluate(HAND, k=2, draws=4).to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["strategies"]["topk-vote"] == 0.5
    assert set(data["pass_at_k"]) == {"1", "2", "4"}
    assert set(data["curves"]["verifier"]) == {"1", "2", "4"}
