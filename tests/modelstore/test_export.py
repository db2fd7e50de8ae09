"""Generator export: the model directory, its manifest, int8, and the atomic write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from verisolve.modelstore.export import (
    ExportError,
    atomic_model_dir,
    eos_token_ids,
    export_generator,
    hash_onnx_files,
)
from verisolve.modelstore.manifest import Manifest, PromptSpec, sha256_file

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("export") / "hf", arch="qwen2")


@pytest.fixture(scope="module")
def exported(hf_dir: Path) -> Path:
    prompt = PromptSpec(exemplars=[{"question": "1+1?", "solution": "<<1+1=2>>2\n#### 2"}])
    out = hf_dir.parent / "fp32"
    export_generator(hf_dir, out, name="tiny-qwen2", prompt=prompt, stop=["\n\nQuestion:"])
    return out


# Our own decode graphs beside optimum's model.onnx.
GRAPH_FILES = ("decoder_cascade.onnx", "decoder_prefix.onnx")


def test_manifest_describes_the_directory(exported: Path, hf_dir: Path) -> None:
    manifest = Manifest.load(exported)
    assert (manifest.kind, manifest.name, manifest.architecture) == (
        "generator",
        "tiny-qwen2",
        "qwen2",
    )
    assert manifest.graphs == {
        "decoder": "model.onnx",
        "decoder_prefix": "decoder_prefix.onnx",
        "decoder_cascade": "decoder_cascade.onnx",
    }
    assert manifest.stop == ["\n\nQuestion:"]
    assert manifest.prompt.exemplars[0]["question"] == "1+1?"
    assert manifest.eos_token_ids == [0]
    assert manifest.source == str(hf_dir.resolve())
    assert not manifest.int8
    assert manifest.files == {
        name: sha256_file(exported / name) for name in (*GRAPH_FILES, "model.onnx")
    }
    assert (exported / "tokenizer.json").read_bytes() == (hf_dir / "tokenizer.json").read_bytes()
    assert (exported / "config.json").is_file()
    assert exported.stat().st_mode & 0o777 == 0o755
    assert not list(exported.parent.glob(".fp32.*"))


def test_int8_export_is_quantised_and_still_generates(hf_dir: Path, exported: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from verisolve.inference.engine import Generator
    from verisolve.inference.sampling import SamplingParams

    out = hf_dir.parent / "int8"
    manifest = export_generator(hf_dir, out, name="tiny-int8", int8=True)
    assert manifest.int8
    assert set(manifest.files) == {*GRAPH_FILES, "model.onnx"}
    assert sorted(p.name for p in out.glob("*.onnx")) == [*GRAPH_FILES, "model.onnx"]
    nodes = onnx.load(str(out / "model.onnx")).graph.node
    ops = [node.op_type for node in nodes]
    assert "MatMulInteger" in ops
    # Activations quantised per row with a fixed scale, in every graph: none per batch.
    assert "DynamicQuantizeLinear" not in ops
    assert ops.count("QuantizeLinear") == 6  # q/k/v's input, o's, gate/up's, per layer
    # The MLP down-projections and the head are blockwise (their inputs' outliers wreck
    # per-tensor int8), in every graph alike.
    down = [node.op_type for node in nodes if "/mlp/down_proj/" in node.name]
    assert down == ["MatMulNBits", "MatMulNBits"]
    cascade = onnx.load(str(out / "decoder_cascade.onnx")).graph.node
    assert [n.op_type for n in cascade if "/mlp/down_proj/" in n.name] == down
    for graph in (nodes, cascade):
        head = [n.op_type for n in graph if n.name.startswith("/lm_head/")]
        assert [op for op in head if op.startswith("MatMul")] == ["MatMulNBits"]
    assert "MatMulInteger" in {n.op_type for n in cascade}
    assert "DynamicQuantizeLinear" not in {n.op_type for n in cascade}
    # The int8 build's cascade graph holds the rows' own caches in float16, the fp32 build's
    # in float32; the shared prefix stays in the model's dtype.
    for build, own in ((out, onnx.TensorProto.FLOAT16), (exported, onnx.TensorProto.FLOAT)):
        inputs = onnx.load(str(build / "decoder_cascade.onnx"), load_external_data=False).graph
        types = {i.name: i.type.tensor_type.elem_type for i in inputs.input}
        assert (types["own_key.0"], types["prefix_key.0"]) == (own, onnx.TensorProto.FLOAT)
    assert (out / "model.onnx").stat().st_size < (exported / "model.onnx").stat().st_size
    gen = Generator.load(out)
    params = SamplingParams(n=3, temperature=0.0, max_new_tokens=12, stop=False)
    fp32 = Generator.load(exported).generate("He buys 3 pens and", params)
    cands = gen.generate("He buys 3 pens and", params)
    assert all(c.num_tokens == 12 or c.finish_reason == "eos" for c in cands)
    # A random tiny model has flat logits, so int8 may pick other tokens, but not at the start.
    assert cands[0].token_ids[0] == fp32[0].token_ids[0]


def test_keep_hf_keeps_config_and_weights(hf_dir: Path) -> None:
    out = hf_dir.parent / "with-hf"
    export_generator(hf_dir, out, name="x", keep_hf=True)
    assert (out / "hf" / "config.json").is_file()
    assert (out / "hf" / "model.safetensors").is_file()
    assert set(Manifest.load(out).files) == {*GRAPH_FILES, "model.onnx"}


def test_export_refuses_an_existing_directory_unless_overwrite(hf_dir: Path) -> None:
    out = hf_dir.parent / "again"
    first = export_generator(hf_dir, out, name="one")
    with pytest.raises(FileExistsError):
        export_generator(hf_dir, out, name="two")
    assert Manifest.load(out).name == "one"
    second = export_generator(hf_dir, out, name="two", overwrite=True)
    assert Manifest.load(out).name == "two"
    assert second.files == first.files
    assert not list(out.parent.glob(".again.*"))


def test_failed_export_leaves_nothing(hf_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "no-tokenizer"
    shutil.copytree(hf_dir, source)
    (source / "tokenizer.json").unlink()
    out = tmp_path / "model"
    with pytest.raises(ExportError, match=r"tokenizer\.json"):
        export_generator(source, out, name="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-tokenizer"]


def test_export_needs_a_config(tmp_path: Path) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    with pytest.raises(ExportError, match=r"config\.json"):
        export_generator(tmp_path, tmp_path / "out", name="x")


def test_atomic_model_dir_renames_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def half_written() -> None:
        with atomic_model_dir(target) as tmp:
            (tmp / "half.onnx").write_bytes(b"x")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        half_written()
    assert list(tmp_path.iterdir()) == []
    with atomic_model_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a"
    with atomic_model_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_hash_onnx_files_includes_external_data(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), name="w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
        [weight],
    )
    model = helper.make_model(graph)
    onnx.save(
        model,
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        location="m.data",
        size_threshold=0,
    )
    (tmp_path / "notes.txt").write_text("not hashed")
    hashes = hash_onnx_files(tmp_path)
    assert hashes == {
        "m.onnx": sha256_file(tmp_path / "m.onnx"),
        "m.data": sha256_file(tmp_path / "m.data"),
    }


@pytest.mark.parametrize(
    ("generation", "config", "expected"),
    [
        ({"eos_token_id": [2, 7]}, {"eos_token_id": 3}, [2, 7]),
        ({"eos_token_id": 5}, {"eos_token_id": 3}, [5]),
        ({}, {"eos_token_id": 3}, [3]),
        (None, {"eos_token_id": None}, []),
    ],
)
def test_eos_token_ids(
    tmp_path: Path,
    generation: dict[str, object] | None,
    config: dict[str, object],
    expected: list[int],
) -> None:
    if generation is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert eos_token_ids(tmp_path) == expected
