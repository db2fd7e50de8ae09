"""Training throughput against the machine's matrix-product peak, both measured in one run.

A training step here is the fine-tuning step `verisolve train generator` runs: forward over the
trunk, the head at the answer positions (all of them in this benchmark), cross-entropy, backward,
AdamW. Its useful work is counted as 6 FLOPs per parameter per token plus the attention scores
(12 x layers x width x sequence length per token, as PaLM's appendix counts it); the input
embedding is a lookup and is not counted. The peak is the best rate of a square torch.matmul
in the same precision.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainBenchSetup:
    """What to measure."""

    hf_dir: Path
    seq_len: int = 256
    rows: int = 8
    steps: int = 3
    threads: int | None = None
    matmul_size: int = 2048
    precisions: tuple[str, ...] = PRECISIONS


def matmul_peak(precision: str, size: int, repeats: int = 5) -> float:
    """The best FLOP/s of an n x n matrix product in this precision."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)  # warm-up: kernels chosen, caches filled
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def flops_per_token(model: Any, seq_len: int) -> float:
    """6 x parameters (input embedding excluded) + 12 x layers x width x sequence length."""
    config = model.config
    embedding = model.get_input_embeddings().weight
    counted = sum(p.numel() for p in model.parameters() if p is not embedding)
    if getattr(config, "tie_word_embeddings", False):
        counted += embedding.numel()  # the tied head is a real matrix product
    attention = 12 * config.num_hidden_layers * config.hidden_size * seq_len
    return float(6 * counted + attention)


def _step_seconds(setup: TrainBenchSetup, precision: str) -> tuple[float, Any]:
    """Mean seconds of a training step after one warm-up step; the model."""
    import torch

    from verisolve.training.batching import Example, collate
    from verisolve.training.generator import GeneratorTask, _causal_net_class
    from verisolve.training.modeling import load_causal_lm

    model = load_causal_lm(setup.hf_dir)
    net = _causal_net_class()(model).train()
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    rows = [
        Example(tuple(torch.randint(0, vocab, (setup.seq_len,), generator=gen).tolist()), 0)
        for _ in range(setup.rows)
    ]
    task = GeneratorTask(rows, [], 0)
    batch = collate(rows, 0)
    totals = task.counts(range(len(rows)))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-6)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    timings = []
    for _ in range(setup.steps + 1):
        start = time.perf_counter()
        with autocast:
            loss = task.loss(net, batch, totals)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - start)
    return sum(timings[1:]) / setup.steps, model


def run_bench(setup: TrainBenchSetup) -> dict[str, Any]:
    """Tokens/s, achieved FLOP/s and the share of the matmul peak, per precision."""
    import torch

    if setup.threads:
        torch.set_num_threads(setup.threads)
    result: dict[str, Any] = {
        **{k: v for k, v in asdict(setup).items() if k != "hf_dir"},
        "model": str(setup.hf_dir),
        "threads": torch.get_num_threads(),
        "tokens_per_step": setup.rows * setup.seq_len,
    }
    for precision in setup.precisions:
        peak = matmul_peak(precision, setup.matmul_size)
        seconds, model = _step_seconds(setup, precision)
        tokens = setup.rows * setup.seq_len / seconds
        achieved = tokens * flops_per_token(model, setup.seq_len)
        result[precision] = {
            "step_seconds": seconds,
            "tokens_per_s": tokens,
            "achieved_tflops": achieved / 1e12,
            "matmul_peak_tflops": peak / 1e12,
            "fraction_of_peak": achieved / peak,
        }
        result["parameters"] = sum(p.numel() for p in model.parameters())
    return result
