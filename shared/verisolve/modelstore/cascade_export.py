"""Export the cascade decode graph (continuous batching across problems) of a Llama-family model.

Inputs: `input_ids` and `position_ids` [rows, T] (T = 1 for a decode step, a question's length
for its prefill); the block tables of the rows' own caches: `block_rows` [B] int64 (the row each
pool block belongs to), `block_bias` [B, S] float32 (0 on a block's filled positions, -inf past
them) and `row_blocks` [rows, M] int64 (each row's blocks in order, padded with B, "no block");
`prefix_key.{i}` [1, kv_heads, P + 1, head_dim + 1] / `prefix_value.{i}` [1, kv_heads, P + 1,
head_dim], the few-shot exemplars shared by every row after a sentinel position (see
`cascade_graph.py`), in the model's dtype; `own_key.{i}` / `own_value.{i}` [B, kv_heads, S,
head_dim], the pool of blocks of S positions that holds every row's question and generated
tokens, in the cache dtype (float32, or float16 for half the memory and the bytes a step reads).
Outputs: `logits` [rows, vocab] of the last fed token and `new_key.{i}` / `new_value.{i}`
[rows, kv_heads, T, head_dim] in the cache dtype, the fed tokens' cache, which the caller writes
into the row's blocks. See `cascade_graph.py`. This one graph serves the batch engine: the
shared prefix, each question and every step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from verisolve.modelstore.export import ExportError, read_config
from verisolve.modelstore.prefix_export import OPSET, quantize_graph, unsupported_reason

CASCADE_DECODER_FILE = "decoder_cascade.onnx"
# The manifest's graph role of this file.
CASCADE_ROLE = "decoder_cascade"
CACHE_DTYPES = ("float32", "float16")
# Positions per block of the own caches' pool: a row wastes less than a block, and a step runs
# one small matrix product per block and KV head.
BLOCK_SIZE = 32
# The table inputs every own-cache pool is read through, after input_ids and position_ids.
BLOCK_TABLES = ("block_rows", "block_bias", "row_blocks")
# A score whose weight exp(NO_SCORE - max) is 0 (finite, so no inf - inf): a row's slot for "no
# block" in its block table, and the shared prefix's sentinel position.
NO_SCORE = -1e30
# Features the prefix's keys have beyond the queries': the sentinel's (see cascade_graph.py).
SENTINEL_FEATURE = 1
# The graph's metadata key (value "1") saying it adds a row's blocks in order (`sum_blocks`), so
# that a row's logits do not depend on the rows beside it; graphs exported before it lack it.
IN_ORDER_KEY = "verisolve.row_blocks_summed_in_order"


def cascade_input_names(layers: int) -> list[str]:
    """The graph's inputs, in order: ids, positions, block tables, prefix caches, own pools."""
    names = ["input_ids", "position_ids", *BLOCK_TABLES]
    for kind in ("prefix", "own"):
        for i in range(layers):
            names += [f"{kind}_key.{i}", f"{kind}_value.{i}"]
    return names


def cascade_output_names(layers: int) -> list[str]:
    """The graph's outputs: logits, then each layer's key and value of the fed token."""
    names = ["logits"]
    for i in range(layers):
        names += [f"new_key.{i}", f"new_value.{i}"]
    return names


def _example_inputs(model: Any, cache_dtype: str, block_size: int) -> tuple[Any, ...]:
    """Inputs of distinct sizes for tracing (rows 2, P 3, T 5, B 4, M 3), pools in cache_dtype."""
    import torch

    config = model.config
    layers, kvh = int(config.num_hidden_layers), int(config.num_key_value_heads)
    dim = int(model.model.layers[0].self_attn.head_dim)
    rows, prompt, fed = 2, 3, 5
    dtype = model.lm_head.weight.dtype
    ids = torch.zeros((rows, fed), dtype=torch.int64)
    positions = (torch.arange(fed, dtype=torch.int64) + prompt + block_size).expand(rows, fed)
    block_rows = torch.tensor([0, 1, 0, 1], dtype=torch.int64)
    block_bias = torch.zeros((4, block_size), dtype=torch.float32)
    row_blocks = torch.tensor([[0, 2, 4], [1, 3, 4]], dtype=torch.int64)
    # Keys, then values, per layer; keys with the sentinel's feature (see cascade_graph).
    widths = [dim + SENTINEL_FEATURE, dim] * layers
    prefix = [torch.randn(1, kvh, prompt, width, dtype=dtype) for width in widths]
    cached = getattr(torch, cache_dtype)
    pools = [torch.randn(4, kvh, block_size, dim).to(cached) for _ in range(2 * layers)]
    return (ids, positions, block_rows, block_bias, row_blocks, *prefix, *pools)


def _dynamic_axes(inputs: list[str], outputs: list[str]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "rows", 1: "fed"},
        "position_ids": {0: "rows", 1: "fed"},
        "block_rows": {0: "blocks"},
        "block_bias": {0: "blocks"},
        "row_blocks": {0: "rows", 1: "row_blocks"},
        "logits": {0: "rows"},
    }
    for name in inputs[2 + len(BLOCK_TABLES) :]:
        axes[name] = {2: "prompt"} if name.startswith("prefix_") else {0: "blocks"}
    for name in outputs[1:]:
        axes[name] = {0: "rows", 2: "fed"}
    return axes


def export_cascade_decoder(
    hf_dir: Path,
    out_path: Path,
    *,
    opset: int = OPSET,
    cache_dtype: str = "float32",
    block_size: int = BLOCK_SIZE,
) -> Path:
    """Export the cascade decode graph of a supported causal LM to `out_path`.

    `cache_dtype` ("float32" or "float16") is the dtype of the own caches' pool the graph takes
    and returns; the graph computes in the model's dtype either way. `block_size`: positions per
    block of that pool (fixed in the graph).
    """
    if cache_dtype not in CACHE_DTYPES:
        raise ExportError(f"cache dtype {cache_dtype!r}: expected one of {CACHE_DTYPES}")
    import torch
    from transformers import AutoModelForCausalLM

    from verisolve.modelstore.cascade_graph import CascadeDecodeStep

    reason = unsupported_reason(read_config(hf_dir))
    if reason is not None:
        raise ExportError(f"{hf_dir}: no cascade decode graph: {reason}")
    model = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), local_files_only=True, attn_implementation="eager"
    )
    step = CascadeDecodeStep(model).eval()
    layers = int(model.config.num_hidden_layers)
    inputs, outputs = cascade_input_names(layers), cascade_output_names(layers)
    with torch.no_grad():
        torch.onnx.export(
            step,
            _example_inputs(model, cache_dtype, block_size),
            str(out_path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=_dynamic_axes(inputs, outputs),
            opset_version=opset,
            dynamo=False,
        )
    _mark(out_path, {IN_ORDER_KEY: "1"})
    return out_path


def _mark(path: Path, props: Mapping[str, str]) -> None:
    """Add these metadata entries to the graph at `path` (weights in external data stay there)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **props})
    onnx.save(model, str(path))


def add_cascade_decoder(
    hf_dir: Path,
    model_dir: Path,
    *,
    int8: bool = False,
    cache_dtype: str | None = None,
    outliers: Mapping[int, Sequence[int]] | None = None,
) -> str | None:
    """Export the cascade graph into a model directory; its file name, or None if unsupported.

    The own caches default to float16 in an int8 build (a step at many rows reads mostly
    cache, and the int8 logits are already further from fp32 than float16 caches take them)
    and to float32 otherwise, where the batch engine matches the per-problem engine exactly.
    """
    config = read_config(hf_dir)
    if unsupported_reason(config) is not None:
        return None
    cache_dtype = cache_dtype or ("float16" if int8 else "float32")
    path = export_cascade_decoder(hf_dir, model_dir / CASCADE_DECODER_FILE, cache_dtype=cache_dtype)
    if int8:
        # Quantised as the decoder and prefix graphs are (the same outlier channels), so that
        # all three agree.
        quantize_graph(path, outliers)
    return CASCADE_DECODER_FILE
