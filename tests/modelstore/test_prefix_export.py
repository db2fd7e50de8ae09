"""Exporting the prefix-shared decode graph: which models get one, and the int8 head rewrite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verisolve.modelstore.prefix_export import (
    HEAD_NODE,
    add_prefix_decoder,
    prefix_input_names,
    prefix_output_names,
    transpose_head,
    unsupported_reason,
)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"model_type": "llama"}, None),
        ({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}, None),
        ({"model_type": "mistral", "sliding_window": None}, None),
        ({"model_type": "mistral", "sliding_window": 4096}, "sliding attention window"),
        ({"model_type": "gpt2"}, "not one of"),
        ({"model_type": "llama", "rope_scaling": {"rope_type": "dynamic"}}, "dynamic rope"),
    ],
)
def test_unsupported_reason(config: dict[str, Any], reason: str | None) -> None:
    got = unsupported_reason(config)
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert reason in got


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("prefix-export") / "hf", seed=6)


def test_unsupported_models_get_no_prefix_graph(tiny_hf: Path, tmp_path: Path) -> None:
    config = (tiny_hf / "config.json").read_text().replace('"llama"', '"gpt2"')
    (tmp_path / "config.json").write_text(config)
    assert add_prefix_decoder(tmp_path, tmp_path / "out") is None
    assert not list(tmp_path.glob("*.onnx"))


def test_graph_names_and_dynamic_axes(tiny_hf: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    assert add_prefix_decoder(tiny_hf, tmp_path) == "decoder_prefix.onnx"
    session = ort.InferenceSession(str(tmp_path / "decoder_prefix.onnx"))
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert list(inputs) == prefix_input_names(2)
    assert list(outputs) == prefix_output_names(2)
    # The prompt's cache has one row; everything else has one row per sample.
    assert inputs["prefix_key.0"][0] == 1
    assert isinstance(inputs["prefix_key.0"][2], str)
    assert all(isinstance(inputs[n][0], str) for n in ("input_ids", "suffix_value.1"))
    assert isinstance(outputs["present_key.1"][2], str)


def _run(path: Path, rows: int = 3) -> list[Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    rng = np.random.default_rng(1)
    feeds: dict[str, Any] = {
        "input_ids": rng.integers(0, 500, (rows, 1)),
        "position_ids": np.full((rows, 1), 9, dtype=np.int64),
    }
    for i in session.get_inputs()[2:]:
        prompt = i.name.startswith("prefix_")
        shape = (1 if prompt else rows, i.shape[1], 5 if prompt else 4, i.shape[3])
        feeds[i.name] = rng.standard_normal(shape, dtype=np.float32)
    return list(session.run(None, feeds))


def test_transpose_head_keeps_the_outputs_and_lets_int8_quantise_the_head(
    tiny_hf: Path, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    from verisolve.modelstore.export import ExportError, quantize_int8
    from verisolve.modelstore.prefix_export import export_prefix_decoder

    gemm = export_prefix_decoder(tiny_hf, tmp_path / "gemm.onnx")
    rewritten = tmp_path / "matmul.onnx"
    rewritten.write_bytes(gemm.read_bytes())
    transpose_head(rewritten)
    for before, after in zip(_run(gemm), _run(rewritten), strict=True):
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
    quantized = tmp_path / "int8.onnx"
    quantize_int8(rewritten, quantized)
    ops = {n.name: n.op_type for n in onnx.load(str(quantized)).graph.node}
    assert HEAD_NODE not in ops
    # The head reads the embedding through a Transpose; it gets its own blockwise copy.
    assert [op for name, op in ops.items() if name.startswith("/lm_head/")] == ["MatMulNBits"]
    assert "MatMulInteger" in ops.values()
    for before, after in zip(_run(rewritten), _run(quantized), strict=True):
        # A random tiny model: logits near 0.1, int8 keeps them within a few hundredths.
        np.testing.assert_allclose(after, before, atol=0.05, rtol=0)
    with pytest.raises(ExportError, match="has no /lm_head/Gemm node"):
        transpose_head(rewritten)
