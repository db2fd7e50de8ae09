"""The row-scaled int8 scheme: exact rewrites in fp32, then every weight product int8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verisolve.modelstore.prefix_export import export_prefix_decoder, transpose_head


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("int8") / "hf", seed=8)


@pytest.fixture(scope="module")
def fp32_graph(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's prefix graph in fp32, its head a MatMul (as quantisation gets it)."""
    path = export_prefix_decoder(tiny_hf, tmp_path_factory.mktemp("graph") / "fp32.onnx")
    transpose_head(path)
    return path


def _feeds(path: Path, rows: int = 4, seed: int = 1) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    rng = np.random.default_rng(seed)
    feeds: dict[str, Any] = {
        "input_ids": rng.integers(0, 500, (rows, 1)),
        "position_ids": np.full((rows, 1), 9, dtype=np.int64),
    }
    for i in session.get_inputs()[2:]:
        prompt = i.name.startswith("prefix_")
        shape = (1 if prompt else rows, i.shape[1], 5 if prompt else 4, i.shape[3])
        feeds[i.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def _logits(path: Path, feeds: dict[str, Any]) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path)).run(["logits"], feeds)[0]


def test_outliers_are_each_layers_largest_channels_and_reproducible(tiny_hf: Path) -> None:
    from verisolve.modelstore.int8 import OUTLIER_CHANNELS, down_proj_outliers

    found = down_proj_outliers(tiny_hf)
    assert found is not None
    assert sorted(found) == [0, 1]
    for channels in found.values():
        assert len(channels) == OUTLIER_CHANNELS
        assert channels == sorted(set(channels))
        assert all(0 <= c < 128 for c in channels)
    assert down_proj_outliers(tiny_hf) == found
    fewer = down_proj_outliers(tiny_hf, count=3)
    assert fewer is not None
    assert all(len(c) == 3 and set(c) <= set(found[i]) for i, c in fewer.items())


def test_splitting_outliers_and_scaling_rows_change_nothing_in_fp32(
    fp32_graph: Path, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    from verisolve.modelstore.int8 import scale_rows, split_outliers

    model = onnx.load(str(fp32_graph))
    split = split_outliers(model, {0: [3, 70, 127], 1: [0, 5]})
    assert split == [
        "/layers.0/mlp/down_proj/MatMul_outliers",
        "/layers.1/mlp/down_proj/MatMul_outliers",
    ]
    products = [
        n.name for n in model.graph.node if n.op_type == "MatMul" and "outliers" not in n.name
    ]
    weights = {i.name for i in model.graph.initializer}
    scale_rows(
        model, [n.name for n in model.graph.node if n.name in products and n.input[1] in weights]
    )
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(model, str(rewritten))
    onnx.checker.check_model(str(rewritten))
    for seed in (1, 2):
        feeds = _feeds(fp32_graph, seed=seed)
        np.testing.assert_allclose(
            _logits(rewritten, feeds), _logits(fp32_graph, feeds), atol=1e-5, rtol=0
        )


def test_row_scaled_int8_quantises_every_weight_product(fp32_graph: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from verisolve.modelstore.export import quantize_int8

    quantized = tmp_path / "int8.onnx"
    assert quantize_int8(fp32_graph, quantized, outliers={0: [1, 2], 1: [3]}) == []
    graph = onnx.load(str(quantized)).graph
    ops = {n.name: n.op_type for n in graph.node}
    assert "MatMulNBits" not in ops.values()
    # Left in fp32: the outlier channels' products and attention's (no weights); nothing else.
    fp32 = [name for name, op in ops.items() if op == "MatMul"]
    assert sorted(n for n in fp32 if "outliers" in n) == [
        "/layers.0/mlp/down_proj/MatMul_outliers",
        "/layers.1/mlp/down_proj/MatMul_outliers",
    ]
    assert not [n for n in fp32 if ("_proj/" in n and "outliers" not in n) or "lm_head" in n]
    scales = {i.name: i.dims for i in graph.initializer}
    head = [n for n in graph.node if n.name.startswith("/lm_head/") and "MatMul" in n.op_type]
    assert len(head) == 1
    # Per-channel: one weight scale per output token (the vocabulary of 512).
    assert list(scales[head[0].input[3]]) == [512]
    feeds = _feeds(fp32_graph)
    # A random tiny model: logits near 0.1, int8 keeps them within a few hundredths. With 8-bit
    # per-channel weights, CPUs without VNNI saturated: up to 0.14 off.
    np.testing.assert_allclose(_logits(quantized, feeds), _logits(fp32_graph, feeds), atol=0.05)


def test_default_int8_gives_each_row_the_same_logits_whatever_its_batch_mates(
    fp32_graph: Path, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    from verisolve.modelstore.export import quantize_int8

    quantized = tmp_path / "int8.onnx"
    assert quantize_int8(fp32_graph, quantized) == [
        "/layers.0/mlp/down_proj/MatMul",
        "/layers.1/mlp/down_proj/MatMul",
        "/lm_head/MatMul",
    ]
    ops = [n.op_type for n in onnx.load(str(quantized)).graph.node]
    # Per layer: one fixed quantiser for q/k/v's input, one for o's, one for gate/up's.
    assert ops.count("QuantizeLinear") == 6
    assert "DynamicQuantizeLinear" not in ops
    assert ops.count("MatMulNBits") == 3
    feeds = _feeds(fp32_graph, rows=4, seed=3)
    # One row's own cache ten times larger: one activation scale per batch would coarsen the
    # other rows' values to fit it.
    for name, value in feeds.items():
        if name.startswith("suffix_"):
            value[2] *= 10
    together = _logits(quantized, feeds)
    for row in range(4):
        alone = {k: v if k.startswith("prefix_") else v[row : row + 1] for k, v in feeds.items()}
        np.testing.assert_allclose(
            _logits(quantized, alone), together[row : row + 1], atol=1e-6, rtol=0
        )
    np.testing.assert_allclose(together, _logits(fp32_graph, feeds), atol=0.05)
