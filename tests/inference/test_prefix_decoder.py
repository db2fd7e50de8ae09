"""The prefix-shared decode graph against optimum's graph, on tiny random models of each family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from verisolve.inference.backends import DecoderBackend
from verisolve.inference.engine import Completion, Generator
from verisolve.inference.onnx_decoder import OnnxDecoder
from verisolve.inference.prefix_decoder import PrefixDecoder
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.prefix_export import SUPPORTED_ARCHITECTURES

# fp32 on both sides: the two graphs differ only in the order of additions.
ATOL = 1e-4


@pytest.fixture(scope="module", params=SUPPORTED_ARCHITECTURES)
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model of one architecture: optimum's graph and the prefix graph beside it."""
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.prefix_export import add_prefix_decoder
    from verisolve.modelstore.tiny import build_tiny_model

    arch: str = request.param
    root = tmp_path_factory.mktemp(f"prefix-{arch}")
    # More query heads per KV head than the default, so the grouping is exercised.
    hf = build_tiny_model(root / "hf", arch=arch, seed=3, heads=6, kv_heads=2, hidden_size=48)
    out = root / "generator"
    export_generator(hf, out, name=f"tiny-{arch}")
    assert add_prefix_decoder(hf, out) == "decoder_prefix.onnx"
    return out


def backends(model_dir: Path, *, bind: bool = False) -> tuple[OnnxDecoder, PrefixDecoder]:
    """The standard backend (numpy path) and the prefix-shared one, on the same model."""
    decoder = model_dir / "model.onnx"
    return (
        OnnxDecoder.load(decoder, bind=False, threads=1),
        PrefixDecoder.load(decoder, model_dir / "decoder_prefix.onnx", threads=1, bind=bind),
    )


@pytest.mark.parametrize("bind", [False, True], ids=["run", "iobinding"])
def test_logits_match_over_steps_with_rows_dropped(model_dir: Path, bind: bool) -> None:
    standard, shared = backends(model_dir, bind=bind)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 500, 29).tolist()
    first_a, a = standard.prefill(prompt)
    first_b, b = shared.prefill(prompt)
    np.testing.assert_allclose(first_b, first_a, atol=ATOL, rtol=0)
    a.expand(7)
    b.expand(7)
    # Rows are dropped and reordered as the engine's compaction does.
    drops: dict[int, NDArray[np.int64]] = {2: np.array([0, 6, 2, 3, 5]), 5: np.array([4, 1, 0])}
    rows = 7
    for step in range(9):
        tokens = rng.integers(0, 500, rows)
        logits_a, logits_b = a.step(tokens), b.step(tokens)
        assert logits_b.shape == logits_a.shape == (rows, logits_a.shape[1])
        np.testing.assert_allclose(logits_b, logits_a, atol=ATOL, rtol=0)
        # Rows must not all see the same logits, or a mix-up of rows would go unnoticed.
        assert np.abs(logits_a[0] - logits_a[-1]).max() > 100 * ATOL
        if step in drops:
            a.keep(drops[step])
            b.keep(drops[step])
            rows = len(drops[step])


def generate(backend: DecoderBackend, model_dir: Path, params: SamplingParams) -> list[Completion]:
    tokenizer = TextTokenizer.from_file(model_dir / "tokenizer.json")
    # Every ninth token ends a row, so rows finish at different steps and leave the batch.
    generator = Generator(backend, tokenizer, eos_token_ids=range(0, tokenizer.vocab_size, 9))
    return generator.generate("Question: how many apples are left?\nAnswer:", params, key="q")


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_engine_outputs_are_identical(model_dir: Path, temperature: float) -> None:
    params = SamplingParams(n=12, temperature=temperature, max_new_tokens=24, seed=5)
    standard, shared = backends(model_dir)
    expected = generate(standard, model_dir, params)
    got = generate(shared, model_dir, params)
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in expected]
    if temperature:
        assert len({c.num_tokens for c in expected}) > 1, "rows should finish at different steps"


def test_expand_after_decoding_started_is_refused(model_dir: Path) -> None:
    _, shared = backends(model_dir)
    _, decoding = shared.prefill([1, 2, 3])
    decoding.expand(2)
    decoding.step(np.array([4, 5]))
    with pytest.raises(RuntimeError, match="expand after decoding started"):
        decoding.expand(3)
    with pytest.raises(ValueError, match="3 tokens for 2 rows"):
        decoding.step(np.array([4, 5, 6]))


@pytest.mark.slow
@pytest.mark.export
def test_default_model_steps_match_transformers(tmp_path: Path, user_models_path: Path) -> None:
    """The default model's prefix graph against its fp32 source, over a few-shot prompt."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from verisolve.inference.providers import create_session
    from verisolve.modelstore.default import default_model_dir
    from verisolve.modelstore.export import HF_SUBDIR
    from verisolve.modelstore.manifest import Manifest
    from verisolve.modelstore.prefix_export import (
        export_prefix_decoder,
        prefix_input_names,
        prefix_output_names,
    )

    target = default_model_dir(user_models_path)
    if not (target / HF_SUBDIR / "config.json").is_file():
        pytest.skip(
            f"no default model with its {HF_SUBDIR}/ source at {target} (VERISOLVE_MODEL_DIR)"
        )
    hf = target / HF_SUBDIR
    session = create_session(export_prefix_decoder(hf, tmp_path / "prefix.onnx"), threads=2)
    model = AutoModelForCausalLM.from_pretrained(str(hf), local_files_only=True)
    manifest = Manifest.load(target)
    tokenizer = TextTokenizer.from_file(target / manifest.tokenizer)
    prompt = tokenizer.encode(manifest.prompt.render("How many legs do 3 cats and 2 birds have?"))
    with torch.no_grad():
        cache = model(torch.tensor([prompt]), use_cache=True).past_key_values
    feeds: dict[str, NDArray[Any]] = {}
    for i, layer in enumerate(cache.layers):
        feeds[f"prefix_key.{i}"] = layer.keys.numpy()
        feeds[f"prefix_value.{i}"] = layer.values.numpy()
        _, kv_heads, _, head_dim = layer.keys.shape
        empty = np.zeros((3, kv_heads, 0, head_dim), np.float32)
        feeds[f"suffix_key.{i}"] = feeds[f"suffix_value.{i}"] = empty
    layers = len(cache.layers)
    suffix_names = prefix_input_names(layers)[2 + 2 * layers :]
    rows = np.random.default_rng(0).integers(0, tokenizer.vocab_size, (3, 3))
    for step in range(rows.shape[1]):
        feeds["input_ids"] = rows[:, step : step + 1]
        feeds["position_ids"] = np.full((3, 1), len(prompt) + step, dtype=np.int64)
        logits, *present = session.run(prefix_output_names(layers), feeds)
        feeds.update(zip(suffix_names, present, strict=True))
        with torch.no_grad():
            full = torch.tensor([prompt + rows[r, : step + 1].tolist() for r in range(3)])
            expected = model(full).logits[:, -1].numpy()
        # Logits of this model reach about 30: 1e-3 is float32 rounding over 30 layers.
        np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)


def test_int8_graph_matches_the_int8_decoder(tmp_path: Path) -> None:
    """Quantised the same way (down-projections and head blockwise), the two int8 graphs agree."""
    onnx = pytest.importorskip("onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.prefix_export import add_prefix_decoder
    from verisolve.modelstore.tiny import build_tiny_model

    hf = build_tiny_model(tmp_path / "hf", seed=4)
    out = tmp_path / "int8"
    export_generator(hf, out, name="tiny-int8", int8=True)
    assert add_prefix_decoder(hf, out, int8=True) == "decoder_prefix.onnx"
    nodes = onnx.load(str(out / "decoder_prefix.onnx")).graph.node
    assert "MatMulInteger" in {node.op_type for node in nodes}
    down = [node.op_type for node in nodes if "/mlp/down_proj/" in node.name]
    assert down == ["MatMulNBits", "MatMulNBits"]
    _assert_steps_agree(out)


def test_row_scaled_int8_graphs_match_each_other(tmp_path: Path) -> None:
    """Exported with --row-scaled, every graph splits the same outlier channels and they agree."""
    onnx = pytest.importorskip("onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.tiny import build_tiny_model

    hf = build_tiny_model(tmp_path / "hf", seed=4)
    out = tmp_path / "int8"
    export_generator(hf, out, name="tiny-int8", int8=True, row_scaled=True)
    channels = []
    for graph in ("model.onnx", "decoder_prefix.onnx", "decoder_cascade.onnx"):
        model = onnx.load(str(out / graph)).graph
        ops = {node.op_type for node in model.node}
        assert "MatMulInteger" in ops
        assert "MatMulNBits" not in ops
        split = [
            onnx.numpy_helper.to_array(i).tolist()
            for i in model.initializer
            if i.name.endswith("_outlier_index")
        ]
        assert len(split) == 2  # one per layer
        channels.append(split)
    assert channels[0] == channels[1] == channels[2]
    _assert_steps_agree(out)


def _assert_steps_agree(model_dir: Path) -> None:
    """The standard and prefix-shared int8 graphs of a model give the same step logits."""
    standard, shared = backends(model_dir)
    prompt = list(range(5, 40))
    _, a = standard.prefill(prompt)
    _, b = shared.prefill(prompt)
    a.expand(4)
    b.expand(4)
    for tokens in ([1, 2, 3, 4], [5, 6, 7, 8]):
        np.testing.assert_allclose(
            b.step(np.array(tokens)), a.step(np.array(tokens)), atol=1e-3, rtol=0
        )
