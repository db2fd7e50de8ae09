"""Sampling where the logits are: a tiny ONNX graph run on the decoder's own device.

On a GPU the batch engine's logits are [rows, vocab] float32, 50 MB a step at 256 rows of a
49,152-token vocabulary; copying them to the host and sampling there took as long as the whole
step (README, "On a GPU"). Here the step's logits stay on the device and a second graph turns
them into one token per row, so only the tokens cross: the same inverse CDF as `sampling.sample`
(temperature, then each row's uniform from its own stream scaled by the row's total weight,
found in two levels of blocks), in float64 for the sums, and ArgMax for greedy rows. Top-k and
top-p rows still sample on the host (`DeviceLogits.numpy`), as their sorts are the host's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from verisolve.inference.onnx_wire import (
    DOUBLE,
    FLOAT,
    INT64,
    initializer,
    model,
    node,
    value_info,
)
from verisolve.inference.sampling import CDF_BLOCK, SamplingParams


def sampler_model() -> bytes:
    """The graph: (logits [rows, vocab] float, uniforms [rows, 1] double, inverse temperatures
    [rows, 1] float, pads [4] int64: the zeros that make the vocabulary a whole number of blocks)
    -> sampled [rows] and greedy [rows] token ids (int64).

    sampled = the first token whose cumulative weight exceeds uniform × total, where a token's
    weight is exp((logit - row max) × inverse temperature), summed in float64; never past the
    row's last token of positive weight. Two levels, as `sampling.inverse_cdf` does it: the sums
    of blocks of `CDF_BLOCK` tokens find each row's block, then a cumulative sum within that
    block finds the token. (ONNX Runtime's CUDA CumSum sums every element's prefix anew, so one
    over a whole 49,152-token row would cost its length squared.)
    """
    nodes = [
        node("ReduceMax", ["logits"], "top", axes=[1], keepdims=1),
        node("Sub", ["logits", "top"], "shifted"),
        node("Mul", ["shifted", "inverse_temperature"], "scaled"),
        node("Exp", ["scaled"], "weights"),
        node("Pad", ["weights", "pads"], "padded"),
        node("Cast", ["padded"], "weights64", to=DOUBLE),
        node("Reshape", ["weights64", "in_blocks"], "blocked"),  # [rows, blocks, CDF_BLOCK]
        node("ReduceSum", ["blocked", "axis2"], "block_sums", keepdims=0),
        node("CumSum", ["block_sums", "axis"], "block_cumulative"),
        node("Slice", ["block_cumulative", "last", "end", "axis1"], "total"),
        node("Mul", ["uniforms", "total"], "threshold"),
        # The row's block: blocks whose cumulative sum is still at or below the threshold come
        # before it (count those past it, take them from the number of blocks), never past the
        # last block with any weight.
        *_first_past("block_cumulative", "block_sums", "block_f"),
        node("Cast", ["block_f"], "block", to=INT64),
        node("Unsqueeze", ["block", "axis1"], "block_index"),  # [rows, 1]
        node("Sub", ["block_cumulative", "block_sums"], "before_blocks"),
        node("GatherElements", ["before_blocks", "block_index"], "before", axis=1),
        node("GatherND", ["blocked", "block_index"], "inside", batch_dims=1),
        node("CumSum", ["inside", "axis"], "inside_cumulative"),
        node("Add", ["inside_cumulative", "before"], "in_block"),
        *_first_past("in_block", "inside", "offset_f"),
        node("Mul", ["block_f", "block_width"], "block_start"),
        node("Add", ["block_start", "offset_f"], "chosen_f"),
        node("Cast", ["chosen_f"], "sampled", to=INT64),
        node("ArgMax", ["logits"], "greedy", axis=1, keepdims=0),
    ]
    constants = [
        initializer("axis", np.array(1, dtype=np.int64)),
        initializer("axis1", np.array([1], dtype=np.int64)),
        initializer("axis2", np.array([2], dtype=np.int64)),
        initializer("in_blocks", np.array([0, -1, CDF_BLOCK], dtype=np.int64)),
        initializer("block_width", np.array(CDF_BLOCK, dtype=np.float32)),
        initializer("last", np.array([-1], dtype=np.int64)),
        initializer("end", np.array([np.iinfo(np.int64).max], dtype=np.int64)),
        initializer("zero", np.array(0, dtype=np.float32)),
        initializer("zero64", np.array(0, dtype=np.float64)),
        initializer("one", np.array(1, dtype=np.float32)),
        initializer("minus_one", np.array(-1, dtype=np.float32)),
    ]
    inputs = [
        value_info("logits", FLOAT, ["rows", "vocab"]),
        value_info("uniforms", DOUBLE, ["rows", "one"]),
        value_info("inverse_temperature", FLOAT, ["rows", "one"]),
        value_info("pads", INT64, ["four"]),
    ]
    outputs = [value_info("sampled", INT64, ["rows"]), value_info("greedy", INT64, ["rows"])]
    return model("sample_rows", nodes, inputs, outputs, constants)


def _first_past(cumulative: str, parts: str, out: str) -> list[bytes]:
    """Nodes: `out` [rows] (float) = how many of a row's `cumulative` sums are at or below its
    threshold, but at most the index of its last part of positive weight."""
    name = f"{out}_"
    return [
        node("Less", ["threshold", cumulative], name + "past"),
        node("Cast", [name + "past"], name + "past_f", to=FLOAT),
        node("ReduceSum", [name + "past_f", "axis1"], name + "past_count", keepdims=0),
        node("Shape", [cumulative], name + "shape"),
        node("Gather", [name + "shape", "axis"], name + "width", axis=0),
        node("Cast", [name + "width"], name + "width_f", to=FLOAT),
        node("Sub", [name + "width_f", name + "past_count"], name + "drawn"),
        node("Less", ["zero64", parts], name + "positive"),
        node("Range", ["zero", name + "width_f", "one"], name + "positions"),
        node("Where", [name + "positive", name + "positions", "minus_one"], name + "marked"),
        node("ReduceMax", [name + "marked"], name + "last", axes=[1], keepdims=0),
        node("Min", [name + "drawn", name + "last"], out),
    ]


def on_device(params: SamplingParams, vocab: int) -> bool:
    """Whether the device sampler draws a row with these params as `sampling.sample` would:
    temperature alone (or greedy), no top-k cut below the vocabulary, no nucleus."""
    return not 0 < params.top_k < vocab and params.top_p >= 1.0


class DeviceSampler:
    """The sampler graph on given ONNX Runtime providers (a decoder's: `on_session`)."""

    def __init__(
        self,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        provider_options: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        settings = ort.SessionOptions()
        settings.log_severity_level = 3
        self.session = ort.InferenceSession(
            sampler_model(),
            sess_options=settings,
            providers=list(providers),
            provider_options=list(provider_options or [{} for _ in providers]),
        )

    @classmethod
    def on_session(cls, session: ort.InferenceSession) -> DeviceSampler:
        """The sampler on a decoder session's own providers (and options), so its device."""
        providers = session.get_providers()
        options = session.get_provider_options()
        return cls(providers, [options[p] for p in providers])

    def __call__(
        self,
        logits: ort.OrtValue,
        uniforms: NDArray[np.float64],
        temperatures: Sequence[float] | NDArray[np.float64],
    ) -> NDArray[np.int64]:
        """One token per row: sampled at its temperature, or the argmax where that is 0."""
        temperatures = np.asarray(temperatures, dtype=np.float64)
        rows = len(temperatures)
        if len(uniforms) != rows or logits.shape()[0] != rows:
            raise ValueError(f"{logits.shape()[0]} rows of logits, {len(uniforms)} uniforms")
        greedy = temperatures == 0
        # As the host does it: the weights are scaled by float32(1 / T) (1 for greedy rows,
        # whose draw is not used).
        inverse = np.ones((rows, 1), dtype=np.float32)
        inverse[~greedy, 0] = (1.0 / temperatures[~greedy]).astype(np.float32)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input("logits", logits)
        binding.bind_cpu_input(
            "uniforms", np.ascontiguousarray(uniforms, dtype=np.float64)[:, None]
        )
        binding.bind_cpu_input("inverse_temperature", inverse)
        pads = np.array([0, 0, 0, -logits.shape()[1] % CDF_BLOCK], dtype=np.int64)
        binding.bind_cpu_input("pads", pads)
        binding.bind_output("sampled", "cpu")
        binding.bind_output("greedy", "cpu")
        self.session.run_with_iobinding(binding)
        sampled, argmax = (value.numpy() for value in binding.get_outputs())
        tokens: NDArray[np.int64] = np.where(greedy, argmax, sampled).astype(np.int64)
        return tokens


class DeviceLogits:
    """A step's logits [rows, vocab], left on the device where the step ran."""

    def __init__(self, value: ort.OrtValue, sampler: DeviceSampler) -> None:
        self.value = value
        self.sampler = sampler

    @property
    def shape(self) -> tuple[int, ...]:
        """[rows, vocab]."""
        return tuple(self.value.shape())

    def numpy(self) -> NDArray[np.float32]:
        """A host copy (the whole tensor crosses)."""
        return np.ascontiguousarray(self.value.numpy(), dtype=np.float32)

    def sample(
        self, uniforms: NDArray[np.float64], params: Sequence[SamplingParams]
    ) -> NDArray[np.int64] | None:
        """One token per row drawn on the device, or None when a row's params need the host's
        top-k or nucleus sort (then sample `numpy()` instead)."""
        vocab = self.shape[1]
        if not all(on_device(p, vocab) for p in params):
            return None
        return self.sampler(self.value, uniforms, [p.temperature for p in params])


def host_logits(logits: NDArray[np.float32] | DeviceLogits) -> NDArray[np.float32]:
    """Logits on the host, copied over when they are still on the device."""
    if isinstance(logits, DeviceLogits):
        return logits.numpy()
    return np.asarray(logits, dtype=np.float32)
