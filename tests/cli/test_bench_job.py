"""`verisolve bench job` on the tiny model: both engines, the same candidates' counts, ratios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app
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
    assert out["speedup_vs_per_problem"] == out["speedup_vs_per_problem_n3"]
    assert out["shared_prefix_tokens"] > 0
    assert out["rows_in_flight"] == 4


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
