"""int8 with row-scaled activations: every weight product on ONNX Runtime's fast int8 kernels.

ONNX Runtime's dynamic int8 (DynamicQuantizeLinear, then MatMulIntegerToFloat) quantises a
MatMul's activations with one scale for the whole tensor: every row of a batch shares the
range of the row with the largest value, and a channel with an outlier (the MLP down
projections' inputs reach thousands on a few channels, against medians near one) squeezes
every other value of the batch into a few levels. Three rewrites of the fp32 graph, before
ONNX Runtime's quantiser runs, make one int8 scheme fit every weight product:

- each quantised MatMul reads its input divided by the row's largest magnitude and multiplies
  its output back by it (exact in fp32), so the tensor the quantiser sees has rows within
  [-1, 1] and one row's outliers no longer coarsen its batch-mates';
- each MLP down projection's outlier input channels (the few with the largest activations on a
  calibration text, found once per export, the same for every graph of a model) go through a
  small fp32 MatMul beside the int8 one, which sees them as zeros (as LLM.int8() splits them);
- the down projections and the LM head get per-channel weight scales, with 7-bit weights: on
  x86 CPUs without VNNI, ONNX Runtime multiplies u8 activations by s8 weights in pairs summed
  into int16 (VPMADDUBSW), which saturates when both span their full range, as row-scaled
  activations and per-channel weights do. On an AVX2-only AMD EPYC, 8-bit weights put the
  default model 0.224 nats from fp32 (14.6% of greedy tokens changed); 7-bit, 0.042 and 7.8%
  (optimum's graph, the gold answers of 20 GSM8K problems, 4-shot, 2,923 positions).

Measured with 8-bit weights on an Intel Xeon with AMX (and VNNI) on the default model
(SmolLM2-135M-Instruct, the cascade graph with float16 row caches, teacher-forced over the gold
answers of the first 20 GSM8K test problems with the 4-shot prompt, 20 rows in one batch, 1,174
positions, against the fp32 graph): mean KL 0.037 nats and 7.7% of greedy tokens changed,
against 0.036 and 7.2% for the blockwise 8-bit head and down projections this replaces
(MatMulNBits, which ONNX Runtime ran at a quarter of the int8 kernels' speed at 64 rows on an
Intel Xeon with AMX); on six chat prompts with the fp32 model's answers, 0.098 nats against
0.146. A cascade step took 0.84x to 0.88x the earlier scheme's time at 64 rows, 0.91x to 0.96x
at 16 and 1.15x to 1.25x at 1 row (the extra nodes; `verisolve bench steps --against`).
Per-channel weights without the row scaling and the outlier split: 0.068 nats; 16 or 32 outlier
channels: no closer than 8.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

# Down projections, by node-name part (optimum's and our graphs' Llama-family names), get their
# outlier channels split off.
DOWN_PROJ = "/mlp/down_proj/"
# Outlier channels per down projection: the default model's largest reach 3,030, 2,357 and
# 476 on three layers against medians of 0.4 to 4.3; more (16, 32) measured no closer to fp32.
OUTLIER_CHANNELS = 8
# A row of zeros keeps a scale of this instead of dividing by zero.
_ROW_EPSILON = 1e-6
_LAYER = re.compile(r"layers\.(\d+)" + re.escape(DOWN_PROJ))


def calibration_text() -> str:
    """The text outliers are found on: the default prompt's exemplars, written for verisolve."""
    from verisolve.modelstore.exemplars import EXEMPLARS

    return "".join(f"Question: {e['question']}\nAnswer: {e['solution']}\n\n" for e in EXEMPLARS)


def down_proj_outliers(
    hf_dir: Path, *, count: int = OUTLIER_CHANNELS
) -> dict[int, list[int]] | None:
    """Per layer, the down projection's `count` input channels of largest |activation|.

    Read with the Hugging Face model over `calibration_text()`; None for a model whose layers
    have no `mlp.down_proj` (its int8 export keeps the blockwise scheme).
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True)
    model.eval()
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(getattr(x, "mlp", None), "down_proj") for x in layers):
        return None
    peaks: dict[int, torch.Tensor] = {}

    def record(index: int) -> Any:
        def hook(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1])
            peaks[index] = x.max(dim=0).values

        return hook

    handles = [x.mlp.down_proj.register_forward_pre_hook(record(i)) for i, x in enumerate(layers)]
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    ids = torch.tensor([tokenizer.encode(calibration_text()).ids])
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return {
        i: sorted(torch.topk(p, min(count, p.numel())).indices.tolist()) for i, p in peaks.items()
    }


def quantize_row_scaled(src: Path, dst: Path, outliers: Mapping[int, Sequence[int]]) -> None:
    """Quantise every MatMul weight of the fp32 graph `src` to int8 as above, into `dst`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from verisolve.modelstore.export import BLOCKWISE_NODES, _fold_weight_transposes

    model = onnx.load(str(src))
    graph = model.graph
    products = [n for n in graph.node if n.op_type == "MatMul" and len(n.input) == 2]
    # The MatMuls the earlier scheme makes blockwise (down projections, head) go per-channel.
    channelwise = [n.name for n in products if any(p in n.name for p in BLOCKWISE_NODES)]
    _fold_weight_transposes(model, set(channelwise))
    quantised = weight_products(graph)
    split = split_outliers(model, outliers)
    scale_rows(model, quantised)
    staged = dst.with_suffix(".rows.onnx")
    onnx.save(model, str(staged))
    try:
        quantize_dynamic(
            staged,
            dst,
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
            per_channel=False,
            nodes_to_exclude=[*channelwise, *split],
        )
        dst.replace(staged)
        quantize_dynamic(
            staged,
            dst,
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
            per_channel=True,
            # 7-bit weights, so CPUs without VNNI do not saturate (see the module's docstring).
            reduce_range=True,
            nodes_to_quantize=channelwise,
        )
    finally:
        staged.unlink(missing_ok=True)


def split_outliers(model: Any, outliers: Mapping[int, Sequence[int]]) -> list[str]:
    """Route each down projection's outlier channels through an fp32 MatMul; their names.

    `y = x @ W` becomes `(x * keep) @ W' + gather(x, outliers) @ W[outliers]`, where `keep`
    zeroes the outlier channels and W' has their rows zeroed: the same sum in fp32.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    added: list[str] = []
    for node in list(graph.node):
        found = _LAYER.search(node.name)
        if node.op_type != "MatMul" or found is None or node.input[1] not in weights:
            continue
        channels = sorted(set(outliers.get(int(found.group(1)), ())))
        if not channels:
            continue
        weight = numpy_helper.to_array(weights[node.input[1]]).copy()
        index = np.asarray(channels, dtype=np.int64)
        kept = np.ones(weight.shape[0], dtype=weight.dtype)
        kept[index] = 0
        stem = node.name.rstrip("/").replace("/", "_")
        names = {part: f"{stem}_outlier_{part}" for part in ("index", "weight", "keep")}
        graph.initializer.extend(
            [
                numpy_helper.from_array(index, names["index"]),
                numpy_helper.from_array(np.ascontiguousarray(weight[index]), names["weight"]),
                numpy_helper.from_array(kept, names["keep"]),
            ]
        )
        weight[index] = 0
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
        x, y = node.input[0], node.output[0]
        inner, side = f"{stem}_inliers", f"{stem}_outliers"
        before = [
            helper.make_node("Mul", [x, names["keep"]], [f"{inner}_x"], name=f"{node.name}_keep"),
            helper.make_node(
                "Gather", [x, names["index"]], [f"{side}_x"], axis=-1, name=f"{node.name}_gather"
            ),
        ]
        after = [
            helper.make_node(
                "MatMul",
                [f"{side}_x", names["weight"]],
                [f"{side}_y"],
                name=f"{node.name}_outliers",
            ),
            helper.make_node("Add", [f"{inner}_y", f"{side}_y"], [y], name=f"{node.name}_add"),
        ]
        node.input[0], node.output[0] = f"{inner}_x", f"{inner}_y"
        _insert(graph, node, before, after)
        added.append(f"{node.name}_outliers")
    return added


def weight_products(graph: Any) -> list[str]:
    """The names of the graph's MatMuls whose second input is a weight (an initializer)."""
    weights = {init.name for init in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in weights
    ]


def scale_rows(model: Any, names: Sequence[str]) -> list[str]:
    """Feed these MatMuls their input's rows divided by each row's largest |value|, and scale
    their outputs back: `x @ W = s * ((x / s) @ W)` with s = max|x| over the last axis.

    Returns the scaled inputs' names (one per distinct input; each row within [-1, 1])."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    epsilon = "row_scale_epsilon"
    graph.initializer.append(numpy_helper.from_array(np.array(_ROW_EPSILON, np.float32), epsilon))
    axes: list[str] = []
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18 on
        axes = ["row_scale_axes"]
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), axes[0]))
    wanted = set(names)
    scales: dict[str, str] = {}
    for node in [n for n in graph.node if n.name in wanted]:
        x = node.input[0]
        stem = node.name.rstrip("/").replace("/", "_")
        before = []
        if x not in scales:
            tag = f"row_scale_{len(scales)}"
            reduce = {"keepdims": 1} if axes else {"axes": [-1], "keepdims": 1}
            before = [
                helper.make_node("Abs", [x], [f"{tag}_abs"], name=f"{tag}_abs"),
                helper.make_node(
                    "ReduceMax", [f"{tag}_abs", *axes], [f"{tag}_max"], name=f"{tag}_max", **reduce
                ),
                helper.make_node("Max", [f"{tag}_max", epsilon], [f"{tag}_s"], name=f"{tag}_s"),
                helper.make_node("Div", [x, f"{tag}_s"], [f"{tag}_x"], name=f"{tag}_div"),
            ]
            scales[x] = tag
        tag = scales[x]
        y = node.output[0]
        node.input[0], node.output[0] = f"{tag}_x", f"{stem}_scaled"
        after = [
            helper.make_node(
                "Mul", [f"{stem}_scaled", f"{tag}_s"], [y], name=f"{node.name}_rescale"
            )
        ]
        _insert(graph, node, before, after)
    return [f"{tag}_x" for tag in scales.values()]


def fixed_row_activations(path: Path, row_scaled: Collection[str]) -> None:
    """Quantise row-scaled activations with a fixed scale instead of one set per batch.

    ONNX Runtime's dynamic quantisation (DynamicQuantizeLinear) picks one scale and zero point
    for the whole tensor, so a row's int8 values, and its logits, move with its batch-mates. A
    row divided by its largest magnitude (`row_scaled`: what `scale_rows` returned) lies within
    [-1, 1], which the fixed uint8 scale 2/255 with zero point 128 covers: the
    DynamicQuantizeLinear of each such input becomes a QuantizeLinear with those constants, and
    its products read them. The graph at `path` is rewritten in place; quantisers of other inputs
    stay dynamic.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    scale, zero = "row_quant_scale", "row_quant_zero_point"
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear" or node.input[0] not in row_scaled:
            continue
        quantised, dynamic_scale, dynamic_zero = node.output
        renamed |= {dynamic_scale: scale, dynamic_zero: zero}
        node.CopyFrom(
            helper.make_node(
                "QuantizeLinear",
                [node.input[0], scale, zero],
                [quantised],
                name=f"{node.name}_fixed",
            )
        )
    if renamed:
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(2.0 / 255.0, np.float32), scale),
                numpy_helper.from_array(np.array(128, np.uint8), zero),
            ]
        )
        for node in graph.node:
            for i, name in enumerate(node.input):
                node.input[i] = renamed.get(name, name)
        onnx.save(model, str(path))


def _insert(graph: Any, node: Any, before: list[Any], after: list[Any]) -> None:
    """Put `before` just ahead of `node` and `after` just behind it (keeps graph order valid)."""
    at = list(graph.node).index(node)
    for offset, new in enumerate(after, start=1):
        graph.node.insert(at + offset, new)
    for new in reversed(before):
        graph.node.insert(at, new)
