"""Safe, bounded arithmetic for the `expr` in GSM8K `<<expr=result>>` calculator annotations.

Supported: numbers (integers, decimals such as `2.5`, `.5` or `5.`, thousands commas such as
`1,000`, leading zeros), `+ - * / //`, unary `-` and `+`, parentheses, and `**` with an integer
exponent whose result stays within the digit bound. GSM8K's own annotations use only digits,
`+ - * / ( ) .` and, twice in train.jsonl, `//`.

Refused: everything else, including `%` (models write it both as percent and as modulo, so any
answer would be wrong half the time), names, calls, strings, exponent notation (`1e5`) and `_`.

The text is checked cheaply before it reaches `ast.parse` (length, characters, comma placement,
literal size, parenthesis count and depth, operator count), so hostile input is refused in
microseconds; the AST is then walked through a whitelist with exact `Fraction` arithmetic, and
every intermediate value is bounded in digits. No `eval`, no signals, no threads: safe to call
from worker threads.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

from verisolve.settings import get_settings

__all__ = ["CalculatorError", "calculate", "evaluate", "find_open_call", "format_result"]

# Bounds on work that do not depend on the configured length; every AST node but a number
# consumes an operator or a parenthesis, so these also bound the node count and recursion depth.
MAX_OPERATORS = 100
MAX_PARENS = 50
MAX_DEPTH = 20
MAX_EXPONENT = 100

# A terminating decimal with at most this many places is written exactly; others are rounded.
MAX_EXACT_PLACES = 6
# Rounded results keep two places, or three significant digits when the value is below one.
ROUND_PLACES = 2
ROUND_SIGNIFICANT = 3

_BAD_CHAR = re.compile(r"[^0-9+\-*/()., ]")
_COMMA_RUN = re.compile(r"[0-9.,]*,[0-9.,]*")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_LEADING_ZEROS = re.compile(r"(?<![0-9.])0+(?=[0-9])")
_PAREN = re.compile(r"[()]")
_OPERATOR_CHARS = "+-*/"
_CHAR_HINTS = {
    "%": " (it means percent to some writers and modulo to others)",
    "^": " (write ** for powers)",
}
_LOG2_10 = 3.3219280948873626


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message says why."""


def find_open_call(text: str) -> str | None:
    """The `expr` when `text` ends inside an unfinished annotation `<<expr=`, else None."""
    if not text.endswith("="):
        return None
    start = text.rfind("<<")
    if start < 0:
        return None
    expr = text[start + 2 : -1]
    # An annotation makes one call, at its first "="; a later "=" is the model's own text.
    if "=" in expr or ">>" in expr:
        return None
    return expr


def calculate(expr: str) -> str:
    """The result of `expr`, formatted as GSM8K writes it; raises CalculatorError."""
    return format_result(evaluate(expr))


def evaluate(expr: str) -> Fraction:
    """The exact value of `expr`; raises CalculatorError with the reason it was refused."""
    settings = get_settings()
    max_digits = settings.calc_max_digits
    text = _precheck(expr, settings.calc_max_expr_chars, max_digits)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise CalculatorError(f"not a valid arithmetic expression: {expr.strip()!r}") from exc
    return _Evaluator(text, max_digits).visit(tree.body)


def format_result(value: Fraction) -> str:
    """`value` as GSM8K writes results: `144`, `0.5`, `2.25`; repeating decimals rounded."""
    if value.denominator == 1:
        return str(value.numerator)
    places = _terminating_places(value.denominator)
    if places is None or places > MAX_EXACT_PLACES:
        places = _rounding_places(value)
    magnitude = abs(value)
    scaled = (magnitude.numerator * 10**places * 2 + magnitude.denominator) // (
        2 * magnitude.denominator
    )
    whole, frac = divmod(scaled, 10**places)
    digits = str(frac).rjust(places, "0").rstrip("0")
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def _terminating_places(denominator: int) -> int | None:
    """Decimal places of 1/denominator if it terminates, else None."""
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    return max(twos, fives) if denominator == 1 else None


def _rounding_places(value: Fraction) -> int:
    """Places for a rounded result: ROUND_PLACES, more for small values to keep significance."""
    magnitude = abs(value)
    if magnitude >= 1:
        return ROUND_PLACES
    zeros = 0
    while magnitude * 10 ** (zeros + 1) < 1:
        zeros += 1
    return max(ROUND_PLACES, zeros + ROUND_SIGNIFICANT)


def _precheck(expr: str, max_chars: int, max_digits: int) -> str:
    """Cheap textual checks that keep hostile input away from the parser; the text to parse."""
    if len(expr) > max_chars:
        raise CalculatorError(f"expression is longer than {max_chars} characters")
    text = expr.strip()
    if not text:
        raise CalculatorError("empty expression")
    # Counting runs at C speed, so long hostile input is refused before any regex scans it.
    operators = sum(text.count(op) for op in _OPERATOR_CHARS)
    if operators > MAX_OPERATORS:
        raise CalculatorError(f"more than {MAX_OPERATORS} operators")
    opens = text.count("(")
    if opens > MAX_PARENS:
        raise CalculatorError(f"more than {MAX_PARENS} pairs of parentheses")
    if opens != text.count(")"):
        raise CalculatorError("unbalanced parentheses")
    bad = _BAD_CHAR.search(text)
    if bad:
        char = bad.group()
        hint = _CHAR_HINTS.get(char, "")
        raise CalculatorError(f"unsupported character {char!r} at position {bad.start()}{hint}")
    if "," in text:
        text = _strip_thousands_commas(text)
    if re.search(rf"\d{{{max_digits + 1}}}", text):
        raise CalculatorError(f"a number has more than {max_digits} digits")
    _check_nesting(text)
    return _LEADING_ZEROS.sub("", text)


def _strip_thousands_commas(text: str) -> str:
    """`text` without thousands commas; a comma anywhere else is refused."""
    for run in _COMMA_RUN.finditer(text):
        if not _THOUSANDS.fullmatch(run.group()):
            raise CalculatorError(f"misplaced comma in {run.group()!r}")
    return text.replace(",", "")


def _check_nesting(text: str) -> None:
    """Refuse parentheses nested too deeply or closed before they open."""
    depth = 0
    for paren in _PAREN.finditer(text):
        depth += 1 if paren.group() == "(" else -1
        if depth > MAX_DEPTH:
            raise CalculatorError(f"parentheses nested deeper than {MAX_DEPTH}")
        if depth < 0:
            raise CalculatorError("unbalanced parentheses")


class _Evaluator:
    """Walks a parsed expression through the whitelist, bounding every value it makes."""

    def __init__(self, text: str, max_digits: int) -> None:
        self._text = text
        self._max_digits = max_digits
        self._limit = 10**max_digits
        self._max_bits = int(max_digits * _LOG2_10) + 1

    def visit(self, node: ast.expr) -> Fraction:
        """The value of one whitelisted node."""
        if isinstance(node, ast.Constant):
            return self._bounded(self._number(node))
        if isinstance(node, ast.UnaryOp):
            operand = self.visit(node.operand)
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return operand
            raise CalculatorError(f"unsupported unary operator {type(node.op).__name__}")
        if isinstance(node, ast.BinOp):
            left = self.visit(node.left)
            right = self.visit(node.right)
            return self._bounded(self._binary(node.op, left, right))
        raise CalculatorError(f"unsupported syntax: {type(node).__name__}")

    def _number(self, node: ast.Constant) -> Fraction:
        """A literal, read from the source text so that `0.1` is exactly one tenth."""
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"unsupported literal {node.value!r}")
        if isinstance(node.value, int):
            return Fraction(node.value)
        return Fraction(self._text[node.col_offset : node.end_col_offset])

    def _binary(self, op: ast.operator, left: Fraction, right: Fraction) -> Fraction:
        """One binary operation on bounded operands."""
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div | ast.FloorDiv):
            if right == 0:
                raise CalculatorError("division by zero")
            return left / right if isinstance(op, ast.Div) else Fraction(left // right)
        if isinstance(op, ast.Pow):
            return self._power(left, right)
        raise CalculatorError(f"unsupported operator {type(op).__name__}")

    def _power(self, base: Fraction, exponent: Fraction) -> Fraction:
        """`base ** exponent` for an integer exponent, refused before computing if too large."""
        if exponent.denominator != 1:
            raise CalculatorError("only whole-number exponents are supported")
        power = exponent.numerator
        if abs(power) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {power} is larger than {MAX_EXPONENT}")
        if base == 0 and power < 0:
            raise CalculatorError("division by zero")
        # bit_length - 1 is a lower bound on log2, so this never refuses a result that fits.
        bits = max(base.numerator.bit_length(), base.denominator.bit_length()) - 1
        if bits * abs(power) > self._max_bits:
            raise CalculatorError(f"result has more than {self._max_digits} digits")
        return base**power

    def _bounded(self, value: Fraction) -> Fraction:
        """`value`, refused if its numerator or denominator has more than the allowed digits."""
        if abs(value.numerator) >= self._limit or value.denominator >= self._limit:
            raise CalculatorError(f"a number has more than {self._max_digits} digits")
        return value
