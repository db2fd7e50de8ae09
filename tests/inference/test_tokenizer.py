"""The generator tokenizer wrapper on the tiny byte-level BPE tokenizer."""

from __future__ import annotations

import pytest

from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.tiny import EOS, build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    path = build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    return TextTokenizer.from_file(path)


@pytest.mark.parametrize("text", ["He has 3*4 = <<3*4=12>>12 apples.\n#### 12\n", "café ü 7"])
def test_encode_decode_round_trip(tokenizer: TextTokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize(
    ("after", "text"), [("<<3*4=", "12>>"), ("<<7-9=", "-2>>"), ("x=", "0.25>>"), ("", "5>>")]
)
def test_encode_continuation_writes_exactly_the_text(
    tokenizer: TextTokenizer, after: str, text: str
) -> None:
    ids = tokenizer.encode_continuation(text, after=after)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer.encode(after, special_tokens=False) + ids) == after + text


def test_char_mask_marks_tokens_showing_the_chars(tokenizer: TextTokenizer) -> None:
    mask = tokenizer.char_mask("=\n", tokenizer.vocab_size + 3)
    pieces = tokenizer.pieces()
    assert mask.shape == (tokenizer.vocab_size + 3,)
    for i, piece in enumerate(pieces):
        assert mask[i] == ("=" in piece or "\n" in piece or "\ufffd" in piece), piece
    assert not mask[tokenizer.vocab_size :].any()
    assert mask[tokenizer.encode("=", special_tokens=False)[0]]


def test_special_tokens_are_skipped_in_text(tokenizer: TextTokenizer) -> None:
    ids = tokenizer.encode("5") + tokenizer.encode(EOS, special_tokens=False)
    assert tokenizer.decode(ids) == "5"
