"""The training loop shared by generators and verifiers, on Hugging Face accelerate.

One process or many (`torchrun` / `accelerate launch`: data-parallel, gloo on CPUs, NCCL on
GPUs) run the same plan: every epoch's batches follow from the seed alone, an optimizer step
takes `accumulation` micro-batches, and each process takes every world-size-th of them. Losses
are token sums divided by the step's token total, so one process and N processes compute the
same gradient. Checkpoints (accelerate's save_state: weights, optimizer, scheduler, RNG) are
written every `checkpoint_every` steps; `resume` continues from the newest complete one.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from verisolve.training.batching import Example, collate, plan_batches

logger = logging.getLogger(__name__)

STATE_FILE = "loop_state.json"
KEEP_CHECKPOINTS = 2


class ResumeError(RuntimeError):
    """Checkpoints that cannot be resumed (none, or written by another configuration)."""


@dataclass(frozen=True)
class LoopConfig:
    """Hyperparameters of the loop (all of them go into the manifest)."""

    epochs: int = 1
    learning_rate: float = 1e-5
    batch_tokens: int = 4096
    accumulation: int = 4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    precision: str = "auto"


@dataclass
class LoopRun:
    """Where a run keeps its checkpoints; whether it resumes; when it stops early (tests)."""

    work_dir: Path
    resume: bool = False
    stop_after: int | None = None
    progress: bool = True
    epoch_metrics: list[dict[str, Any]] = field(default_factory=list)


class Task(Protocol):
    """What the loop trains: the losses over a batch and the validation at each epoch's end."""

    examples: Sequence[Example]
    pad_id: int
    # True when the loss compares rows of one group (problem): batches then hold whole groups.
    grouped: bool
    # With grouped: a group over the batch budget may be cut (nothing compares its rows).
    split_groups: bool

    def counts(self, indices: Sequence[int]) -> dict[str, float]:
        """Per loss term, how many elements these examples contribute (its normaliser)."""
        ...

    def loss(self, model: Any, batch: dict[str, Any], totals: dict[str, float]) -> Any:
        """The batch's share of the step's loss: each term's sum over its step total."""
        ...

    def validate(self, model: Any) -> dict[str, Any]:
        """Metrics on the held-out data."""
        ...


def resolve_precision(precision: str) -> str:
    """ "bf16" on a GPU that has it when asked for "auto"; fp32 otherwise ("no" to accelerate).
    A GPU where torch only emulates bf16 (before Ampere: V100, T4) trains in fp32."""
    import torch

    if precision == "auto":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bf16" if bf16 else "fp32"
    return precision


def epoch_plans(task: Task, config: LoopConfig) -> list[list[list[list[int]]]]:
    """Per epoch, the optimizer steps; per step, its micro-batches of example indices."""
    lengths = [len(e.ids) for e in task.examples]
    groups = [e.group for e in task.examples] if task.grouped else None
    plans = []
    for epoch in range(config.epochs):
        seed = config.seed * 7919 + epoch
        batches = plan_batches(
            lengths, config.batch_tokens, seed=seed, groups=groups, split=task.split_groups
        )
        size = config.accumulation
        plans.append([batches[i : i + size] for i in range(0, len(batches), size)])
    return plans


def _param_groups(model: Any, learning_rate: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the model's own (`param_groups(lr)`) if it has them."""
    own = getattr(model, "param_groups", None)
    if callable(own):
        return list(own(learning_rate))
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def _fingerprint(config: LoopConfig, task: Task, extra: dict[str, Any]) -> str:
    """What must match for checkpoints to be resumed: hyperparameters and data."""
    import hashlib

    # How often checkpoints are written does not change the model; a resume may change it.
    hyper = {k: v for k, v in asdict(config).items() if k != "checkpoint_every"}
    digest = hashlib.sha256(json.dumps([hyper, extra], sort_keys=True).encode())
    for example in task.examples:
        digest.update(repr((example.ids, example.start, example.label)).encode())
    return digest.hexdigest()


def _checkpoints(work_dir: Path) -> list[Path]:
    """Complete checkpoints (their state file written last), oldest first."""
    found = [p for p in work_dir.glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def train(
    model: Any, task: Task, config: LoopConfig, run: LoopRun, fingerprint_extra: dict[str, Any]
) -> Any:
    """Train `model` on `task`; the unwrapped model (None when stopped early by `stop_after`)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    precision = resolve_precision(config.precision)
    accelerator = Accelerator(
        mixed_precision="bf16" if precision == "bf16" else "no",
        step_scheduler_with_optimizer=False,
        # Without it accelerate sees no distributed run on a machine without GPUs.
        cpu=not torch.cuda.is_available(),
    )
    set_seed(config.seed)
    if config.accumulation % accelerator.num_processes:
        logger.warning(
            "--accumulation %d is not a multiple of the %d processes: some idle each step",
            config.accumulation,
            accelerator.num_processes,
        )
    plans = epoch_plans(task, config)
    total = sum(len(p) for p in plans)
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.learning_rate),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    warmup = math.ceil(config.warmup_ratio * total)
    scheduler = get_scheduler(
        "linear", optimizer, num_warmup_steps=warmup, num_training_steps=total
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    fingerprint = _fingerprint(config, task, fingerprint_extra)
    done = _resume(accelerator, run, fingerprint) if run.resume else _fresh(accelerator, run)
    parts = _Parts(accelerator, model, optimizer, scheduler, task, config, run, fingerprint)
    finished = _run_steps(parts, plans, done, total)
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model) if finished else None


@dataclass
class _Parts:
    """What every step needs."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    task: Task
    config: LoopConfig
    run: LoopRun
    fingerprint: str


def _run_steps(parts: _Parts, plans: list[list[list[list[int]]]], done: int, total: int) -> bool:
    """Every step from `done` on; False when `stop_after` ended the run first."""
    from tqdm.auto import tqdm

    run, config = parts.run, parts.config
    show = run.progress and parts.accelerator.is_main_process
    bar = tqdm(total=total, initial=done, disable=not show, desc="training", unit="step")
    parts.model.train()
    index = 0
    try:
        for epoch, steps in enumerate(plans):
            for micro in steps:
                index += 1
                if index <= done:
                    continue
                loss = _step(parts, micro, index)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch + 1)
                if micro is steps[-1]:
                    _validate(parts, epoch)
                if index % config.checkpoint_every == 0 or index == total:
                    _save(parts, index)
                if run.stop_after is not None and index >= run.stop_after and index < total:
                    return False
    finally:
        bar.close()
    return True


def _step(parts: _Parts, micro: list[list[int]], index: int) -> float:
    """One optimizer step over a step's micro-batches, this process taking its share."""
    import torch

    accelerator, task = parts.accelerator, parts.task
    world, rank = accelerator.num_processes, accelerator.process_index
    totals: dict[str, float] = {}
    for batch in micro:
        for key, value in task.counts(batch).items():
            totals[key] = totals.get(key, 0.0) + value
    mine = micro[rank::world]
    share = math.ceil(len(micro) / world)
    # Every process must run as many backward passes; the extra ones weigh nothing.
    weights = [1.0] * len(mine) + [0.0] * (share - len(mine))
    mine = mine + [micro[0]] * (share - len(mine))
    torch.manual_seed(parts.config.seed * 1_000_003 + index * 131 + rank)
    reported = 0.0
    for position, (batch, weight) in enumerate(zip(mine, weights, strict=True)):
        tensors = {
            k: v.to(accelerator.device)
            for k, v in collate([task.examples[i] for i in batch], task.pad_id).items()
        }
        sync = position == len(mine) - 1
        context = accelerator.no_sync(parts.model) if not sync else _nullcontext()
        with context, accelerator.autocast():
            loss = task.loss(parts.model, tensors, totals) * (weight * world)
            accelerator.backward(loss)
        reported += float(loss.detach()) / world
    if parts.config.max_grad_norm > 0:
        accelerator.clip_grad_norm_(parts.model.parameters(), parts.config.max_grad_norm)
    parts.optimizer.step()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return reported


def _nullcontext() -> Any:
    """A context that does nothing."""
    import contextlib

    return contextlib.nullcontext()


def _validate(parts: _Parts, epoch: int) -> None:
    """The held-out metrics at an epoch's end, computed by the main process."""
    import torch

    accelerator = parts.accelerator
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(parts.model)
        model.eval()
        with torch.no_grad(), accelerator.autocast():
            metrics = parts.task.validate(model)
        model.train()
        parts.run.epoch_metrics.append({"epoch": epoch + 1, **metrics})
        logger.info("epoch %d: %s", epoch + 1, metrics)
    accelerator.wait_for_everyone()


def _save(parts: _Parts, step: int) -> None:
    """A checkpoint after `step`; its state file, written last, marks it complete."""
    accelerator, run = parts.accelerator, parts.run
    path = run.work_dir / f"checkpoint-{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        state = {"step": step, "fingerprint": parts.fingerprint, "epochs": run.epoch_metrics}
        (path / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        for old in _checkpoints(run.work_dir)[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _fresh(accelerator: Any, run: LoopRun) -> int:
    """Start from step 0, removing the checkpoints of an earlier run of this name."""
    if accelerator.is_main_process and run.work_dir.exists():
        stale = list(run.work_dir.glob("checkpoint-*"))
        if stale:
            logger.warning("removing %d checkpoint(s) of an earlier run", len(stale))
        for path in stale:
            shutil.rmtree(path)
    run.work_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return 0


def _resume(accelerator: Any, run: LoopRun, fingerprint: str) -> int:
    """Load the newest complete checkpoint; the step it was written after."""
    found = _checkpoints(run.work_dir)
    if not found:
        raise ResumeError(f"--resume: no checkpoint in {run.work_dir} to continue from")
    latest = found[-1]
    state = json.loads((latest / STATE_FILE).read_text(encoding="utf-8"))
    if state.get("fingerprint") != fingerprint:
        raise ResumeError(
            f"--resume: {latest} was written with other data or hyperparameters; "
            "run again with the same options, or without --resume to start over"
        )
    accelerator.load_state(str(latest))
    run.epoch_metrics = list(state.get("epochs", []))
    logger.info("resuming after step %d from %s", state["step"], latest)
    return int(state["step"])


def cleanup(run: LoopRun, is_main: bool) -> None:
    """Remove a finished run's checkpoints."""
    if is_main and run.work_dir.exists():
        shutil.rmtree(run.work_dir, ignore_errors=True)
