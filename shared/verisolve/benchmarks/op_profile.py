"""Where a graph's run time goes, by ONNX op type, read from ONNX Runtime's profiler.

A session created with profiling on (`create_session(..., profile=prefix)`) records every run
(`model_run`) and, within it, every node's kernel time; `session.end_profiling()` writes them
as JSON. Each run here becomes op type -> seconds, with the run's time outside any kernel (the
executor between nodes, feeding inputs and fetching outputs) under BETWEEN. On CUDA a kernel's
time is what its launch took on the host, not the device's: read these on CPU.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BETWEEN = "between nodes"


def profiled_runs(path: Path) -> list[dict[str, float]]:
    """Each run in a profiler file, in order: op type -> seconds, BETWEEN included."""
    events: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    starts = [int(run["ts"]) for run in runs]
    result: list[dict[str, float]] = [defaultdict(float) for _ in runs]
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        index = bisect.bisect_right(starts, int(event["ts"])) - 1
        if index < 0 or int(event["ts"]) > starts[index] + int(runs[index]["dur"]):
            continue  # a node outside any run: the session's own warm-up
        result[index][str(event["args"]["op_name"])] += int(event["dur"]) / 1e6
    for run, ops in zip(runs, result, strict=True):
        ops[BETWEEN] = max(0.0, int(run["dur"]) / 1e6 - sum(ops.values()))
    return [dict(ops) for ops in result]


def mean_by_op(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Seconds per run of each op type over these runs, the largest first (BETWEEN last)."""
    if not runs:
        raise ValueError("no profiled runs to average")
    totals: dict[str, float] = defaultdict(float)
    for run in runs:
        for op, seconds in run.items():
            totals[op] += seconds / len(runs)
    between = totals.pop(BETWEEN, 0.0)
    ordered = dict(sorted(totals.items(), key=lambda item: -item[1]))
    ordered[BETWEEN] = between
    return ordered
