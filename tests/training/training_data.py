"""Candidate files for the training tests, whose correctness shows in the text (or not)."""

from __future__ import annotations

import json
import random
from pathlib import Path


def write_candidates(
    path: Path, n_problems: int, *, per_problem: int = 4, seed: int = 0, shuffle: bool = False
) -> Path:
    """Candidates whose correctness shows in their wording ("so" right, "then" wrong).

    With `shuffle`, the `correct` labels are permuted across the file: nothing to learn.
    """
    rng = random.Random(seed)
    rows = []
    for p in range(n_problems):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        question = f"Question {p}: she has {a} apples and buys {b} more. how many apples?"
        flags = [k % 2 == 0 for k in range(per_problem)]
        rng.shuffle(flags)
        for right in flags:
            word, total = ("so", a + b) if right else ("then", a + b + rng.randint(1, 9))
            completion = (
                f"{word} {word} she has {a}+{b} = <<{a}+{b}={total}>>{total} apples.\n#### {total}"
            )
            rows.append({"question": question, "completion": completion, "correct": right})
    if shuffle:
        labels = [r["correct"] for r in rows]
        rng.shuffle(labels)
        for row, label in zip(rows, labels, strict=True):
            row["correct"] = label
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
