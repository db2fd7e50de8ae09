"""The engine on a real (tiny, random) Llama exported by optimum: exactness against transformers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from verisolve.inference.backends import DecoderBackend, Decoding
from verisolve.inference.engine import Completion, Generator
from verisolve.inference.onnx_decoder import OnnxDecoder
from verisolve.inference.providers import ProviderUnavailableError
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.manifest import Manifest
from verisolve.modelstore.tiny import sample_texts

GREEDY = SamplingParams(n=3, temperature=0.0, max_new_tokens=30, calculator=False, stop=False)


def load(model_dir: Path, *, bind: bool = False, compact: bool = True) -> Generator:
    manifest = Manifest.load(model_dir)
    backend = OnnxDecoder.load(model_dir / manifest.graphs["decoder"], threads=2, bind=bind)
    tokenizer = TextTokenizer.from_file(model_dir / manifest.tokenizer)
    return Generator(
        backend,
        tokenizer,
        eos_token_ids=manifest.eos_token_ids,
        stop=manifest.stop,
        compact=compact,
        manifest=manifest,
    )


def key(cand: Completion) -> tuple[object, ...]:
    return (cand.sample_index, cand.token_ids, cand.text, cand.finish_reason)


@pytest.fixture(scope="module")
def generator(tiny_generator_dir: Path) -> Generator:
    return load(tiny_generator_dir)


@pytest.mark.parametrize("bind", [False, True], ids=["run", "iobinding"])
def test_greedy_equals_transformers_generate(
    tiny_hf_dir: Path, tiny_generator_dir: Path, bind: bool
) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_hf_dir))
    gen = load(tiny_generator_dir, bind=bind)
    for prompt in sample_texts(4, seed=3):
        ids = gen.tokenizer.encode(prompt)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=GREEDY.max_new_tokens,
                pad_token_id=model.config.pad_token_id,
            )
        expected = tuple(out[0, len(ids) :].tolist())
        for cand in gen.generate(ids, GREEDY):
            assert cand.token_ids == expected


def test_iobinding_and_run_give_the_same_candidates(tiny_generator_dir: Path) -> None:
    params = SamplingParams(n=6, temperature=1.0, top_p=0.9, max_new_tokens=25, seed=4)
    prompt = sample_texts(1, seed=5)[0]
    plain = load(tiny_generator_dir).generate(prompt, params, key="q")
    bound = load(tiny_generator_dir, bind=True).generate(prompt, params, key="q")
    assert [key(c) for c in plain] == [key(c) for c in bound]


def test_same_seed_same_candidates(generator: Generator) -> None:
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=20, seed=9)
    prompt = sample_texts(1, seed=6)[0]
    first = generator.generate(prompt, params, key="q1")
    again = generator.generate(prompt, params, key="q1")
    other = generator.generate(prompt, SamplingParams(n=8, temperature=1.0, max_new_tokens=20))
    assert [key(c) for c in first] == [key(c) for c in again]
    assert [c.token_ids for c in first] != [c.token_ids for c in other]
    # Rows sample their own first tokens from the one prefill.
    assert len({c.token_ids[0] for c in first}) > 1


@pytest.mark.parametrize("bind", [False, True], ids=["run", "iobinding"])
def test_dropping_finished_rows_changes_no_other_row(tiny_generator_dir: Path, bind: bool) -> None:
    # Common single characters as stop strings make random rows end at different steps.
    params = SamplingParams(n=10, temperature=1.0, max_new_tokens=40, seed=1)
    prompt = sample_texts(1, seed=7)[0]
    runs = []
    for compact in (True, False):
        gen = load(tiny_generator_dir, bind=bind, compact=compact)
        gen.stop = ("e", "5")
        runs.append(gen.generate(prompt, params, key="q"))
    compacted, kept = runs
    assert [key(c) for c in compacted] == [key(c) for c in kept]
    lengths = {c.num_tokens for c in compacted}
    assert len(lengths) > 2, "rows should finish at different steps"


class WritesFirst:
    """Wraps a backend so that every row first writes fixed tokens, then follows the model."""

    def __init__(self, inner: DecoderBackend, tokens: Sequence[int]) -> None:
        self.inner = inner
        self.tokens = list(tokens)

    def prefill(self, prompt_ids: Sequence[int]) -> tuple[NDArray[np.float32], Decoding]:
        logits, decoding = self.inner.prefill(prompt_ids)
        return self._bias(logits[None], 0)[0], _Biased(decoding, self)

    def _bias(self, logits: NDArray[np.float32], step: int) -> NDArray[np.float32]:
        if step < len(self.tokens):
            logits = logits.copy()
            logits[:, self.tokens[step]] += 1000.0
        return logits


class _Biased:
    def __init__(self, inner: Decoding, owner: WritesFirst) -> None:
        self.inner, self.owner, self.steps = inner, owner, 0

    def expand(self, n: int) -> None:
        self.inner.expand(n)

    def keep(self, rows: NDArray[np.int64]) -> None:
        self.inner.keep(rows)

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        self.steps += 1
        return self.owner._bias(self.inner.step(tokens), self.steps)


def test_calculator_forcing_on_the_real_model(generator: Generator) -> None:
    """The model 'writes' <<3*4=, the engine forces 12>>, and the model continues after it."""
    tok = generator.tokenizer
    prompt = tok.encode(sample_texts(1, seed=8)[0])
    call = tok.encode("<<3*4=", special_tokens=False)
    result = tok.encode_continuation("12>>", after="<<3*4=")
    forced = Generator(WritesFirst(generator.backend, call), tok, stop=())
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=20, stop=False)
    [cand, _] = forced.generate(prompt, params)
    assert cand.text.startswith("<<3*4=12>>")
    assert (cand.calculator_calls, cand.calculator_failures) == (1, 0)
    # What follows is the model's own greedy continuation of prompt + "<<3*4=12>>".
    plain = SamplingParams(n=1, temperature=0.0, max_new_tokens=20 - len(call) - len(result))
    [after] = generator.generate(prompt + call + result, plain)
    assert cand.token_ids == tuple(call + result) + after.token_ids


def test_asking_for_cuda_without_it_fails_at_start(tiny_generator_dir: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(ProviderUnavailableError, match="cuda"):
        Generator.load(tiny_generator_dir, provider="cuda")


def test_load_reads_the_manifest(tiny_generator_dir: Path) -> None:
    gen = Generator.load(tiny_generator_dir)
    assert gen.stop == ("\n\n",)
    assert gen.eos_token_ids.tolist() == Manifest.load(tiny_generator_dir).eos_token_ids
    [cand] = gen.generate("He buys 3 pens", SamplingParams(n=1, max_new_tokens=5, seed=1))
    assert 1 <= cand.num_tokens <= 5
