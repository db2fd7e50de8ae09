"""Checkpoints and resume; one process against two (torchrun, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.inference.verifier import Verifier
from verisolve.modelstore.manifest import Manifest
from verisolve.settings import get_settings

runner = CliRunner()


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    tiny_base: Path, candidates_file: Path, tmp_path: Path
) -> None:
    from verisolve.training.base import resolve_base
    from verisolve.training.data import load_candidate_file
    from verisolve.training.loop import LoopConfig, LoopRun
    from verisolve.training.verifier import VerifierOptions, train_verifier

    data, base = load_candidate_file(candidates_file), resolve_base(str(tiny_base))
    config = LoopConfig(
        epochs=2, learning_rate=3e-3, batch_tokens=1024, accumulation=1, checkpoint_every=2
    )
    options = VerifierOptions(dropout=0.1)  # dropout too: its random streams must resume
    whole = train_verifier(data, base, "whole", config, options, LoopRun(tmp_path / "a"))
    assert whole is not None

    stopped = LoopRun(tmp_path / "b", stop_after=3)
    assert train_verifier(data, base, "resumed", config, options, stopped) is None
    assert not (get_settings().models_path / "resumed").exists()
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-2"]
    resumed = train_verifier(
        data, base, "resumed", config, options, LoopRun(tmp_path / "b", resume=True)
    )
    assert resumed is not None
    assert resumed.files == whole.files
    assert (resumed.training or {})["epochs"] == (whole.training or {})["epochs"]
    assert not (tmp_path / "b").exists()  # a finished run keeps no checkpoints


def test_resume_without_checkpoints_is_refused(tiny_base: Path, candidates_file: Path) -> None:
    args = ["train", "verifier", "--candidates", str(candidates_file), "--base", str(tiny_base)]
    result = runner.invoke(app, [*args, "--name", "v", "--resume"])
    assert result.exit_code == 1
    assert "no checkpoint" in result.output


def scores(name: str, candidates_file: Path) -> list[float]:
    verifier = Verifier.load(get_settings().models_path / name)
    rows = [json.loads(line) for line in candidates_file.read_text().splitlines()]
    return [verifier.score(r["question"], [r["completion"]])[0].score for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--share-prompts"]], ids=["each", "shared-prompts"])
def test_two_processes_train_what_one_does(
    tiny_base: Path, candidates_file: Path, extra: list[str]
) -> None:
    # With shared prompts, each process's micro-batches have their own numbers of parts: one
    # forward per micro-batch all the same, as DDP needs (it hung with one forward per part).
    options = ["train", "verifier", "--candidates", str(candidates_file), "--base", str(tiny_base)]
    options += ["--learning-rate", "3e-3", "--batch-tokens", "1024", "--accumulation", "2", *extra]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += [
        "--nproc_per_node",
        "2",
        "--no-python",
        str(Path(sys.executable).parent / "verisolve"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launcher, *options, "--name", "two"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = runner.invoke(app, [*options, "--name", "one"])
    assert result.exit_code == 0, result.output
    two = Manifest.load(get_settings().models_path / "two").training or {}
    assert two["processes"] == 2
    assert scores("two", candidates_file) == pytest.approx(scores("one", candidates_file), abs=1e-4)
