"""Answer extraction and numeric normalisation: pure functions over text.

Numbers are compared as exact fractions and keyed by `canonical`, so "1,234.0", "$1234" and
"1234." are one answer. `extract_answer` reads a completion in this order, first hit wins:

1. the first `#### N` (the GSM8K final-answer line; the first, as in Cobbe et al.'s grader,
   because a model that keeps going after it is writing past its answer);
2. the last "The answer is N" (also "the final answer is: N");
3. the last line that is only "A: N" (also "Answer: N", "Final answer: N");
4. the last `\\boxed{N}` (LaTeX `\\frac{p}{q}`, `\\$`, `\\%` and `{,}` inside are understood);
5. the last number anywhere in the text.

A step whose number does not parse (for example one longer than `MAX_DIGITS` digits, as in
a model that loops on "3333…", or whose canonical form is over `MAX_ANSWER_CHARS`) falls
through to the next step.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Longer digit runs are degenerate model output, not answers; the bound also keeps
# Python's int-from-string limit (4,300 digits) out of reach.
MAX_DIGITS = 50
# The width of the answer columns; only contrived fractions ("1/2^80") have longer canonical forms.
MAX_ANSWER_CHARS = 64
_MAX_NUMBER_CHARS = 4 * MAX_DIGITS

_SIGNS = "+\\-\u2212"
_BODY = r"(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(
    rf"(?P<sign1>[{_SIGNS}])?(?:\s*\$)?\s*(?P<sign2>[{_SIGNS}])?"
    rf"(?P<body>{_BODY})(?:/(?P<den>\d+))?\s*%?"
)
# A number inside running text. A sign counts only where it cannot be a binary operator
# ("16-3" holds 16 and 3, "is -3" holds -3).
_TOKEN = (
    rf"(?:(?<![\w)\]}}.,])[{_SIGNS}])?\$?(?<![\d.])(?:{_BODY})"
    r"(?:/\d+(?![\d.,]))?%?"
)
_TOKEN_RE = re.compile(_TOKEN)
_HASHES_RE = re.compile(rf"####[^\S\n]*(?:\*\*[^\S\n]*)?(?P<n>{_TOKEN})")
_THE_ANSWER_RE = re.compile(rf"(?i:answer\s+is)(?:\s*:)?\s*(?:\*\*)?(?P<n>{_TOKEN})")
_A_LINE_RE = re.compile(
    rf"^[^\S\n]*(?:A|(?i:(?:final\s+)?answer))[^\S\n]*:[^\S\n]*(?:\*\*)?"
    rf"(?P<n>{_TOKEN})(?:\*\*)?[^\S\n]*(?:\.[^\S\n]*)?$",
    re.MULTILINE,
)
_BOXED = "\\boxed{"
_FRAC_RE = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_LATEX_NOISE = (("{,}", ","), ("\\!", ""), ("\\,", ""), ("\\$", "$"), ("\\%", "%"))
_TEXT_RE = re.compile(r"\\(?:text|mathrm|textbf)\{[^{}]*\}")


def parse_number(text: str) -> Fraction | None:
    """One number as written in text ("$1,234.50", "-3/4", "50%", "**18**."), or None."""
    s = text.strip().strip("*_`").strip()
    if len(s) > _MAX_NUMBER_CHARS:
        return None
    if s.endswith("."):
        s = s[:-1].rstrip().rstrip("*_`")
    match = _NUMBER_RE.fullmatch(s)
    if match is None or (match["sign1"] and match["sign2"]):
        return None
    body, den = match["body"].replace(",", ""), match["den"]
    if sum(c.isdigit() for c in body + (den or "")) > MAX_DIGITS:
        return None
    value = Fraction(body)
    if den is not None:
        if int(den) == 0:
            return None
        value /= int(den)
    sign = match["sign1"] or match["sign2"]
    return -value if sign in ("-", "\u2212") else value


def canonical(value: Fraction) -> str:
    """The one string of a number: "18", "-3.5", "0.125", or "p/q" when not a finite decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    twos, fives, rest = _factor_2_5(value.denominator)
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * (10**places // value.denominator)
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def _factor_2_5(n: int) -> tuple[int, int, int]:
    """How many times 2 and 5 divide n, and what is left."""
    twos = fives = 0
    while n % 2 == 0:
        n, twos = n // 2, twos + 1
    while n % 5 == 0:
        n, fives = n // 5, fives + 1
    return twos, fives, n


def parse_gold(answer: str) -> str | None:
    """A gold answer (GSM8K solution, solution ending in `A: N`, or bare number) -> canonical."""
    # `A: N` is the ending of the ground truth in the paper's released model samples.
    text = answer.strip()
    last = text.rsplit("\n", 1)[-1].strip()
    if last.startswith("####"):
        return _canonical_or_none(parse_number(last[4:]))
    if (a_line := _A_LINE_RE.fullmatch(last)) is not None:
        return _canonical_or_none(parse_number(a_line["n"]))
    return _canonical_or_none(parse_number(text))


def extract_answer(completion: str) -> str | None:
    """The completion's final answer, canonical, or None; the order is in the module docstring."""
    for found in (
        _first(_HASHES_RE, completion),
        _last(_THE_ANSWER_RE, completion),
        _last(_A_LINE_RE, completion),
        _last_boxed(completion),
        _last_token(completion),
    ):
        if found is not None and (answer := _canonical_or_none(parse_number(found))) is not None:
            return answer
    return None


def is_correct(predicted: str | None, gold: str | None) -> bool:
    """Whether two answers are the same number; False when either is missing or not a number."""
    if predicted is None or gold is None:
        return False
    p, g = parse_number(predicted), parse_number(gold)
    return p is not None and g is not None and p == g


def _canonical_or_none(value: Fraction | None) -> str | None:
    """The canonical string, or None for no number or one too long to be an answer."""
    if value is None:
        return None
    text = canonical(value)
    return text if len(text) <= MAX_ANSWER_CHARS else None


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return None if match is None else match["n"]


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    found = None
    for match in pattern.finditer(text):
        found = match["n"]
    return found


def _last_token(text: str) -> str | None:
    found = None
    for match in _TOKEN_RE.finditer(text):
        found = match[0]
    return found


def _last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, braces matched, LaTeX number notation undone."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, begin = 1, start + len(_BOXED)
    for pos in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return _unlatex(text[begin:pos])
    return None


def _unlatex(content: str) -> str:
    content = _TEXT_RE.sub("", _FRAC_RE.sub(r"\1/\2", content))
    for old, new in _LATEX_NOISE:
        content = content.replace(old, new)
    return content
