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
    split: bool = False,
) -> list[list[int]]:
    """Indices in batches of similar length, each within `batch_tokens` padded tokens.

    With `groups`, a group's rows (a problem's candidates) always share a batch, as a loss that
    compares them needs: groups are packed whole, sorted by their longest row, and a group over
    the budget is a batch alone. With `split` as well, such a group is cut into batches of as
    many of its rows as the budget holds (for prompt sharing, which gains from a group's rows
    together but needs no more). Without `groups`, each row is its own group.
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
            per_batch = max(1, batch_tokens // widest[group]) if split else len(rows)
            for begin_row in range(0, len(rows), per_batch):
                piece = rows[begin_row : begin_row + per_batch]
                # Sorted shortest first: a batch's padded width is its newest group's widest row.
                if batch and (len(batch) + len(piece)) * widest[group] > batch_tokens:
                    batches.append(batch)
                    batch = []
                batch += piece
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


def prompt_parts(batch: dict[str, Any]) -> list[tuple[Any, int]]:
    """A collated batch's rows in parts whose rows share their prompt's forward pass.

    Each group (problem) with two rows or more is a part of its own (its row indices), with the
    number of leading tokens its rows share and can compute once: up to, not including, the
    token before the first solution token (that token's hidden state predicts the solution's
    first token, so it stays in every row). The other rows form one part that shares nothing
    (0). See VerifierNet.forward's `parts`.
    """
    import torch

    groups = batch["groups"]
    names, counts = torch.unique(groups, return_counts=True)
    parts: list[tuple[Any, int]] = []
    alone = torch.zeros_like(groups, dtype=torch.bool)
    for name, count in zip(names.tolist(), counts.tolist(), strict=True):
        in_group = groups == name
        if count < 2:
            alone |= in_group
            continue
        rows = in_group.nonzero().squeeze(1)
        first_solution = int(batch["solution_mask"][rows].float().argmax(dim=1).min())
        ids = batch["input_ids"][rows, : max(0, first_solution - 1)]  # all that could be shared
        differs = (ids != ids[:1]).any(dim=0).nonzero()
        parts.append((rows, int(differs[0]) if len(differs) else ids.shape[1]))
    if alone.any():
        parts.append((alone.nonzero().squeeze(1), 0))
    return parts
