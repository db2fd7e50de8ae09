"""`verisolve repro mini`: one folder holds one run's settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.repro.mini import MINI, RUN_FILE, SMOKE, Run, SettingsMismatchError, claim_folder

runner = CliRunner()


def test_a_new_folder_records_the_sizes_and_seed(tmp_path: Path) -> None:
    claim_folder(Run(tmp_path / "run", SMOKE, seed=3))
    recorded = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert recorded["seed"] == 3
    assert recorded["test_samples"] == SMOKE.test_samples
    assert recorded["shape"]["layers"] == SMOKE.shape.layers
    assert recorded["scaling"] == list(SMOKE.scaling)
    assert not list((tmp_path / "run").glob("*.partial"))


def test_the_same_settings_resume_and_others_are_named(tmp_path: Path) -> None:
    claim_folder(Run(tmp_path, SMOKE))
    claim_folder(Run(tmp_path, SMOKE))  # the same run, resumed
    other = replace(SMOKE, test_samples=100, shape=replace(SMOKE.shape, layers=2))
    with pytest.raises(SettingsMismatchError) as refused:
        claim_folder(Run(tmp_path, other, seed=1))
    message = str(refused.value)
    assert "test_samples 4 (now 100)" in message
    assert "shape.layers 1 (now 2)" in message
    assert "seed 0 (now 1)" in message
    assert "gen_problems" not in message


def test_the_command_refuses_a_folder_of_another_run_before_any_stage(tmp_path: Path) -> None:
    out = tmp_path / "run"
    claim_folder(Run(out, MINI))
    result = runner.invoke(app, ["repro", "mini", "--out", str(out), "--test-samples", "100"])
    assert result.exit_code == 1
    assert "test_samples 32 (now 100)" in result.stderr
    assert "another --out" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [RUN_FILE]


def test_a_folder_from_before_a_setting_existed_resumes_at_its_default(tmp_path: Path) -> None:
    claim_folder(Run(tmp_path, SMOKE))
    path = tmp_path / RUN_FILE
    recorded = json.loads(path.read_text())
    del recorded["distractor_rate"]  # as run.json was written before the option
    path.write_text(json.dumps(recorded))
    claim_folder(Run(tmp_path, SMOKE))
    with pytest.raises(SettingsMismatchError, match=r"distractor_rate 0\.3 \(now 0\.5\)"):
        claim_folder(Run(tmp_path, replace(SMOKE, distractor_rate=0.5)))
    # A tuple's default compares as the list JSON reads back.
    other = tmp_path / "mini"
    claim_folder(Run(other, MINI))
    recorded = json.loads((other / RUN_FILE).read_text())
    del recorded["scaling"]
    (other / RUN_FILE).write_text(json.dumps(recorded))
    claim_folder(Run(other, MINI))


@pytest.mark.parametrize(
    ("given", "names"),
    [
        (
            ["--min-steps", "3", "--max-steps", "5", "--distractors", "0.5"],
            ["min_steps 2 (now 3)", "max_steps 4 (now 5)", "distractor_rate 0.3 (now 0.5)"],
        ),
        (
            ["--ver-layers", "6", "--ver-hidden", "320", "--ver-base-learning-rate", "1e-3"],
            [
                "ver_shape.layers None (now 6)",
                "ver_shape.hidden None (now 320)",
                "ver_shape.heads None (now 5)",
                "ver_base_lr None (now 0.001)",
            ],
        ),
        (["--share-prompts"], ["ver_share_prompts False (now True)"]),
    ],
    ids=["difficulty", "verifier-shape", "shared-prompts"],
)
def test_the_options_reach_the_runs_settings(
    tmp_path: Path, given: list[str], names: list[str]
) -> None:
    out = tmp_path / "run"
    claim_folder(Run(out, MINI))
    result = runner.invoke(app, ["repro", "mini", "--out", str(out), *given])
    assert result.exit_code == 1
    for named in names:
        assert named in result.stderr


def test_fewer_most_steps_than_fewest_is_refused_before_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["repro", "mini", "--out", str(out), "--min-steps", "4", "--max-steps", "3"]
    )
    assert result.exit_code == 1
    assert "--min-steps 4 is more than --max-steps 3" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--ver-hidden", "300"], "--ver-hidden 300 is not a multiple of the run's head size, 64"),
        (["--ver-layers", "6", "--ver-base-problems", "0"], "needs a starting model of its own"),
        (["--ver-base-learning-rate", "1e-3", "--ver-base-problems", "0"], "--ver-base-problems"),
        (["--ver-base-learning-rate", "0"], "--ver-base-learning-rate 0.0 is not above 0"),
    ],
)
def test_a_verifier_shape_that_cannot_be_built_is_refused_before_the_folder(
    tmp_path: Path, given: list[str], message: str
) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["repro", "mini", "--out", str(out), *given])
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())
    assert not out.exists()


def test_the_verifiers_shape_keeps_the_runs_vocabulary() -> None:
    with pytest.raises(ValueError, match="vocabulary and positions"):
        replace(MINI, ver_shape=replace(MINI.shape, vocab=1024))


@pytest.mark.parametrize("share", [False, True])
def test_the_verifiers_training_shares_prompts_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, share: bool
) -> None:
    from verisolve.repro import mini

    commands: list[tuple[str, ...]] = []
    monkeypatch.setattr(Run, "verisolve", lambda self, *args: commands.append(args))
    run = Run(tmp_path, replace(MINI, ver_share_prompts=share), say=lambda _: None)
    mini._train_verifier(run, mini.VERIFIER, ["--jobs", "1"])
    (command,) = commands
    assert command[:2] == ("train", "verifier")
    assert ("--share-prompts" in command) is share
