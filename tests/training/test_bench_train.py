"""`verisolve bench train`: tokens/s and the share of the matmul peak, or a clear skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app

runner = CliRunner()


def test_bench_train_reports_both_precisions(tiny_base: Path) -> None:
    args = ["bench", "train", "--model", str(tiny_base), "--seq-len", "16", "--rows", "2"]
    result = runner.invoke(app, [*args, "--steps", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for precision in ("fp32", "bf16"):
        row = report[precision]
        assert row["tokens_per_s"] > 0
        ratio = row["achieved_tflops"] / row["matmul_peak_tflops"]
        assert row["fraction_of_peak"] == pytest.approx(ratio)
        assert row["fraction_of_peak"] > 0


def test_bench_train_skips_without_the_default_model() -> None:
    result = runner.invoke(app, ["bench", "train"])
    assert result.exit_code == 0
    assert "skipped: the default model is not installed" in result.output
