"""The row-gather graph that expands and compacts bound caches on their device."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from verisolve.inference.kvgather import CacheOps, RowGather, gather_model


def cpu_ops(elem_type: str, count: int, kind: type[CacheOps] = CacheOps) -> CacheOps:
    return kind(
        elem_type,
        count,
        providers=["CPUExecutionProvider"],
        provider_options=[{}],
        device=("cpu", 0),
    )


def cpu_gather(elem_type: str, count: int) -> RowGather:
    gather = cpu_ops(elem_type, count, RowGather)
    assert isinstance(gather, RowGather)
    return gather


@pytest.mark.parametrize(
    ("elem_type", "dtype"),
    [("tensor(float)", np.float32), ("tensor(float16)", np.float16)],
)
@pytest.mark.parametrize("rows", [[0, 0, 0, 0], [4, 1, 3], [2], [0, 1, 2, 3, 4]])
def test_gather_selects_rows_on_the_device(
    elem_type: str, dtype: type[np.generic], rows: list[int]
) -> None:
    gather = cpu_gather(elem_type, 3)
    arrays = [np.random.default_rng(i).random((5, 2, 7, 4)).astype(dtype) for i in range(3)]
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
    out = gather(values, np.array(rows, dtype=np.int64))
    assert [o.device_name() for o in out] == ["cpu"] * 3
    for got, array in zip(out, arrays, strict=True):
        np.testing.assert_array_equal(got.numpy(), array[rows])


def test_gather_model_is_valid_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(gather_model(1, 4))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Gather"] * 4
    assert [i.name for i in model.graph.input][-1] == "indices"


def test_gather_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="unsupported cache type"):
        cpu_gather("tensor(int8)", 1)
    gather = cpu_gather("tensor(float)", 2)
    value = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, 1, 1, 1), np.float32))
    with pytest.raises(ValueError, match="1 values for a gather of 2"):
        gather([value], np.zeros(1, dtype=np.int64))


@pytest.mark.parametrize(
    ("elem_type", "dtype"), [("tensor(float)", np.float32), ("tensor(float16)", np.float16)]
)
def test_cache_ops_write_blocks_and_tokens_and_append_as_numpy_does(
    elem_type: str, dtype: type[np.generic]
) -> None:
    ops = cpu_ops(elem_type, 2)
    rng = np.random.default_rng(5)
    # Block pools [blocks, heads, block size, dim].
    pools = [rng.random((5, 2, 4, 3)).astype(dtype) for _ in range(2)]
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in pools]
    blocks = np.array([4, 1], dtype=np.int64)
    whole = [rng.random((2, 2, 4, 3)).astype(dtype) for _ in range(2)]
    expected = [a.copy() for a in pools]
    written = ops.write_blocks(values, whole, blocks)
    # Written in place: the same pools back, not copies of them (a copy per layer per step).
    assert all(got is value for got, value in zip(written, values, strict=True))
    for array, fresh in zip(expected, whole, strict=True):
        array[blocks] = fresh
    for got, array in zip(written, expected, strict=True):
        np.testing.assert_array_equal(got.numpy(), array)
    new = [rng.random((3, 2, 1, 3)).astype(dtype) for _ in range(2)]
    at, offsets = np.array([0, 4, 2], dtype=np.int64), np.array([3, 0, 2], dtype=np.int64)
    tokens = ops.write_tokens(written, new, at, offsets)
    assert all(got is value for got, value in zip(tokens, values, strict=True))
    for got, array, fresh in zip(tokens, expected, new, strict=True):
        array[at, :, offsets, :] = fresh[:, :, 0, :]
        np.testing.assert_array_equal(got.numpy(), array)
    more = [rng.random((2, 2, 4, 3)).astype(dtype) for _ in range(2)]
    appended = ops.concat(tokens, more)
    for got, before, extra in zip(appended, tokens, more, strict=True):
        np.testing.assert_array_equal(got.numpy(), np.concatenate([before.numpy(), extra]))
    with pytest.raises(ValueError, match="1 values for a concat of 2"):
        ops.concat(values[:1], more[:1])
