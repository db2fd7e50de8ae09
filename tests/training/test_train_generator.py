"""`verisolve train generator`: fine-tuning lowers held-out loss; the engine runs the result."""

from __future__ import annotations

import json
import random
from pathlib import Path

from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.inference.engine import Generator
from verisolve.inference.sampling import SamplingParams
from verisolve.modelstore.manifest import Manifest
from verisolve.settings import get_settings

runner = CliRunner()


def write_solutions(path: Path, n: int, seed: int = 0) -> Path:
    """GSM8K-format problems with worked answers in one fixed pattern."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        question = f"she has {a} apples and buys {b} more. how many apples?"
        answer = f"she has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"
        rows.append({"question": question, "answer": answer})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_fine_tuning_lowers_held_out_loss_and_the_engine_runs_it(
    tiny_base: Path, tmp_path: Path
) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    data = write_solutions(tmp_path / "train.jsonl", 80)
    args = ["train", "generator", str(data), "--base", str(tiny_base), "--name", "tuned"]
    args += ["--learning-rate", "3e-3", "--batch-tokens", "1024", "--accumulation", "1"]
    args += ["--val-fraction", "0.1", "--dropout", "0.1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model_dir = get_settings().models_path / "tuned"
    manifest = Manifest.load(model_dir)
    training = manifest.training or {}
    assert [e["epoch"] for e in training["epochs"]] == [1, 2]  # the paper's 2 epochs
    assert training["epochs"][-1]["loss"] < training["loss_before"]
    assert "decoder_prefix" in manifest.graphs
    assert manifest.prompt.exemplars == []

    engine = Generator.load(model_dir)
    prompt = engine.prompt_for("she has 3 apples and buys 4 more. how many apples?")
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=24, calculator=False, stop=False)
    [completion] = engine.generate(prompt, params)
    ids = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(prompt).ids
    reference = AutoModelForCausalLM.from_pretrained(str(model_dir / "hf")).eval()
    with torch.no_grad():
        out = reference.generate(
            torch.tensor([ids]),
            do_sample=False,
            max_new_tokens=24,
            eos_token_id=manifest.eos_token_ids,
            pad_token_id=manifest.eos_token_ids[0],
        )
    assert list(completion.token_ids) == out[0, len(ids) :].tolist()


def test_a_problem_without_a_worked_answer_is_named(tiny_base: Path, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "q one", "answer": "#### 3"}\n{"question": "q two"}\n')
    args = ["train", "generator", str(data), "--base", str(tiny_base), "--name", "x"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "line 2: answer: missing" in result.output
    assert not (get_settings().models_path / "x").exists()
