"""A candidate's text as HTML: calculator spans checked, tokens aligned with stored values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from services.submission.ui.rendering import calc_spans, render_text, value_class
from services.submission.ui.tokens import TokenSpan, VerifierTokenizer, shade
from verisolve.inference.verifier import verifier_text
from verisolve.modelstore.manifest import Manifest
from verisolve.modelstore.tiny import build_tiny_tokenizer

QUESTION = "Tom has 2 kites and makes 3 more. How many kites?"
TEXT = "He adds <<2+3=5>>5 kites, then <<5%2=1>>1, then <<2*3=7>>7.\n#### 5"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> VerifierTokenizer:
    folder: Path = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer(folder)
    manifest = Manifest(kind="verifier", name="t", score_form="token", pad_token_id=0)
    return VerifierTokenizer(manifest, Tokenizer.from_file(str(folder / "tokenizer.json")))


def test_calculator_spans_say_whether_the_result_holds() -> None:
    spans = calc_spans(TEXT)
    assert [(s.expr, s.ok) for s in spans] == [("2+3", True), ("5%2", False), ("2*3", False)]
    assert "percent" in spans[1].note
    assert spans[2].note == "the calculator gives 6, not 7"
    assert TEXT[spans[0].start : spans[0].end] == "<<2+3=5>>"


def test_an_unfinished_annotation_is_plain_text() -> None:
    assert calc_spans("The total is <<2+3=") == []


def test_values_for_every_scored_token_keep_only_the_solutions(
    tokenizer: VerifierTokenizer,
) -> None:
    full = verifier_text(tokenizer.manifest.prompt, QUESTION, TEXT)
    n = len(tokenizer.tokenizer.encode(full).ids)
    shading = shade(tokenizer, QUESTION, TEXT, [i / n for i in range(n)])
    assert shading.note is None
    spans = shading.spans
    assert spans[0].start == 0
    assert spans[-1].end == len(TEXT)
    assert spans[-1].value == pytest.approx((n - 1) / n)
    assert "".join(TEXT[s.start : s.end] for s in spans) == TEXT


def test_values_for_the_solution_tokens_only(tokenizer: VerifierTokenizer) -> None:
    full = verifier_text(tokenizer.manifest.prompt, QUESTION, TEXT)
    n_full = len(tokenizer.tokenizer.encode(full).ids)
    n_prompt = len(shade(tokenizer, QUESTION, TEXT, [0.0] * n_full).spans)
    shading = shade(tokenizer, QUESTION, TEXT, [0.25] * n_prompt)
    assert shading.note is None
    assert {s.value for s in shading.spans} == {0.25}


def test_leading_whitespace_of_the_completion_keeps_positions(
    tokenizer: VerifierTokenizer,
) -> None:
    text = "  " + TEXT
    n = len(
        tokenizer.tokenizer.encode(verifier_text(tokenizer.manifest.prompt, QUESTION, text)).ids
    )
    spans = shade(tokenizer, QUESTION, text, [0.5] * n).spans
    assert spans[0].start == 2  # the completion's own spaces stay unshaded, before "He"
    assert spans[-1].end == len(text)


def test_tokens_split_at_annotation_edges_keep_their_value() -> None:
    text = "x <<2+3=5>>5"
    tokens = (TokenSpan(0, 4, 0.95), TokenSpan(4, 12, 0.05))  # the first one straddles "<<"
    html = str(render_text(text, tokens))
    assert html.startswith('<span class="tok v9" title="0.950">x </span><mark class="calc calc-ok"')
    assert '<span class="tok v9" title="0.950">&lt;&lt;</span>' in html
    assert html.endswith('<span class="tok v0" title="0.050">5</span>')
    assert re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">") == text


@pytest.mark.parametrize(("value", "name"), [(-0.2, "v0"), (0.0, "v0"), (0.55, "v5"), (1.0, "v9")])
def test_value_classes(value: float, name: str) -> None:
    assert value_class(value) == name
