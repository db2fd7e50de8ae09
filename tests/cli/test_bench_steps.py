"""`verisolve bench steps` on a tiny model with both decoder graphs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.modelstore.manifest import Manifest, PromptSpec

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.prefix_export import add_prefix_decoder
    from verisolve.modelstore.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("bench-steps")
    hf = build_tiny_model(root / "hf")
    prompt = PromptSpec(exemplars=[{"question": "2+2?", "solution": "<<2+2=4>>4\n#### 4"}] * 2)
    out = root / "model"
    export_generator(hf, out, name="tiny", prompt=prompt)
    manifest = Manifest.load(out)
    graph = add_prefix_decoder(hf, out)
    assert graph is not None
    manifest.graphs["decoder_prefix"] = graph
    manifest.save(out)
    return out


def test_steps_json_times_both_graphs_at_every_point(tiny_model: Path) -> None:
    args = ["bench", "steps", "--model", str(tiny_model), "--rows", "4", "--repeats", "1"]
    args += ["--shots", "0", "--shots", "2", "--generated", "1", "--generated", "5", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    shots = {int(k): v for k, v in out["shots"].items()}
    assert shots[2] > shots[0] > 0
    points = {(t["graph"], t["prompt_tokens"], t["generated_tokens"]) for t in out["timings"]}
    # The cascade graph (continuous batching) is timed beside the per-problem graphs.
    assert "decoder_cascade" in Manifest.load(tiny_model).graphs
    assert points == {
        (graph, prompt, own)
        for graph in ("standard", "prefix", "cascade")
        for prompt in shots.values()
        for own in (1, 5)
    }
    assert all(t["seconds"] > 0 and t["rows"] == 4 for t in out["timings"])


def test_steps_table_shows_the_speedup(tiny_model: Path) -> None:
    args = ["bench", "steps", "--model", str(tiny_model), "--rows", "2", "--repeats", "1"]
    result = runner.invoke(app, [*args, "--shots", "0", "--shots", "2"])
    assert result.exit_code == 0, result.output
    assert "One decode step at N=2" in result.output
    assert "speedup" in result.output
    assert "cascade ms" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shots", "3"], "--shots 3: the model's prompt has 2"),
        (["--shots", "0"], "no 'decoder_prefix'"),
    ],
)
def test_steps_errors_name_the_problem(
    tiny_model: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    model = tiny_model
    if "decoder_prefix" in message:
        # A model exported without the prefix graph.
        model = tmp_path / "plain"
        model.mkdir()
        manifest = Manifest.load(tiny_model)
        manifest.graphs.pop("decoder_prefix")
        manifest.save(model)
        (model / manifest.tokenizer).write_bytes((tiny_model / manifest.tokenizer).read_bytes())
    result = runner.invoke(app, ["bench", "steps", "--model", str(model), *args])
    assert result.exit_code == 1
    assert message in result.output


def test_steps_without_a_cascade_graph_time_the_other_two(tiny_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "no-cascade"
    model.mkdir()
    manifest = Manifest.load(tiny_model)
    manifest.graphs.pop("decoder_cascade")
    for name in {manifest.tokenizer, *manifest.graphs.values()}:
        (model / name).symlink_to(tiny_model / name)
    manifest.save(model)
    args = ["bench", "steps", "--model", str(model), "--rows", "2", "--repeats", "1"]
    result = runner.invoke(app, [*args, "--shots", "0", "--generated", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert {t["graph"] for t in json.loads(result.output)["timings"]} == {"standard", "prefix"}
    result = runner.invoke(app, [*args, "--shots", "0"])
    assert result.exit_code == 0, result.output
    assert "prefix ms" in result.output
    assert "cascade ms" not in result.output


def test_steps_profile_says_where_each_step_goes(tiny_model: Path) -> None:
    args = ["bench", "steps", "--model", str(tiny_model), "--rows", "2", "--repeats", "2"]
    args += ["--shots", "2", "--generated", "1", "--generated", "4", "--profile"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    timings = json.loads(result.output)["timings"]
    assert len(timings) == 6
    for t in timings:
        ops = t["ops"]
        # Every graph multiplies matrices; the time outside kernels comes last.
        assert any(op in ops for op in ("MatMul", "FusedMatMul", "Gemm")), ops
        assert list(ops)[-1] == "between nodes"
        assert all(seconds >= 0 for seconds in ops.values())
        assert sum(ops.values()) - ops["between nodes"] > 0
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Where a step goes at N=2" in result.output
    assert "between nodes" in result.output


def test_steps_without_profile_report_no_ops(tiny_model: Path) -> None:
    args = ["bench", "steps", "--model", str(tiny_model), "--rows", "2", "--repeats", "1"]
    result = runner.invoke(app, [*args, "--shots", "0", "--generated", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert all(t["ops"] is None for t in json.loads(result.output)["timings"])


def _linked_copy(source: Path, target: Path, *, drop: str | None = None) -> Path:
    """A model directory whose files link to `source`'s (without the graph role `drop`)."""
    target.mkdir()
    manifest = Manifest.load(source)
    if drop is not None:
        manifest.graphs.pop(drop)
    for name in {manifest.tokenizer, *manifest.graphs.values()}:
        (target / name).symlink_to(source / name)
    manifest.save(target)
    return target


def test_steps_against_another_export_times_both_cascade_graphs(
    tiny_model: Path, tmp_path: Path
) -> None:
    other = _linked_copy(tiny_model, tmp_path / "other")
    args = ["bench", "steps", "--model", str(tiny_model), "--against", str(other)]
    args += ["--rows", "2", "--repeats", "2", "--shots", "0", "--generated", "1"]
    result = runner.invoke(app, [*args, "--generated", "4", "--json"])
    assert result.exit_code == 0, result.output
    timings = json.loads(result.output)["timings"]
    assert [t["graph"] for t in timings] == ["standard", "prefix", "cascade", "cascade against"] * 2
    assert all(t["seconds"] > 0 for t in timings)
    result = runner.invoke(app, [*args, "--profile"])
    assert result.exit_code == 0, result.output
    # The ratio column (two decimals, where the prefix speedup has one); narrow terminals wrap
    # its header.
    assert re.search(r"│ +\d+\.\d\dx │", result.output), result.output
    assert "cascade against" in result.output  # a column of the op table too
    result = runner.invoke(app, [*args, "--json", "--profile"])
    assert all(t["ops"] for t in json.loads(result.output)["timings"])


def test_steps_against_an_export_whose_caches_are_float16(tiny_model: Path, tmp_path: Path) -> None:
    """An fp32 export against one with float16 caches (as int8 builds have): each graph is fed
    the same step in the dtypes it takes."""
    from verisolve.modelstore.cascade_export import CASCADE_ROLE, add_cascade_decoder

    half = _linked_copy(tiny_model, tmp_path / "half", drop=CASCADE_ROLE)
    graph = add_cascade_decoder(tiny_model.parent / "hf", half, cache_dtype="float16")
    assert graph is not None
    manifest = Manifest.load(half)
    manifest.graphs[CASCADE_ROLE] = graph
    manifest.save(half)
    for model, other in ((tiny_model, half), (half, tiny_model)):
        args = ["bench", "steps", "--model", str(model), "--against", str(other), "--rows", "3"]
        result = runner.invoke(app, [*args, "--repeats", "1", "--shots", "2", "--json"])
        assert result.exit_code == 0, result.output
        timings = json.loads(result.output)["timings"]
        assert [t["graph"] for t in timings][-2:] == ["cascade", "cascade against"]


def test_steps_against_needs_a_cascade_graph_on_both_sides(
    tiny_model: Path, tmp_path: Path
) -> None:
    plain = _linked_copy(tiny_model, tmp_path / "plain", drop="decoder_cascade")
    for model, other in ((tiny_model, plain), (plain, tiny_model)):
        args = ["bench", "steps", "--model", str(model), "--against", str(other)]
        result = runner.invoke(app, [*args, "--rows", "2", "--repeats", "1", "--shots", "0"])
        assert result.exit_code == 1
        assert "both need one" in result.output


def test_steps_take_registered_names(tiny_model: Path, tmp_path: Path) -> None:
    from verisolve.db import get_engine, session_scope
    from verisolve.db.migrate import prepare_schema
    from verisolve.modelstore import registry

    other = _linked_copy(tiny_model, tmp_path / "other")
    engine = get_engine()
    prepare_schema(engine)
    with session_scope(engine) as session:
        for name, path in (("tiny", tiny_model), ("tiny-other", other)):
            manifest = Manifest.load(path).model_copy(update={"name": name})
            registry.register(session, manifest, path)
    args = ["bench", "steps", "--model", "tiny", "--against", "tiny-other", "--rows", "2"]
    args += ["--repeats", "1", "--shots", "0", "--generated", "1", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [t["graph"] for t in json.loads(result.output)["timings"]][-1] == "cascade against"
    result = runner.invoke(app, ["bench", "steps", "--model", "tiny", "--against", "nope"])
    assert result.exit_code == 1
    assert "no model 'nope'" in result.output
