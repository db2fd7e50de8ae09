"""Training batches: whole groups for losses that compare a problem's rows; the ranking loss."""

from __future__ import annotations

import math
import random

import pytest

from verisolve.training.batching import Example, plan_batches
from verisolve.training.verifier import count_targets, ranking_loss


def _groups(seed: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    lengths, groups = [], []
    for group in range(40):
        for _ in range(rng.randint(1, 9)):
            lengths.append(rng.randint(20, 120))
            groups.append(group)
    return lengths, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_batches_hold_whole_groups_once_each(seed: int) -> None:
    lengths, groups = _groups(seed)
    batches = plan_batches(lengths, 2000, seed=seed, groups=groups)
    seen = sorted(i for batch in batches for i in batch)
    assert seen == list(range(len(lengths)))
    where = {}
    for number, batch in enumerate(batches):
        for i in batch:
            assert where.setdefault(groups[i], number) == number  # a group is never split
        padded = len(batch) * max(lengths[i] for i in batch)
        alone = len({groups[i] for i in batch}) == 1
        assert padded <= 2000 or alone  # only a group over the budget may exceed it
    assert plan_batches(lengths, 2000, seed=seed, groups=groups) == batches
    assert plan_batches(lengths, 2000, seed=seed + 10, groups=groups) != batches


def test_the_ranking_loss_sums_each_problems_pairs() -> None:
    import torch

    scores = torch.tensor([2.0, 0.5, -1.0, 0.0, 3.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    groups = torch.tensor([7, 7, 7, 9, 9])
    # Pairs (right, wrong): problem 7: (0, 1), (0, 2); problem 9: (3, 4). Never across problems.
    expected = sum(math.log1p(math.exp(w - r)) for r, w in [(2.0, 0.5), (2.0, -1.0), (0.0, 3.0)])
    assert float(ranking_loss(scores, labels, groups)) == pytest.approx(expected, rel=1e-6)
    rows = [
        Example((1, 2, 3), 1, float(label), int(g)) for label, g in zip(labels, groups, strict=True)
    ]
    assert count_targets(rows)["pairs"] == 3
    # A problem whose candidates are all right (or all wrong) has no pairs.
    assert float(ranking_loss(scores[:1], labels[:1], groups[:1])) == 0.0
