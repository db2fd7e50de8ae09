"""Tiny ONNX models written directly in ONNX's protobuf wire format.

The device-side helpers (cache gathers and writes in kvgather.py, sampling in
device_sampling.py) are graphs of a few ops that ONNX Runtime runs on the session's own device.
Writing their bytes here means that running a model needs no `onnx` package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ONNX TensorProto.DataType codes.
FLOAT = 1
FLOAT16 = 10
DOUBLE = 11
INT64 = 7
BFLOAT16 = 16
# AttributeProto.AttributeType codes.
_ATTR_INT = 2
_ATTR_INTS = 7
IR_VERSION = 8
OPSET = 13
_ELEM_OF_DTYPE = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.float64): DOUBLE,
    np.dtype(np.int64): INT64,
}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative ints as two's complement, as protobuf's int64 does
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def field(number: int, payload: int | str | bytes) -> bytes:
    """One protobuf field: a varint for ints, length-delimited for strings and messages."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def value_info(name: str, elem_type: int, dims: Sequence[str]) -> bytes:
    """A graph input or output: its name, element type and symbolic dimensions."""
    # ValueInfoProto{name=1, type=2: TypeProto{tensor_type=1: Tensor{elem_type=1, shape=2}}},
    # TensorShapeProto{dim=1: Dimension{dim_param=2}}: every dimension symbolic.
    shape = b"".join(field(1, field(2, dim)) for dim in dims)
    tensor = field(1, elem_type) + field(2, shape)
    return field(1, name) + field(2, field(1, tensor))


def node(op_type: str, inputs: Sequence[str], output: str, **attributes: int | list[int]) -> bytes:
    """A NodeProto with int or int-list attributes, named after its one output."""
    # NodeProto{input=1, output=2, name=3, op_type=4, attribute=5: AttributeProto{name=1, i=3,
    # ints=8, type=20}}
    attrs = b""
    for name, value in attributes.items():
        if isinstance(value, list):
            body = b"".join(field(8, v) for v in value) + field(20, _ATTR_INTS)
        else:
            body = field(3, value) + field(20, _ATTR_INT)
        attrs += field(5, field(1, name) + body)
    names = b"".join(field(1, name) for name in inputs)
    return names + field(2, output) + field(3, output) + field(4, op_type) + attrs


def initializer(name: str, array: np.ndarray) -> bytes:
    """A constant of the graph (float32, float64 or int64, little-endian raw data)."""
    # TensorProto{dims=1, data_type=2, name=8, raw_data=9}
    array = np.asarray(array)
    elem = _ELEM_OF_DTYPE[array.dtype]
    dims = b"".join(field(1, int(d)) for d in array.shape)
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return dims + field(2, elem) + field(8, name) + field(9, raw)


def model(
    name: str,
    nodes: Sequence[bytes],
    inputs: Sequence[bytes],
    outputs: Sequence[bytes],
    initializers: Sequence[bytes] = (),
) -> bytes:
    """A ModelProto of one graph at this module's opset."""
    # GraphProto{node=1, name=2, initializer=5, input=11, output=12}
    graph = b"".join(field(1, n) for n in nodes) + field(2, name)
    graph += b"".join(field(5, t) for t in initializers)
    graph += b"".join(field(11, i) for i in inputs) + b"".join(field(12, o) for o in outputs)
    # ModelProto{ir_version=1, graph=7, opset_import=8: OperatorSetId{version=2}}
    return field(1, IR_VERSION) + field(7, graph) + field(8, field(2, OPSET))
