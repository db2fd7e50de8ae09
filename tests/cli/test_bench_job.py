"""`verisolve bench job` on the tiny model: both engines, the same candidates' counts, ratios."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from verisolve.benchmarks import job
from verisolve.cli.app import app
from verisolve.inference.engine import Generator
from verisolve.modelstore.manifest import PromptSpec

runner = CliRunner()
SAMPLES = Path(__file__).resolve().parents[2] / "shared/verisolve/data/sample_problems.jsonl"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("bench-job")
    hf = build_tiny_model(root / "hf")
    prompt = PromptSpec(exemplars=[{"question": "2+2?", "solution": "<<2+2=4>>4\n#### 4"}] * 2)
    export_generator(hf, root / "model", name="tiny", prompt=prompt, stop=["\n\n"])
    return root / "model"


def test_bench_job_runs_both_engines_and_reports_ratios(tiny_model: Path) -> None:
    args = ["bench", "job", "--model", str(tiny_model), "--problems", "3"]
    args += ["--problems-file", str(SAMPLES), "--samples", "3", "--samples", "2"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "6", "--rows", "4", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    runs = {(r["engine"], r["samples"]): r for r in out["runs"]}
    assert set(runs) == {
        ("single-problem-n64", 64),
        ("per-problem", 3),
        ("batched", 3),
        ("per-problem", 2),
        ("batched", 2),
    }
    for n in (3, 2):
        assert runs[("batched", n)]["candidates"] == runs[("per-problem", n)]["candidates"] == 3 * n
        assert out[f"speedup_vs_per_problem_n{n}"] > 0
        # Every token after a row's first was fed to it in one step (rows_per_step is rounded).
        batched = runs[("batched", n)]
        fed = batched["tokens"] - batched["candidates"]
        assert 0 < batched["rows_per_step"] <= 4
        assert abs(batched["steps"] * batched["rows_per_step"] - fed) <= 0.05 * batched["steps"]
        assert "steps" not in runs[("per-problem", n)]
    assert out["speedup_vs_per_problem"] == out["speedup_vs_per_problem_n3"]
    assert out["shared_prefix_tokens"] > 0
    assert out["rows_in_flight"] == 4
    assert out["provider"] == "cpu"
    # Each run in a process of its own, which held the model it ran.
    assert out["isolated"] is True
    assert all(r["peak_mb"] is None or r["peak_mb"] > 0 for r in out["runs"])
    # The tiny model was not built from a GGUF file: llama.cpp cannot run it, installed or not.
    assert out["llama_cpp"] in (job.LLAMA_CPP_MISSING, job.LLAMA_CPP_NO_GGUF)
    assert "speedup_vs_llama_cpp" not in out


def test_bench_job_runs_the_batch_engine_in_chunks_too(tiny_model: Path) -> None:
    args = ["bench", "job", "--model", str(tiny_model), "--problems", "3", "--chunk", "1"]
    args += ["--problems-file", str(SAMPLES), "--samples", "2", "--in-process"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "6", "--rows", "4", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    runs = {r["engine"]: r for r in out["runs"]}
    assert out["chunk"] == 1
    # Three streams of one problem: the same candidates, never more than its 2 rows a step, and
    # at least as many steps as one stream whose problems overlap.
    chunked, whole = runs["batched-chunked"], runs["batched"]
    assert chunked["candidates"] == whole["candidates"] == 6
    assert chunked["rows_per_step"] <= 2
    assert chunked["steps"] >= whole["steps"]
    assert out["one_stream_vs_chunks_n2"] > 0


class _FakeLlama:
    """Stands in for llama.cpp's model: its generators are the tiny model's own engine."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.tokenizer = gen.tokenizer
        self.opened: list[tuple[int, int]] = []
        self.closed = False

    @contextmanager
    def generator(self, rows: int, cells: int) -> Iterator[Generator]:
        self.opened.append((rows, cells))
        yield self.gen

    def close(self) -> None:
        self.closed = True


def test_bench_job_runs_llama_cpp_at_each_n_when_it_can(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes: list[_FakeLlama] = []

    def open_llama_cpp(
        setup: job.JobSetup, _manifest: object, _tokenizer: object, *, load: bool = True
    ) -> object:
        if not load:
            return None, "fake llama.cpp"
        fakes.append(_FakeLlama(Generator.load(setup.model_dir)))
        return fakes[-1], "fake llama.cpp"

    monkeypatch.setattr(job, "open_llama_cpp", open_llama_cpp)
    # In this process, so that the stand-in is what runs.
    args = ["bench", "job", "--model", str(tiny_model), "--problems", "2", "--samples", "3"]
    args += ["--samples", "2", "--problems-file", str(SAMPLES), "--max-new-tokens", "5"]
    args += ["--in-process"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    runs = {(r["engine"], r["samples"]): r for r in out["runs"]}
    for n in (3, 2):
        assert runs[("llama.cpp", n)]["candidates"] == runs[("batched", n)]["candidates"] == 2 * n
        assert out[f"speedup_vs_llama_cpp_n{n}"] > 0
    assert out["speedup_vs_llama_cpp"] == out["speedup_vs_llama_cpp_n3"]
    assert out["llama_cpp"] == "fake llama.cpp"
    # One model and one context per N, sized for every row's new tokens past the longest prompt.
    assert all(fake.closed for fake in fakes)
    assert [rows for fake in fakes for rows, _ in fake.opened] == [3, 2]
    assert all(cells > rows * 5 for fake in fakes for rows, cells in fake.opened)

    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "llama.cpp" in table.stdout
    assert "fake llama.cpp" in table.stdout


def test_bench_job_table_and_a_bad_problem_file(tiny_model: Path, tmp_path: Path) -> None:
    args = ["bench", "job", "--model", str(tiny_model), "--problems", "2", "--samples", "2"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "4", "--problems-file", str(SAMPLES)])
    assert result.exit_code == 0, result.output
    assert "tiny: 2 problems, 4 new tokens, 2 shots" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "fine"}\n{"no": 1}\n')
    result = runner.invoke(app, [*args, "--problems-file", str(bad)])
    assert result.exit_code == 1
    assert "bad.jsonl:2: expected an object with a 'question'" in result.output


def test_bench_job_names_an_unknown_or_missing_provider(tiny_model: Path) -> None:
    args = ["bench", "job", "--model", str(tiny_model), "--problems", "1", "--samples", "1"]
    args += ["--problems-file", str(SAMPLES), "--max-new-tokens", "2", "--in-process"]
    result = runner.invoke(app, [*args, "--provider", "tpu"])
    assert result.exit_code == 1
    assert "unknown provider 'tpu'" in result.output
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        result = runner.invoke(app, [*args, "--provider", "cuda"])
        assert result.exit_code == 1
        assert "provider 'cuda' asked for" in result.output
