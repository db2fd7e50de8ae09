"""The shared few-shot prefix is a stable token prefix of every problem's prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verisolve.inference.prompt_split import PROBES, shared_prefix_ids
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.exemplars import default_prompt
from verisolve.modelstore.manifest import PromptSpec
from verisolve.modelstore.tiny import build_tiny_tokenizer
from verisolve.settings import get_settings

SAMPLES = Path(__file__).resolve().parents[2] / "shared/verisolve/data/sample_problems.jsonl"
ODD = ("", " leading space", "trailing\n", "#### 5", "\u00e9t\u00e9", "<<2+2=4>>", "x" * 300)


def questions() -> list[str]:
    """Our sample problems, GSM8K's first test problems when present, and odd ones."""
    out = [json.loads(line)["question"] for line in SAMPLES.read_text().splitlines()]
    test = get_settings().gsm8k_dir / "test.jsonl"
    if test.is_file():
        with test.open() as handle:
            out += [json.loads(next(handle))["question"] for _ in range(200)]
    return out + list(ODD)


def assert_stable(tokenizer: TextTokenizer, spec: PromptSpec, qs: list[str]) -> list[int]:
    shared = shared_prefix_ids(tokenizer, spec)
    for question in qs:
        ids = tokenizer.encode(spec.render(question))
        assert ids[: len(shared)] == shared, question
        assert len(ids) > len(shared)
    return shared


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return TextTokenizer.from_file(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def test_the_default_prompt_shares_everything_before_the_question(tiny: TextTokenizer) -> None:
    spec = default_prompt()
    shared = assert_stable(tiny, spec, questions())
    assert tiny.decode(shared) == spec.head().rstrip()


@pytest.mark.parametrize(
    "spec",
    [
        PromptSpec(template="{exemplars}{question}", exemplar_template="{question}={solution}"),
        PromptSpec(template="Solve.\n{exemplars}Q: {question}\nA:"),
        PromptSpec(template="{question}\nAnswer:"),
    ],
    ids=["glued", "preamble", "no-exemplars"],
)
def test_any_template_splits_at_a_stable_boundary(tiny: TextTokenizer, spec: PromptSpec) -> None:
    spec = spec.model_copy(update={"exemplars": default_prompt().exemplars[:2]})
    assert_stable(tiny, spec, questions() + list(PROBES))


def test_the_default_model_tokenizer_splits_cleanly(user_models_path: Path) -> None:
    from verisolve.modelstore.default import default_model_dir

    path = default_model_dir(user_models_path) / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"no default model at {path.parent} (VERISOLVE_MODEL_DIR)")
    tokenizer = TextTokenizer.from_file(path)
    shared = assert_stable(tokenizer, default_prompt(), questions())
    assert len(shared) > 500, "the four exemplars should be shared"
