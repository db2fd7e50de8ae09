"""Export the prefix-shared decode graph of a Llama-family generator (Llama, Mistral, Qwen2).

Optimum's decoder graph takes the cache as [rows, kv_heads, past, head_dim], so every decode step
reads N copies of the prompt's cache. This graph takes the prompt's cache once, at batch 1
(`prefix_key.{i}` / `prefix_value.{i}`: [1, kv_heads, P, head_dim]), and the rows' own tokens as
a cache of batch N (`suffix_key.{i}` / `suffix_value.{i}`: [N, kv_heads, S, head_dim]). Each
head attends over both with one softmax (the shared-prefix decomposition of Hydragen, Juravsky et
al. 2024): the prefix scores of all rows' queries are one matrix product per KV head, and grouped
query heads are never expanded into copies. Outputs: `logits` [N, vocab] and `present_key.{i}` /
`present_value.{i}` [N, kv_heads, S + 1, head_dim]. The prefill keeps using optimum's graph: its
present cache at batch 1 is the prefix.

The graph (`prefix_graph.py`) is written in torch over the model's own modules (embedding, norms,
projections, rotary embedding, MLP, head) and exported with the TorchScript exporter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from verisolve.modelstore.export import ExportError, quantize_int8, read_config

PREFIX_DECODER_FILE = "decoder_prefix.onnx"
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")
OPSET = 17
# The head node that prefix_graph.LinearHead exports.
HEAD_NODE = "/lm_head/Gemm"


def prefix_input_names(layers: int) -> list[str]:
    """The graph's inputs, in order: ids, positions, then the prefix and suffix caches."""
    names = ["input_ids", "position_ids"]
    for kind in ("prefix", "suffix"):
        for i in range(layers):
            names += [f"{kind}_key.{i}", f"{kind}_value.{i}"]
    return names


def prefix_output_names(layers: int) -> list[str]:
    """The graph's outputs: logits, then each layer's present suffix key and value."""
    names = ["logits"]
    for i in range(layers):
        names += [f"present_key.{i}", f"present_value.{i}"]
    return names


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """Why a transformers config cannot get the prefix-shared graph; None when it can."""
    arch = str(config.get("model_type", ""))
    if arch not in SUPPORTED_ARCHITECTURES:
        return f"architecture {arch!r} is not one of {', '.join(SUPPORTED_ARCHITECTURES)}"
    # The graph attends over the whole cache; a sliding window would make it differ.
    window = config.get("sliding_window")
    if window is not None and config.get("use_sliding_window", arch == "mistral"):
        return f"{arch} with a sliding attention window ({window}) is not supported"
    rope = config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type")) == "dynamic":
        # Dynamic NTK recomputes frequencies from the sequence length, which one step cannot see.
        return "dynamic rope scaling is not supported"
    return None


def _example_inputs(model: Any) -> tuple[Any, ...]:
    """Inputs of distinct sizes for tracing: N = 2, P = 3, S = 2."""
    import torch

    config = model.config
    layers, kvh = int(config.num_hidden_layers), int(config.num_key_value_heads)
    dim = int(model.model.layers[0].self_attn.head_dim)
    rows, prompt, own = 2, 3, 2
    dtype = model.lm_head.weight.dtype
    ids = torch.zeros((rows, 1), dtype=torch.int64)
    positions = torch.full((rows, 1), prompt + own, dtype=torch.int64)
    prefix = [torch.randn(1, kvh, prompt, dim, dtype=dtype) for _ in range(2 * layers)]
    suffix = [torch.randn(rows, kvh, own, dim, dtype=dtype) for _ in range(2 * layers)]
    return (ids, positions, *prefix, *suffix)


def export_prefix_decoder(hf_dir: Path, out_path: Path, *, opset: int = OPSET) -> Path:
    """Export the prefix-shared decode graph of a supported causal LM to `out_path`."""
    import torch
    from transformers import AutoModelForCausalLM

    from verisolve.modelstore.prefix_graph import PrefixDecodeStep

    reason = unsupported_reason(read_config(hf_dir))
    if reason is not None:
        raise ExportError(f"{hf_dir}: no prefix-shared decode graph: {reason}")
    model = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), local_files_only=True, attn_implementation="eager"
    )
    step = PrefixDecodeStep(model).eval()
    layers = int(model.config.num_hidden_layers)
    inputs, outputs = prefix_input_names(layers), prefix_output_names(layers)
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "rows"}, "position_ids": {0: "rows"}}
    for name in inputs[2:]:
        axes[name] = {2: "prompt"} if name.startswith("prefix_") else {0: "rows", 2: "own"}
    axes["logits"] = {0: "rows"}
    for name in outputs[1:]:
        axes[name] = {0: "rows", 2: "own_plus_one"}
    with torch.no_grad():
        torch.onnx.export(
            step,
            _example_inputs(model),
            str(out_path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return out_path


def add_prefix_decoder(
    hf_dir: Path,
    model_dir: Path,
    *,
    int8: bool = False,
    outliers: Mapping[int, Sequence[int]] | None = None,
) -> str | None:
    """Export the prefix graph into a model directory; its file name, or None if unsupported.

    `outliers`: the model's down-projection outlier channels (see `quantize_int8`).
    """
    config = read_config(hf_dir)
    if unsupported_reason(config) is not None:
        return None
    path = export_prefix_decoder(hf_dir, model_dir / PREFIX_DECODER_FILE)
    if int8:
        quantize_graph(path, outliers)
    return PREFIX_DECODER_FILE


def quantize_graph(path: Path, outliers: Mapping[int, Sequence[int]] | None = None) -> None:
    """Quantise one of our decode graphs in place, as the decoder is (the head made MatMul)."""
    transpose_head(path)
    quantized = path.with_suffix(".int8.onnx")
    quantize_int8(path, quantized, outliers=outliers)
    quantized.replace(path)


def transpose_head(path: Path) -> None:
    """Rewrite the head `Gemm(x, W, 0, transB=1)` as `MatMul(x, Transpose(W))`, in place.

    That is how optimum's graph reads a head tied to the embedding, and a MatMul is what int8
    quantisation gives blockwise weights (see `quantize_int8`, which folds the transpose into a
    copy of the weight); our graphs must be quantised as the decoder is for them to agree. In
    fp32, ONNX Runtime folds the transpose when it loads the graph. The Gemm's bias is the zero
    that LinearHead adds (no supported architecture has a head bias), so it is dropped.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    nodes = model.graph.node
    index = next((i for i, n in enumerate(nodes) if n.name == HEAD_NODE), None)
    if index is None:
        raise ExportError(f"{path.name} has no {HEAD_NODE} node")
    hidden, weight, *bias = nodes[index].input
    outputs = list(nodes[index].output)
    transposed = f"{weight}_transposed"
    del nodes[index]
    nodes.insert(index, helper.make_node("MatMul", [hidden, transposed], outputs))
    nodes.insert(index, helper.make_node("Transpose", [weight], [transposed], perm=[1, 0]))
    nodes[index].name, nodes[index + 1].name = "/lm_head/Transpose", "/lm_head/MatMul"
    readers = {name for n in nodes for name in n.input}
    if bias and bias[0] not in readers:
        # The zero bias, unread now: left in, ONNX Runtime would warn about it at every load.
        nodes.remove(next(n for n in nodes if bias[0] in n.output))
    onnx.save(model, str(path))
