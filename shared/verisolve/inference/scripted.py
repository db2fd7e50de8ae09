"""A backend whose logits come from a function of each row's tokens: the engine's test double."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

# Given the prompt and a row's tokens so far, the logits of its next token [vocab].
Script = Callable[[Sequence[int]], NDArray[np.float32]]


def one_hot_logits(vocab_size: int, token: int, margin: float = 30.0) -> NDArray[np.float32]:
    """Logits that make `token` all but certain under any temperature up to a few."""
    logits = np.zeros(vocab_size, dtype=np.float32)
    logits[token] = margin
    return logits


class ScriptedBackend:
    """Runs a script instead of a model; records the batch size of every step."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.step_rows: list[int] = []

    def prefill(self, prompt_ids: Sequence[int]) -> tuple[NDArray[np.float32], ScriptedDecoding]:
        """The script's logits after the prompt, and a decoding with one row."""
        decoding = ScriptedDecoding(self, [list(prompt_ids)])
        return self.script(prompt_ids), decoding


class ScriptedDecoding:
    """Each row's full token history, grown by `step` and compacted by `keep`."""

    def __init__(self, backend: ScriptedBackend, rows: list[list[int]]) -> None:
        self._backend = backend
        self.rows = rows

    def expand(self, n: int) -> None:
        """Copy the single prompt row n times."""
        if len(self.rows) != 1:
            raise RuntimeError("expand() needs exactly the prefilled row")
        self.rows = [list(self.rows[0]) for _ in range(n)]

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Append the tokens; the script's logits for every row."""
        if len(tokens) != len(self.rows):
            raise ValueError(f"{len(tokens)} tokens for {len(self.rows)} rows")
        self._backend.step_rows.append(len(self.rows))
        for row, token in zip(self.rows, tokens.tolist(), strict=True):
            row.append(int(token))
        return np.stack([self._backend.script(row) for row in self.rows])

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep the given rows, in that order."""
        self.rows = [self.rows[i] for i in rows.tolist()]


class ScriptedBatchBackend:
    """The batch engine's double: the script sees the shared prefix, question and row tokens."""

    def __init__(self, script: Script, kv_bytes_per_token: int = 1) -> None:
        self.script = script
        self.kv_bytes_per_token = kv_bytes_per_token
        self.step_rows: list[int] = []
        self.opened: list[tuple[int, ...]] = []

    def open(self, shared_ids: Sequence[int]) -> ScriptedBatch:
        """An empty batch behind these shared tokens."""
        self.opened.append(tuple(shared_ids))
        return ScriptedBatch(self, list(shared_ids))


class ScriptedBatch:
    """Each row's full token history, grown by `step`, compacted by `keep`, added by `admit`."""

    def __init__(self, backend: ScriptedBatchBackend, shared: list[int]) -> None:
        self._backend = backend
        self._shared = shared
        self.histories: list[list[int]] = []

    @property
    def rows(self) -> int:
        """How many rows the batch holds."""
        return len(self.histories)

    def prefill(self, question_ids: Sequence[int]) -> tuple[NDArray[np.float32], object]:
        """The script's logits after shared prefix and question; the prompt as the 'cache'."""
        prompt = self._shared + list(question_ids)
        return self._backend.script(prompt), prompt

    def admit(self, prompt: object, count: int) -> None:
        """Append rows that continue the prompt."""
        assert isinstance(prompt, list)
        self.histories += [list(prompt) for _ in range(count)]

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Append the tokens; the script's logits for every row."""
        if len(tokens) != self.rows:
            raise ValueError(f"{len(tokens)} tokens for {self.rows} rows")
        self._backend.step_rows.append(self.rows)
        for row, token in zip(self.histories, tokens.tolist(), strict=True):
            row.append(int(token))
        return np.stack([self._backend.script(row) for row in self.histories])

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep the given rows, in that order."""
        self.histories = [self.histories[i] for i in rows.tolist()]
