"""A candidate's text as HTML: calculator spans marked, tokens shaded by the verifier's value.

The text is cut at every token boundary and every `<<expr=result>>` boundary; each piece is
escaped, wrapped in a span that carries its token's value (colour class and hover title), and
the pieces inside an annotation are wrapped in one <mark> that says what the calculator gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Generic, TypeVar

from markupsafe import Markup, escape

from services.submission.ui.tokens import TokenSpan
from verisolve.answers import parse_number
from verisolve.calculator import CalculatorError, calculate

CALL = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
VALUE_BINS = 10
T = TypeVar("T")


@dataclass(frozen=True)
class CalcSpan:
    """One `<<expr=result>>` annotation: where it lies and whether the result holds."""

    start: int
    end: int
    expr: str
    written: str
    ok: bool
    note: str


def calc_spans(text: str) -> list[CalcSpan]:
    """Every complete annotation in the text, checked against the calculator."""
    spans = []
    for match in CALL.finditer(text):
        expr, written = match.group(1), match.group(2)
        try:
            result = calculate(expr)
        except CalculatorError as exc:
            spans.append(CalcSpan(match.start(), match.end(), expr, written, False, str(exc)))
            continue
        same = parse_number(written) is not None and parse_number(written) == parse_number(result)
        note = f"{expr} = {result}" if same else f"the calculator gives {result}, not {written}"
        spans.append(CalcSpan(match.start(), match.end(), expr, written, same, note))
    return spans


def value_class(value: float) -> str:
    """The colour class of a verifier value in [0, 1]: v0 (surely wrong) .. v9 (surely right)."""
    clipped = min(max(value, 0.0), 1.0)
    return f"v{min(int(clipped * VALUE_BINS), VALUE_BINS - 1)}"


def _piece(text: str, token: TokenSpan | None) -> str:
    if token is None:
        return str(escape(text))
    title = f"{token.value:.3f}"
    return f'<span class="tok {value_class(token.value)}" title="{title}">{escape(text)}</span>'


def render_text(text: str, tokens: tuple[TokenSpan, ...] = ()) -> Markup:
    """The candidate's text as HTML with its calculator spans and token shading."""
    calls = calc_spans(text)
    cuts = {0, len(text)}
    edges = [(t.start, t.end) for t in tokens] + [(c.start, c.end) for c in calls]
    for start, end in edges:
        cuts.update((min(start, len(text)), min(end, len(text))))
    bounds = sorted(cuts)
    token_at = _lookup([(t.start, t.end, t) for t in tokens])
    call_at = _lookup([(c.start, c.end, c) for c in calls])
    html: list[str] = []
    current: CalcSpan | None = None
    for start, end in pairwise(bounds):
        call = call_at(start)
        if call is not current:
            if current is not None:
                html.append("</mark>")
            if call is not None:
                kind = "calc-ok" if call.ok else "calc-fail"
                html.append(f'<mark class="calc {kind}" title="{escape(call.note)}">')
            current = call
        html.append(_piece(text[start:end], token_at(start)))
    if current is not None:
        html.append("</mark>")
    return Markup("".join(html))


def _lookup(spans: list[tuple[int, int, T]]) -> _Finder[T]:
    return _Finder(sorted(spans, key=lambda s: s[0]))


class _Finder(Generic[T]):
    """Finds the span that covers a position, for positions asked in increasing order."""

    def __init__(self, spans: list[tuple[int, int, T]]) -> None:
        self._spans = spans
        self._next = 0

    def __call__(self, position: int) -> T | None:
        while self._next < len(self._spans) and self._spans[self._next][1] <= position:
            self._next += 1
        if self._next < len(self._spans):
            start, _, item = self._spans[self._next]
            if start <= position:
                return item
        return None
