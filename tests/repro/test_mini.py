"""`verisolve repro mini --smoke`: every stage through the real commands, then the artefacts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from verisolve.modelstore.manifest import Manifest

pytestmark = [pytest.mark.slow, pytest.mark.export]


def _run(out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERISOLVE_")}
    command = [sys.executable, "-m", "verisolve", "repro", "mini", "--smoke", "--out", str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def test_smoke_run_goes_through_every_stage_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    out = tmp_path / "run"
    first = _run(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    models = out / "state" / "models"
    assert Manifest.load(models / "mini-gen").kind == "generator"
    assert Manifest.load(models / "mini-ver-base").kind == "generator"
    verifier = Manifest.load(models / "mini-ver")
    assert verifier.kind == "verifier"
    hyper = (verifier.training or {})["hyperparameters"]
    assert hyper["likelihood_features"] is True
    assert hyper["value_head"] is False
    assert hyper["likelihood_lr"] == 1e-2
    assert set((verifier.training or {})["likelihood_head"]) >= {"running_mean", "bias"}
    assert (verifier.training or {})["base"]["model"] == "mini-ver-base"
    engine = sa.create_engine(f"sqlite:///{out / 'state' / 'verisolve.db'}")
    with engine.connect() as connection:
        jobs = dict(connection.execute(sa.text("SELECT name, status FROM jobs")).all())
    engine.dispose()
    assert jobs == {"mini-train": "done", "mini-test": "done"}
    result = json.loads((out / "result.json").read_text())
    assert result["test_problems"] == 12
    assert result["n_samples"] == 4
    for name in ("verifier", "topk-vote", "majority", "first", "single-sample"):
        assert 0.0 <= result["accuracy"][name] <= 1.0
        low, high = result["ci95"]["accuracy"][name]
        assert low <= result["accuracy"][name] <= high
    assert set(result["curves"]) == {"verifier", "topk-vote", "majority", "first"}
    # The vote's k up to N; k = 1 is verifier top-1.
    sweep = result["topk_vote_by_k"]
    assert list(sweep) == ["1", "2", "3", "4"]
    assert sweep["1"]["accuracy"] == result["accuracy"]["verifier"]
    assert sweep["3"]["accuracy"] == result["accuracy"]["topk-vote"]
    assert "top-k vote by k: k=1" in first.stdout
    assert [p["train_problems"] for p in result["scaling"]] == [12, 24]
    for point in result["scaling"]:
        low, high = point["ci95"]["verifier"]
        assert low <= point["verifier"] <= high
    gain = result["scaling_gain"]
    assert gain["train_problems"] == [12, 24]
    low, high = gain["ci95"]
    assert low <= gain["verifier - majority"] <= high
    assert "gain over majority vote, 24 problems against 12" in first.stdout
    assert (out / "result.png").stat().st_size > 10_000
    # Run again: every stage is found done and skipped, and the result is the same.
    second = _run(out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "train generator: 0s" in second.stdout
    again = json.loads((out / "result.json").read_text())
    assert again["accuracy"] == result["accuracy"]


@pytest.mark.parametrize("unseen", [True, False])
def test_the_verifiers_problems_are_new_to_the_generator_unless_smoke(
    tmp_path: Path, unseen: bool
) -> None:
    from dataclasses import replace

    from verisolve.repro.mini import SMOKE, Run, stage_data

    sizes = replace(
        SMOKE, gen_problems=30, ver_problems=12, test_problems=5, ver_unseen=unseen,
        ver_base_problems=50,
    )  # fmt: skip
    stage_data(Run(tmp_path, sizes, say=lambda _: None))

    def questions(name: str) -> list[str]:
        lines = (tmp_path / name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["question"] for line in lines]

    train, verifier = questions("train.jsonl"), questions("verifier-train.jsonl")
    assert (len(train), len(verifier)) == (30, 12)
    assert not set(train) & set(questions("test.jsonl"))
    if unseen:
        assert not set(train) & set(verifier)
    else:
        assert verifier == train[:12]
    # The verifier's starting model learns from the generator's problems and new ones only.
    base = questions("verifier-base-train.jsonl")
    assert len(base) == 50
    assert base[:30] == train
    assert not set(base) & (set(verifier) - set(train))
    assert not set(base) & set(questions("test.jsonl"))
    assert not (tmp_path / "train-pool.jsonl").exists()


def test_the_runs_difficulty_reaches_the_problems(tmp_path: Path) -> None:
    from dataclasses import replace

    from verisolve.repro.mini import SMOKE, Run, stage_data

    sizes = replace(
        SMOKE, gen_problems=20, ver_problems=8, test_problems=10, ver_base_problems=0,
        min_steps=5, max_steps=5, distractor_rate=0.0,
    )  # fmt: skip
    stage_data(Run(tmp_path, sizes, say=lambda _: None))
    number = re.compile(r"\d+")
    for name in ("train.jsonl", "verifier-train.jsonl", "test.jsonl"):
        for line in (tmp_path / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert row["answer"].count("<<") == 5, name
            # No distractors: every number of the question is used by the answer.
            assert set(number.findall(row["question"])) <= set(number.findall(row["answer"]))


def test_the_verifiers_starting_model_takes_its_own_shape_and_rate(tmp_path: Path) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    from dataclasses import replace

    from verisolve.repro.mini import (
        SMOKE,
        VERIFIER_BASE,
        Run,
        stage_base,
        stage_data,
        stage_verifier_base,
    )

    own = replace(SMOKE.shape, layers=2, hidden=96, heads=3)
    sizes = replace(
        SMOKE, gen_problems=30, ver_problems=4, test_problems=2, ver_base_problems=40,
        ver_shape=own, ver_base_lr=1e-3,
    )  # fmt: skip
    run = Run(tmp_path, sizes, say=lambda _: None)
    for stage in (stage_data, stage_base, stage_verifier_base):
        stage(run)
    generators = json.loads((tmp_path / "base" / "config.json").read_text())
    scratch = json.loads((tmp_path / "verifier-scratch" / "config.json").read_text())
    assert (generators["num_hidden_layers"], generators["hidden_size"]) == (1, 64)
    assert (scratch["num_hidden_layers"], scratch["hidden_size"]) == (2, 96)
    assert scratch["num_attention_heads"] == 3
    # One tokenizer for both: the verifier reads the generator's samples token for token.
    tokenizer = "tokenizer.json"
    assert (tmp_path / "verifier-scratch" / tokenizer).read_bytes() == (
        tmp_path / "base" / tokenizer
    ).read_bytes()
    training = Manifest.load(tmp_path / "state" / "models" / VERIFIER_BASE).training or {}
    assert training["base"]["path"] == str(tmp_path / "verifier-scratch")
    assert training["hyperparameters"]["learning_rate"] == 1e-3
