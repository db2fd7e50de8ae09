"""Where a candidate's text ends: the manifest's stop strings and a complete `#### N` line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["eos", "stop", "answer", "length"]

# GSM8K's final-answer line, complete once the newline after the number has been written.
ANSWER_LINE = re.compile(r"(?m)^####[ \t]*[-+]?\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)[ \t]*\n")
# A newline is what completes an answer line.
ANSWER_LINE_END = "\n"


@dataclass(frozen=True, slots=True)
class TextEnd:
    """Why and where a candidate's text ends (it keeps text[:end])."""

    reason: FinishReason
    end: int


class StopRules:
    """The text conditions that finish a row, checked only after a token that may complete one."""

    def __init__(self, stop_strings: Sequence[str], *, answer_line: bool) -> None:
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.answer_line = answer_line

    @property
    def trigger_chars(self) -> str:
        """Characters one of which the last token must show for a rule to have just matched."""
        chars = {s[-1] for s in self.stop_strings}
        if self.answer_line:
            chars.add(ANSWER_LINE_END)
        return "".join(sorted(chars))

    def find(self, text: str) -> TextEnd | None:
        """The earliest end in `text`: a stop string (dropped) or an answer line (kept)."""
        best: TextEnd | None = None
        for stop in self.stop_strings:
            at = text.find(stop)
            if at >= 0 and (best is None or at < best.end):
                best = TextEnd("stop", at)
        if self.answer_line:
            match = ANSWER_LINE.search(text)
            # The answer line keeps its number and drops the newline that completed it.
            if match is not None and (best is None or match.start() < best.end):
                best = TextEnd("answer", match.end() - 1)
        return best
