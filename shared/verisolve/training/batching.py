"""Tokenised examples and length-bucketed batches (little padding on a CPU, where it all costs).

An example is a row of token ids whose positions from `start` on are the solution: the losses
read only those (question tokens are masked out). Batches hold rows of similar length up to a
budget of padded tokens, so the padding a batch carries stays small without packing rows together
(which would need per-row attention masks the causal kernels do not take).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Rows are sorted by length within windows of this many batches' worth of rows: enough to keep
# padding low, few enough that the order stays random.
_WINDOW_BATCHES = 50


@dataclass(frozen=True, slots=True)
class Example:
    """Token ids of prompt and solution, where the solution starts, and the row's label."""

    ids: tuple[int, ...]
    start: int
    label: float = 0.0
    group: int = 0  # the problem, for per-problem metrics

    @property
    def n_solution(self) -> int:
        """Solution tokens (positions from `start` on)."""
        return len(self.ids) - self.start


def plan_batches(
    lengths: Sequence[int],
    batch_tokens: int,
    *,
    seed: int,
    shuffle: bool = True,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """Indices in batches of similar length, each within `batch_tokens` padded tokens.

    With `groups`, a group's rows (a problem's candidates) always share a batch, as a loss that
    compares them needs: groups are packed whole, sorted by their longest row, and a group over
    the budget is a batch alone. Without, each row is its own group.
    """
    members: dict[int, list[int]] = {}
    for index, group in enumerate(range(len(lengths)) if groups is None else groups):
        members.setdefault(group, []).append(index)
    order = list(members)
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    widest = {g: max(lengths[i] for i in members[g]) for g in order}
    mean_rows = max(1, len(lengths) // max(1, len(order)))
    mean_width = max(1, sum(widest.values()) // max(1, len(order)))
    window = max(1, _WINDOW_BATCHES * max(1, batch_tokens // (mean_rows * mean_width)))
    batches: list[list[int]] = []
    for begin in range(0, len(order), window):
        chunk = sorted(order[begin : begin + window], key=lambda g: (widest[g], g))
        batch: list[int] = []
        for group in chunk:
            rows = members[group]
            # Sorted shortest first, so a batch's padded width is its newest group's widest row.
            if batch and (len(batch) + len(rows)) * widest[group] > batch_tokens:
                batches.append(batch)
                batch = []
            batch += rows
        if batch:
            batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors: ids, attention mask, solution mask, last index and label per row."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    solution = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, example in enumerate(examples):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids, dtype=torch.long)
        attention[row, :n] = 1
        solution[row, example.start : n] = True
    return {
        "input_ids": ids,
        "attention_mask": attention,
        "solution_mask": solution,
        "last": torch.tensor([len(e.ids) - 1 for e in examples], dtype=torch.long),
        "labels": torch.tensor([e.label for e in examples], dtype=torch.float32),
        "groups": torch.tensor([e.group for e in examples], dtype=torch.long),
    }
