"""The miniature reproduction's statistics: bootstrap intervals and the data-scaling gain."""

from __future__ import annotations

import numpy as np
import pytest

from verisolve.evaluation import EvalCandidate, ProblemCandidates
from verisolve.repro.analysis import (
    bootstrap,
    interval95,
    per_problem,
    scaling_gain,
    vote_k_sweep,
)


def _problem(name: str, right_scores_highest: bool) -> ProblemCandidates:
    """Gold 7; two wrong candidates (so majority vote is wrong) and one right one, ranked first
    or last by the verifier."""
    right = 0.9 if right_scores_highest else 0.1
    candidates = (
        EvalCandidate(0, "5", 0.5),
        EvalCandidate(1, "5", 0.4),
        EvalCandidate(2, "7", right),
    )
    return ProblemCandidates(name, "7", candidates)


def test_the_gain_is_paired_over_problems_whatever_their_order() -> None:
    most = [_problem(f"p{i}", True) for i in range(200)]
    fewest = [_problem(f"p{i}", i % 2 == 0) for i in reversed(range(200))]
    gain = scaling_gain(fewest, most, k=3, seed=0)
    assert gain["verifier - majority"] == 0.5
    low, high = gain["ci95"]
    assert 0.0 < low < 0.5 < high < 1.0
    same = scaling_gain(list(reversed(most)), most, k=3, seed=0)
    assert same == {"verifier - majority": 0.0, "ci95": [0.0, 0.0]}


def test_the_gain_refuses_verifiers_that_scored_different_problems_or_candidates() -> None:
    most = [_problem(f"p{i}", True) for i in range(4)]
    with pytest.raises(ValueError, match="different test problems"):
        scaling_gain(most[:3], most, k=3, seed=0)
    with pytest.raises(ValueError, match="different test problems"):
        scaling_gain([*most[:3], _problem("other", True)], most, k=3, seed=0)
    outvoted = ProblemCandidates("p0", "7", tuple(EvalCandidate(i, "7", 0.5) for i in range(3)))
    with pytest.raises(ValueError, match="different candidates"):
        scaling_gain([outvoted, *most[1:]], most, k=3, seed=0)


def test_intervals_of_the_same_problems_are_paired() -> None:
    values = per_problem([_problem(f"p{i}", i % 3 == 0) for i in range(90)], k=3)
    result = bootstrap(values, seed=1)
    assert result["accuracy"]["majority"] == [0.0, 0.0]
    low, high = result["accuracy"]["verifier"]
    assert low < float(values["verifier"].mean()) < high
    # The difference's interval resamples the same problems as each accuracy's.
    assert result["difference"]["verifier - majority"] == [low, high]
    assert interval95(np.ones(5), seed=3) == [1.0, 1.0]


def test_the_vote_sweep_pairs_each_k_with_top1() -> None:
    """Gold 7: the verifier ranks one wrong candidate first and two right ones next, so top-1 and
    the top-2 vote (a tie goes to the better-ranked answer) are wrong, the top-3 vote right."""
    fooled = ProblemCandidates(
        "fooled",
        "7",
        (EvalCandidate(0, "5", 0.9), EvalCandidate(1, "7", 0.8), EvalCandidate(2, "7", 0.7)),
    )
    sweep = vote_k_sweep([fooled] * 10 + [_problem(f"p{i}", True) for i in range(10)], [1, 2, 3], 0)
    assert {k: v["accuracy"] for k, v in sweep.items()} == {"1": 0.5, "2": 0.5, "3": 0.5}
    assert sweep["1"]["minus_top1_ci95"] == [0.0, 0.0]
    # Top-1 right and the next two wrong alike: the top-3 vote loses what it wins on `fooled`.
    assert (sweep["3"]["gained"], sweep["3"]["lost"]) == (10, 10)
    assert (sweep["2"]["gained"], sweep["2"]["lost"]) == (0, 0)
    only_fooled = vote_k_sweep([fooled] * 4, [1, 2, 3], seed=0)
    assert [v["accuracy"] for v in only_fooled.values()] == [0.0, 0.0, 1.0]
    assert only_fooled["3"]["minus_top1_ci95"] == [1.0, 1.0]
