"""Training batches: whole groups for losses that compare a problem's rows (or cut to the budget for
prompt sharing), the parts that share a prompt; the ranking loss."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from verisolve.training.batching import Example, collate, plan_batches, prompt_parts
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_groups_are_cut_to_the_budget_and_kept_whole_where_they_fit(seed: int) -> None:
    lengths, groups = _groups(seed)
    budget = 400  # holds some groups whole, not the larger ones
    batches = plan_batches(lengths, budget, seed=seed, groups=groups, split=True)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    batch_of = {i: number for number, batch in enumerate(batches) for i in batch}
    members: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    cut = 0
    for rows in members.values():
        widest = max(lengths[i] for i in rows)
        if len(rows) * widest <= budget:
            assert len({batch_of[i] for i in rows}) == 1  # a group that fits is never cut
        else:
            cut += 1
    assert cut > 0  # the budget does cut some groups here
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= budget
    # Without `split`, the same groups stay whole and over the budget.
    whole = plan_batches(lengths, budget, seed=seed, groups=groups)
    assert any(len(b) * max(lengths[i] for i in b) > budget for b in whole)


def test_prompt_parts_share_what_every_row_of_a_problem_has_before_its_solution() -> None:
    rows = [
        Example((1, 2, 3, 4, 5, 10, 11), 5, 1.0, 0),  # problem 0: prompt 1..5
        Example((6, 7, 8, 20), 3, 1.0, 5),  # problem 5 alone: shares nothing
        Example((1, 2, 3, 4, 5, 12), 5, 0.0, 0),
        Example((1, 2, 3, 9, 5, 16), 5, 1.0, 3),  # problem 3: its rows differ at token 3
        Example((1, 2, 3, 4, 5, 10, 13, 14), 5, 0.0, 0),  # same first solution token as row 0
        Example((1, 2, 3, 8, 5, 17), 5, 0.0, 3),
    ]
    parts = {tuple(r.tolist()): prefix for r, prefix in prompt_parts(collate(rows, pad_id=0))}
    # Up to the token before the solution (it predicts the solution's first token), no further
    # than the rows agree; a problem alone in the batch shares nothing.
    assert parts == {(0, 2, 4): 4, (3, 5): 3, (1,): 0}


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


def test_the_lm_loss_on_right_candidates_counts_and_uses_their_tokens_only() -> None:
    import torch

    from verisolve.training.batching import collate
    from verisolve.training.verifier import VerifierOptions, VerifierTask

    rows = [Example((1, 2, 3, 4), 2, 1.0, 0), Example((1, 2, 5, 6, 7), 2, 0.0, 0)]
    assert count_targets(rows)["lm"] == 5
    assert count_targets(rows, "right")["lm"] == 2

    class Net(torch.nn.Module):
        """Values 0; the LM logits favour token 3 at every solution target."""

        def forward(
            self, ids: Any, mask: Any, solution: Any, with_lm: bool, parts: Any = None
        ) -> Any:
            targets_at = solution[:, 1:]
            logits = torch.zeros(int(targets_at.sum()), 8)
            logits[:, 3] = 5.0
            return torch.zeros(ids.shape), logits, ids[:, 1:][targets_at]

    batch = collate(rows, 0)
    losses = {}
    for lm_on in ("all", "right"):
        options = VerifierOptions(lm_on=lm_on, value_weight=1e-9)
        task = VerifierTask(rows, [], [], 0, options)
        losses[lm_on] = float(task.loss(Net(), batch, count_targets(rows, lm_on)))
    # Right row: targets 3, 4 (one favoured); the wrong row's targets 5, 6, 7 are not.
    log_z = math.log(math.exp(5.0) + 7)
    right = ((log_z - 5.0) + log_z) / 2
    assert losses["right"] == pytest.approx(right, rel=1e-5)
    assert losses["all"] == pytest.approx(((log_z - 5.0) + 4 * log_z) / 5, rel=1e-5)
    with pytest.raises(ValueError, match="--lm-on"):
        VerifierOptions(lm_on="wrong")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_takes_bf16_only_where_the_gpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    """A GPU that emulates bf16 (torch says it supports it, including emulation) trains in fp32."""
    import torch

    from verisolve.training.loop import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: including_emulation or native,
    )
    assert resolve_precision("auto") == expected
    assert resolve_precision("fp32") == "fp32"
