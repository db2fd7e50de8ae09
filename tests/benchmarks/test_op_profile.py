"""Reading ONNX Runtime's profiler output into op types per run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from verisolve.benchmarks.op_profile import BETWEEN, mean_by_op, profiled_runs
from verisolve.inference.providers import create_session


def _node(op: str, ts: int, dur: int) -> dict[str, object]:
    return {
        "cat": "Node",
        "name": f"{op}_1_kernel_time",
        "ts": ts,
        "dur": dur,
        "args": {"op_name": op},
    }


def test_profiled_runs_sum_kernels_per_run_and_keep_the_rest_as_between(tmp_path: Path) -> None:
    events = [
        {"cat": "Session", "name": "model_run", "ts": 100, "dur": 50},
        _node("MatMul", 105, 20),
        _node("MatMul", 130, 10),
        _node("Add", 141, 5),
        # Fences and session events are not kernels.
        {"cat": "Node", "name": "MatMul_1_fence_before", "ts": 104, "dur": 0, "args": {}},
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 30},
        _node("Add", 210, 12),
        # Run by the session before any model_run (loading): not a run's.
        _node("Gather", 10, 7),
    ]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(events), encoding="utf-8")
    first, second = profiled_runs(path)
    assert first == pytest.approx({"MatMul": 30e-6, "Add": 5e-6, BETWEEN: 15e-6})
    assert second == pytest.approx({"Add": 12e-6, BETWEEN: 18e-6})
    mean = mean_by_op([first, second])
    assert list(mean) == ["MatMul", "Add", BETWEEN]
    assert mean == pytest.approx({"MatMul": 15e-6, "Add": 8.5e-6, BETWEEN: 16.5e-6})
    with pytest.raises(ValueError, match="no profiled runs"):
        mean_by_op([])


def test_a_real_session_profile_has_its_ops(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.ones(64, dtype=np.float32))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "g.onnx"
    path.write_bytes(model.SerializeToString())
    session: ort.InferenceSession = create_session(path, profile=str(tmp_path / "p"))
    for _ in range(3):
        session.run(None, {"x": np.ones((4, 8), dtype=np.float32)})
    runs = profiled_runs(Path(session.end_profiling()))
    assert len(runs) == 3
    assert all("MatMul" in run and "Relu" in run and BETWEEN in run for run in runs)
