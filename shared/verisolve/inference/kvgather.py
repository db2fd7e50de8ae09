"""Row selection of cache tensors where they live (GPU or CPU), with a tiny ONNX Gather graph.

Without torch there is no device-side indexing in Python: expanding the prompt's cache to N rows
and dropping finished rows are both a Gather along axis 0, run by ONNX Runtime on the session's
own device. The graphs are written directly in ONNX's protobuf wire format (onnx_wire.py), so
running a model needs no `onnx` package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from verisolve.inference.onnx_wire import (
    BFLOAT16,
    DOUBLE,
    FLOAT,
    FLOAT16,
    INT64,
    model,
    node,
    value_info,
)
from verisolve.inference.providers import session_device

# ONNX TensorProto.DataType codes of the cache dtypes ONNX Runtime reports.
ELEM_TYPES = {
    "tensor(float)": FLOAT,
    "tensor(float16)": FLOAT16,
    "tensor(double)": DOUBLE,
    "tensor(bfloat16)": BFLOAT16,
}


def layer_op_model(
    op_type: str,
    elem_type: int,
    count: int,
    operands: Sequence[str] = ("in",),
    shared: Mapping[str, tuple[int, int]] | None = None,
    *,
    rank: int = 4,
    **attributes: int,
) -> bytes:
    """An ONNX model of one op per tensor i < count: out_i = op(operands...).

    An operand named in `shared` (name: (elem_type, rank)) is one input that every op takes; any
    other operand `x` is a tensor of the given type and rank per i, the input `x_i`. Every
    dimension is symbolic, so one model serves any rows and lengths.
    """
    shared = shared or {}
    per_layer = [name for name in operands if name not in shared]

    def operand(name: str, i: int) -> str:
        return name if name in shared else f"{name}_{i}"

    nodes = [
        node(op_type, [operand(x, i) for x in operands], f"out_{i}", **attributes)
        for i in range(count)
    ]
    inputs = [
        value_info(f"{name}_{i}", elem_type, [f"{name}_{i}_d{d}" for d in range(rank)])
        for i in range(count)
        for name in per_layer
    ]
    for name, (shared_type, shared_rank) in shared.items():
        inputs.append(value_info(name, shared_type, [f"{name}_d{d}" for d in range(shared_rank)]))
    outputs = [
        value_info(f"out_{i}", elem_type, [f"out_{i}_d{d}" for d in range(rank)])
        for i in range(count)
    ]
    return model(f"kv_{op_type.lower()}", nodes, inputs, outputs)


def gather_model(elem_type: int, count: int, rank: int = 4) -> bytes:
    """An ONNX model: out_i = Gather(in_i, indices, axis=0) for i < count, inputs of `rank`."""
    shared = {"indices": (INT64, 1)}
    return layer_op_model("Gather", elem_type, count, ("in", "indices"), shared, rank=rank, axis=0)


class CacheOps:
    """Row gathers, token and block writes and row appends of `count` same-dtype tensors (a
    cache's layers), each op one tiny graph run by ONNX Runtime on the tensors' own device.

    Outputs stay on that device (`device`, as IOBinding names it: ("cuda", 0) or ("cpu", 0));
    host arrays are taken where an OrtValue would be, and copied over by ONNX Runtime.
    """

    def __init__(
        self,
        elem_type: str,
        count: int,
        *,
        providers: Sequence[str],
        provider_options: Sequence[dict[str, Any]],
        device: tuple[str, int],
    ) -> None:
        if elem_type not in ELEM_TYPES:
            raise ValueError(f"unsupported cache type {elem_type}")
        self._elem = ELEM_TYPES[elem_type]
        self._count = count
        self._providers = list(providers)
        self._provider_options = list(provider_options)
        self._device = device
        self._sessions: dict[str, ort.InferenceSession] = {}

    @classmethod
    def on_session(cls, session: ort.InferenceSession, elem_type: str, count: int) -> Self:
        """The ops on a decoder session's own providers (and options) and device."""
        providers = session.get_providers()
        options = session.get_provider_options()
        return cls(
            elem_type,
            count,
            providers=providers,
            provider_options=[options[p] for p in providers],
            device=session_device(session),
        )

    def _model(self, op: str) -> bytes:
        elem, count = self._elem, self._count
        if op == "gather":
            return gather_model(elem, count)
        if op in ("write_tokens", "write_blocks"):
            # ScatterND: out = in, with in[index] = new at each index (its last axis addresses
            # the leading axes). Tokens: (block, head, offset) [rows, heads, 1, 3] with new
            # [rows, heads, 1, dim]; blocks: (block,) [blocks, 1] with new whole blocks.
            shared = {"indices": (INT64, 4 if op == "write_tokens" else 2)}
            return layer_op_model("ScatterND", elem, count, ("in", "indices", "new"), shared)
        if op == "concat":
            return layer_op_model("Concat", elem, count, ("in", "more"), axis=0)
        raise ValueError(f"unknown cache op {op!r}")

    def _session(self, op: str) -> ort.InferenceSession:
        session = self._sessions.get(op)
        if session is None:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(
                self._model(op),
                sess_options=options,
                providers=self._providers,
                provider_options=self._provider_options,
            )
            self._sessions[op] = session
        return session

    def _run(
        self,
        op: str,
        per_layer: Mapping[str, Sequence[ort.OrtValue | NDArray[Any]]],
        shared: Mapping[str, NDArray[np.int64]],
        *,
        in_place: bool = False,
    ) -> list[ort.OrtValue]:
        """Run the op; `in_place`: its outputs are its `in` values, written where they are
        (ScatterND then copies nothing; otherwise it copies each whole pool first, on CUDA a
        device copy of every layer's pool per step)."""
        for values in per_layer.values():
            if len(values) != self._count:
                raise ValueError(f"{len(values)} values for a {op} of {self._count}")
        session = self._session(op)
        binding = session.io_binding()
        for name, values in per_layer.items():
            for i, value in enumerate(values):
                if isinstance(value, ort.OrtValue):
                    binding.bind_ortvalue_input(f"{name}_{i}", value)
                else:
                    binding.bind_cpu_input(f"{name}_{i}", np.ascontiguousarray(value))
        for name, array in shared.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array, dtype=np.int64))
        device_type, device_id = self._device
        targets = list(per_layer["in"]) if in_place else []
        for i in range(self._count):
            if in_place:
                target = targets[i]
                if not isinstance(target, ort.OrtValue):
                    raise TypeError(f"{op} in place writes OrtValues, not {type(target)}")
                binding.bind_ortvalue_output(f"out_{i}", target)
            else:
                binding.bind_output(f"out_{i}", device_type, device_id)
        session.run_with_iobinding(binding)
        if in_place:
            return targets
        outputs: list[ort.OrtValue] = binding.get_outputs()
        return outputs

    def gather(self, values: Sequence[ort.OrtValue], rows: NDArray[np.int64]) -> list[ort.OrtValue]:
        """The selected rows (axis 0) of every value."""
        return self._run("gather", {"in": values}, {"indices": rows})

    def write_tokens(
        self,
        values: Sequence[ort.OrtValue],
        new: Sequence[ort.OrtValue | NDArray[Any]],
        blocks: NDArray[np.int64],
        offsets: NDArray[np.int64],
    ) -> list[ort.OrtValue]:
        """Each block pool [B, heads, S, dim] with new [rows, heads, 1, dim] written at row r's
        position offsets[r] of block blocks[r], in place (the same OrtValues back)."""
        first = new[0]
        rows, heads = (first.shape() if isinstance(first, ort.OrtValue) else first.shape)[:2]
        index = np.empty((rows, heads, 1, 3), dtype=np.int64)
        index[..., 0] = np.asarray(blocks, dtype=np.int64).reshape(rows, 1, 1)
        index[..., 1] = np.arange(heads).reshape(1, heads, 1)
        index[..., 2] = np.asarray(offsets, dtype=np.int64).reshape(rows, 1, 1)
        return self._run(
            "write_tokens", {"in": values, "new": new}, {"indices": index}, in_place=True
        )

    def write_blocks(
        self,
        values: Sequence[ort.OrtValue],
        new: Sequence[ort.OrtValue | NDArray[Any]],
        blocks: NDArray[np.int64],
    ) -> list[ort.OrtValue]:
        """Each block pool with new [len(blocks), heads, S, dim] written as those blocks, in
        place (the same OrtValues back)."""
        index = np.asarray(blocks, dtype=np.int64).reshape(-1, 1)
        return self._run(
            "write_blocks", {"in": values, "new": new}, {"indices": index}, in_place=True
        )

    def concat(
        self, values: Sequence[ort.OrtValue], more: Sequence[ort.OrtValue | NDArray[Any]]
    ) -> list[ort.OrtValue]:
        """Every value with more rows appended (axis 0)."""
        return self._run("concat", {"in": values, "more": more}, {})


class RowGather(CacheOps):
    """Selects rows (axis 0) of `count` same-dtype tensors on one device, in one run."""

    def __call__(
        self, values: Sequence[ort.OrtValue], rows: NDArray[np.int64]
    ) -> list[ort.OrtValue]:
        """The selected rows of every value, as new OrtValues on the same device."""
        return self.gather(values, rows)
