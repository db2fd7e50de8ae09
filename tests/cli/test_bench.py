"""`verisolve bench generate` on the tiny model, and the benchmark's fair token count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.benchmarks.generate import TokenCounter, bench_prompt, first_question
from verisolve.cli.app import app
from verisolve.inference.stopping import StopRules
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.manifest import Manifest, PromptSpec
from verisolve.modelstore.tiny import EOS, build_tiny_tokenizer

runner = CliRunner()
BASE = ("bench", "generate", "--model")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("bench")
    hf = build_tiny_model(root / "hf")
    prompt = PromptSpec(exemplars=[{"question": "2+2?", "solution": "<<2+2=4>>4\n#### 4"}] * 2)
    export_generator(hf, root / "model", name="tiny", prompt=prompt, stop=["\n\n"], keep_hf=True)
    return root / "model"


def test_bench_generate_json_has_the_ratios(tiny_model: Path) -> None:
    result = runner.invoke(
        app,
        [
            *BASE,
            str(tiny_model),
            "--samples",
            "4",
            "--max-new-tokens",
            "8",
            "--shots",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    for runner_name in ("engine", "engine-standard-graph", "transformers", "optimum"):
        assert data[f"{runner_name}_tokens_per_s"] > 0
        assert 4 <= data[f"{runner_name}_tokens"] <= 32
    assert data["speedup_vs_transformers"] == pytest.approx(
        data["engine_tokens_per_s"] / data["transformers_tokens_per_s"]
    )
    assert data["speedup_vs_engine-standard-graph"] == pytest.approx(
        data["engine_tokens_per_s"] / data["engine-standard-graph_tokens_per_s"]
    )
    assert data["speedup_vs_optimum"] == pytest.approx(
        data["engine_tokens_per_s"] / data["optimum_tokens_per_s"]
    )
    assert (data["samples"], data["max_new_tokens"], data["shots"]) == (4, 8, 1)


def test_bench_generate_table_for_the_engine_alone(tiny_model: Path) -> None:
    result = runner.invoke(
        app,
        [*BASE, str(tiny_model), "--samples", "2", "--max-new-tokens", "4", "--only", "engine"],
    )
    assert result.exit_code == 0, result.output
    assert "engine" in result.stdout
    assert "transformers" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nonexistent/model"], "no model"),
        (["--only", "vllm"], "unknown runner 'vllm'"),
        (["--shots", "9"], "the model's prompt has 2"),
    ],
)
def test_bench_generate_errors(tiny_model: Path, args: list[str], message: str) -> None:
    result = runner.invoke(
        app, [*BASE, str(tiny_model), "--samples", "1", "--only", "engine", *args]
    )
    assert result.exit_code == 1
    assert message in result.stderr


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return TextTokenizer.from_file(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.mark.parametrize(
    ("text", "expected_text"),
    [
        ("It is 4.\n#### 4\n\nQuestion: more text here", "It is 4.\n#### 4\n"),
        ("It is 4.\n\nQuestion: more", "It is 4.\n\nQuestion:"),
        ("no end at all", "no end at all"),
    ],
)
def test_token_counter_stops_where_the_engine_would(
    tokenizer: TextTokenizer, text: str, expected_text: str
) -> None:
    count = TokenCounter(tokenizer, [0], StopRules(["\n\nQuestion:"], answer_line=True))
    ids = tokenizer.encode(text, special_tokens=False)
    counted = count([ids])
    # The counted prefix is the shortest one whose text already ends the row.
    assert tokenizer.decode(ids[:counted]).startswith(expected_text)
    assert not tokenizer.decode(ids[: counted - 1]).startswith(expected_text)


def test_token_counter_counts_up_to_eos_and_no_padding(tokenizer: TextTokenizer) -> None:
    eos = tokenizer.encode(EOS, special_tokens=False)[0]
    ids = tokenizer.encode("one two", special_tokens=False)
    count = TokenCounter(tokenizer, [eos], StopRules([], answer_line=True))
    assert count([[*ids, eos, eos, eos], ids]) == 2 * len(ids) + 1
    assert count.finished([*ids, eos])
    assert not count.finished(ids)


def test_bench_prompt_takes_the_first_shots(tmp_path: Path) -> None:
    shots = [{"question": f"q{i}", "solution": f"s{i}"} for i in range(3)]
    manifest = Manifest(kind="generator", name="m", prompt=PromptSpec(exemplars=shots))
    prompt = bench_prompt(manifest, "Q?", 2)
    assert "q1" in prompt
    assert "q2" not in prompt
    assert prompt.endswith("Question: Q?\nAnswer:")
    assert "q2" in bench_prompt(manifest, "Q?", None)


def test_first_question(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl"
    good.write_text('{"question": "How many?", "answer": "3"}\n{"question": "x"}\n')
    assert first_question(good) == "How many?"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        first_question(bad)
