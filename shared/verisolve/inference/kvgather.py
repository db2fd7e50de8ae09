"""Row selection of cache tensors where they live (GPU or CPU), with a tiny ONNX Gather graph.

Without torch there is no device-side indexing in Python: expanding the prompt's cache to N rows
and dropping finished rows are both a Gather along axis 0, run by ONNX Runtime on the session's
own device. The graph is written directly in ONNX's protobuf wire format, so running a model
needs no `onnx` package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

# ONNX TensorProto.DataType codes of the cache dtypes ONNX Runtime reports.
ELEM_TYPES = {
    "tensor(float)": 1,
    "tensor(float16)": 10,
    "tensor(double)": 11,
    "tensor(bfloat16)": 16,
}
_INT64 = 7
_ATTR_INT = 2
_IR_VERSION = 8
_OPSET = 13


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _field(number: int, payload: int | str | bytes) -> bytes:
    """One protobuf field: a varint for ints, length-delimited for strings and messages."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, elem_type: int, dims: Sequence[str]) -> bytes:
    # ValueInfoProto{name=1, type=2: TypeProto{tensor_type=1: Tensor{elem_type=1, shape=2}}},
    # TensorShapeProto{dim=1: Dimension{dim_param=2}}: every dimension symbolic.
    shape = b"".join(_field(1, _field(2, dim)) for dim in dims)
    tensor = _field(1, elem_type) + _field(2, shape)
    return _field(1, name) + _field(2, _field(1, tensor))


def gather_model(elem_type: int, count: int, rank: int = 4) -> bytes:
    """An ONNX model: out_i = Gather(in_i, indices, axis=0) for i < count, inputs of `rank`."""
    nodes = b"".join(
        _field(
            1,  # GraphProto.node: NodeProto{input=1, output=2, name=3, op_type=4, attribute=5}
            _field(1, f"in_{i}")
            + _field(1, "indices")
            + _field(2, f"out_{i}")
            + _field(3, f"gather_{i}")
            + _field(4, "Gather")
            + _field(5, _field(1, "axis") + _field(3, 0) + _field(20, _ATTR_INT)),
        )
        for i in range(count)
    )
    dims = [f"in_{i}_d{d}" for i in range(count) for d in range(rank)]
    inputs = b"".join(
        _field(11, _value_info(f"in_{i}", elem_type, dims[i * rank : (i + 1) * rank]))
        for i in range(count)
    )
    inputs += _field(11, _value_info("indices", _INT64, ["rows"]))
    outputs = b"".join(
        _field(
            12, _value_info(f"out_{i}", elem_type, ["rows", *dims[i * rank + 1 : (i + 1) * rank]])
        )
        for i in range(count)
    )
    graph = nodes + _field(2, "kv_gather") + inputs + outputs
    return _field(1, _IR_VERSION) + _field(7, graph) + _field(8, _field(2, _OPSET))


class RowGather:
    """Selects rows (axis 0) of `count` same-dtype tensors on one device, in one run."""

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
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            gather_model(ELEM_TYPES[elem_type], count),
            sess_options=options,
            providers=list(providers),
            provider_options=list(provider_options),
        )
        self._count = count
        self._device = device

    def __call__(
        self, values: Sequence[ort.OrtValue], rows: NDArray[np.int64]
    ) -> list[ort.OrtValue]:
        """The selected rows of every value, as new OrtValues on the same device."""
        if len(values) != self._count:
            raise ValueError(f"{len(values)} values for a gather of {self._count}")
        binding = self._session.io_binding()
        for i, value in enumerate(values):
            binding.bind_ortvalue_input(f"in_{i}", value)
        binding.bind_cpu_input("indices", np.ascontiguousarray(rows, dtype=np.int64))
        device_type, device_id = self._device
        for i in range(self._count):
            binding.bind_output(f"out_{i}", device_type, device_id)
        self._session.run_with_iobinding(binding)
        outputs: list[ort.OrtValue] = binding.get_outputs()
        return outputs
