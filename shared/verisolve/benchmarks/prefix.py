"""The time of one decode step against the past length: optimum's graph, the prefix graph and
(when the model has it) the cascade graph of continuous batching.

A step's cost depends on the shapes of its inputs, not their values, so each graph gets a cache
of the right shape filled with random values: optimum's graph N rows of P + S past tokens, the
prefix and cascade graphs one row of P prompt tokens and N rows of S generated ones (the
cascade graph's in its own cache dtype, float16 in int8 builds).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from verisolve.benchmarks.generate import DEFAULT_QUESTION, bench_prompt
from verisolve.benchmarks.op_profile import mean_by_op, profiled_runs
from verisolve.inference.cascade_decoder import CascadeBatch, CascadeDecoder, QuestionCache
from verisolve.inference.onnx_decoder import CacheLayout
from verisolve.inference.prefix_decoder import PrefixDecoder
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.cascade_export import CASCADE_ROLE
from verisolve.modelstore.manifest import Manifest

STANDARD = "standard"
PREFIX = "prefix"
CASCADE = "cascade"
# The cascade graph of a second model (`against`), timed alternately with the first's on the
# same inputs: two exports of one model (another quantisation, say) compared in one run.
AGAINST = "cascade against"
GRAPHS = (STANDARD, PREFIX, CASCADE, AGAINST)


@dataclass(frozen=True, slots=True)
class StepTiming:
    """The median time of one decode step of one graph at one cache shape.

    `ops`, when profiled: seconds per step by ONNX op type (mean over the timed runs), the time
    outside every kernel last.
    """

    graph: str
    rows: int
    prompt_tokens: int
    generated_tokens: int
    seconds: float
    ops: dict[str, float] | None = None


def _median_run(
    session: ort.InferenceSession, feeds: dict[str, NDArray[Any]], repeats: int
) -> float:
    """The median wall time of `repeats` runs, after one warm-up run."""
    return _median_runs([(session, feeds)], repeats)[0]


def _median_runs(
    runs: Sequence[tuple[ort.InferenceSession, dict[str, Any]]], repeats: int
) -> list[float]:
    """Each session's median wall time of `repeats` runs on its feeds, after one warm-up run
    each; the sessions take turns, so that a machine's drift weighs on all of them alike."""
    times: list[list[float]] = [[] for _ in runs]
    for session, feeds in runs:
        session.run(None, feeds)
    for _ in range(repeats):
        for (session, feeds), taken in zip(runs, times, strict=True):
            started = time.perf_counter()
            session.run(None, feeds)
            taken.append(time.perf_counter() - started)
    return [statistics.median(taken) for taken in times]


def _cache(layout: CacheLayout, rows: int, length: int, rng: np.random.Generator) -> NDArray[Any]:
    return _random_cache(
        rows, layout.kv_heads, length, layout.head_dim, layout.empty_past().dtype, rng
    )


def _random_cache(
    rows: int, heads: int, length: int, dim: int, dtype: Any, rng: np.random.Generator
) -> NDArray[Any]:
    shape = (rows, heads, length, dim)
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)


def _standard_feeds(
    decoder: PrefixDecoder, rows: int, past: int, rng: np.random.Generator
) -> dict[str, NDArray[Any]]:
    layout = decoder.layout
    feeds: dict[str, NDArray[Any]] = {
        "input_ids": rng.integers(0, 100, (rows, 1)),
        "attention_mask": np.ones((rows, past + 1), dtype=np.int64),
    }
    if layout.has_position_ids:
        feeds["position_ids"] = np.full((rows, 1), past, dtype=np.int64)
    feeds.update((name, _cache(layout, rows, past, rng)) for name in layout.past_names)
    return feeds


def _prefix_feeds(
    decoder: PrefixDecoder, rows: int, prompt: int, generated: int, rng: np.random.Generator
) -> dict[str, NDArray[Any]]:
    layout = decoder.layout
    feeds: dict[str, NDArray[Any]] = {
        "input_ids": rng.integers(0, 100, (rows, 1)),
        "position_ids": np.full((rows, 1), prompt + generated, dtype=np.int64),
    }
    feeds.update((name, _cache(layout, 1, prompt, rng)) for name in decoder.prefix_names)
    feeds.update((name, _cache(layout, rows, generated, rng)) for name in decoder.suffix_names)
    return feeds


def _cascade_feeds(
    decoders: Sequence[CascadeDecoder],
    rows: int,
    prompt: int,
    generated: int,
    rng: np.random.Generator,
) -> list[dict[str, NDArray[Any]]]:
    """A step of `rows` rows, each `generated` positions long in its own blocks of the pool, as
    the batch engine lays them out (random caches): the same step for each decoder, its shared
    prefix in the layout its graph reads (with or without the sentinel position, padded as the
    decoder pads it) and its caches in the dtypes it takes (float32 or float16)."""
    cascade = decoders[0]

    def cache(length: int, dtype: Any) -> NDArray[Any]:
        return _random_cache(1, cascade.kv_heads, length, cascade.head_dim, dtype, rng)

    fed = [cache(prompt, cascade.prefix_dtype) for _ in cascade.prefix_names]
    prefixes = [
        d.padded_prefix(
            d.extend_prefix(d.prefix_start(), [f.astype(d.prefix_dtype, copy=False) for f in fed])
        )
        for d in decoders
    ]
    batch = CascadeBatch(cascade, prefixes[0], prompt)
    own = tuple(cache(generated, cascade.own_dtype) for _ in cascade.own_names)
    batch.admit(QuestionCache(own, generated), rows)
    batch.compact()  # no spare blocks (the pool grows in steps): a step reads the rows' alone
    feeds = batch.step_inputs(rng.integers(0, 100, rows))
    return [
        {
            **feeds,
            **{
                n: pool.astype(d.own_dtype, copy=False)
                for n, pool in zip(d.own_names, batch.pools, strict=True)
            },
            **dict(zip(d.prefix_names, prefix, strict=True)),
        }
        for d, prefix in zip(decoders, prefixes, strict=True)
    ]


def time_decode_steps(
    model_dir: Path,
    *,
    rows: int = 64,
    prompt_lengths: Sequence[int] = (8, 600),
    generated_lengths: Sequence[int] = (1, 120),
    repeats: int = 5,
    threads: int | None = None,
    seed: int = 0,
    profile: bool = False,
    against: Path | None = None,
) -> list[StepTiming]:
    """One decode step of each graph of a model directory, at every (prompt, generated) pair.

    `profile` runs every session under ONNX Runtime's profiler (its overhead is in the times
    then) and gives each timing its `ops`. `against`: another model directory whose cascade
    graph takes the same inputs, timed as AGAINST, alternately with this model's.
    """
    with tempfile.TemporaryDirectory(prefix="verisolve-profile-") as scratch:
        prefix = str(Path(scratch) / "step") if profile else None
        return _time_decode_steps(
            model_dir,
            rows=rows,
            prompt_lengths=prompt_lengths,
            generated_lengths=generated_lengths,
            repeats=repeats,
            threads=threads,
            seed=seed,
            profile=prefix,
            against=against,
        )


def _time_decode_steps(
    model_dir: Path,
    *,
    rows: int,
    prompt_lengths: Sequence[int],
    generated_lengths: Sequence[int],
    repeats: int,
    threads: int | None,
    seed: int,
    profile: str | None,
    against: Path | None,
) -> list[StepTiming]:
    manifest = Manifest.load(model_dir)
    prefix_file = manifest.graphs.get("decoder_prefix")
    if prefix_file is None:
        raise ValueError(f"{model_dir}: the manifest names no 'decoder_prefix' graph")
    decoder = PrefixDecoder.load(
        model_dir / manifest.graphs["decoder"],
        model_dir / prefix_file,
        threads=threads or len(os.sched_getaffinity(0)),
        profile=profile,
    )
    cascade_file = manifest.graphs.get(CASCADE_ROLE)
    cascade = (
        None
        if cascade_file is None
        else CascadeDecoder.load(model_dir / cascade_file, threads=threads, profile=profile)
    )
    sessions = {STANDARD: decoder.prefill_session, PREFIX: decoder.step_session}
    if cascade is not None:
        sessions[CASCADE] = cascade.session
    decoders = [] if cascade is None else [cascade]
    if against is not None:
        decoders.append(_against(cascade, against, threads, profile))
        sessions[AGAINST] = decoders[-1].session
    rng = np.random.default_rng(seed)
    timings = []
    for prompt in prompt_lengths:
        for generated in generated_lengths:
            standard = _standard_feeds(decoder, rows, prompt + generated, rng)
            seconds = _median_run(decoder.prefill_session, standard, repeats)
            timings.append(StepTiming(STANDARD, rows, prompt, generated, seconds))
            del standard
            shared = _prefix_feeds(decoder, rows, prompt, generated, rng)
            seconds = _median_run(decoder.step_session, shared, repeats)
            timings.append(StepTiming(PREFIX, rows, prompt, generated, seconds))
            del shared
            if decoders:
                feeds = _cascade_feeds(decoders, rows, prompt, generated, rng)
                graphs = [g for g in (CASCADE, AGAINST) if g in sessions]
                runs = [(sessions[g], f) for g, f in zip(graphs, feeds, strict=True)]
                times = _median_runs(runs, repeats)
                for graph, seconds in zip(graphs, times, strict=True):
                    timings.append(StepTiming(graph, rows, prompt, generated, seconds))
    if profile is None:
        return timings
    return _with_ops(timings, sessions, repeats)


def _against(
    cascade: CascadeDecoder | None, other_dir: Path, threads: int | None, profile: str | None
) -> CascadeDecoder:
    """The other model's cascade graph, checked to take the first one's inputs (its caches may
    be of another float dtype: an fp32 export against an int8 one's float16 caches)."""
    other = Manifest.load(other_dir).graphs.get(CASCADE_ROLE)
    if cascade is None or other is None:
        raise ValueError("--against compares two models' cascade graphs: both need one")
    decoder = CascadeDecoder.load(other_dir / other, threads=threads, profile=profile)

    def inputs(d: CascadeDecoder) -> list[tuple[str, str, list[Any]]]:
        # The shared prefix's keys are the one input whose layout may differ (the sentinel).
        prefix = set(d.prefix_names[::2])
        # The caches' dtype may differ too (`_cascade_feeds` casts them); no other input's.
        caches = {*d.prefix_names, *d.own_names}
        return [
            (i.name, "cache" if i.name in caches else i.type, i.shape)
            for i in d.session.get_inputs()
            if i.name not in prefix
        ]

    if inputs(cascade) != inputs(decoder):
        raise ValueError(f"{other_dir}: its cascade graph does not take the same inputs")
    return decoder


def _with_ops(
    timings: list[StepTiming], sessions: dict[str, ort.InferenceSession], repeats: int
) -> list[StepTiming]:
    """Each timing with its op breakdown: its graph's profiled runs, in the order they ran."""
    per_point = 1 + repeats  # _median_run's warm-up, then the timed runs
    pending: dict[str, list[dict[str, float]]] = {}
    for graph, session in sessions.items():
        runs = profiled_runs(Path(session.end_profiling()))
        expected = per_point * sum(1 for t in timings if t.graph == graph)
        if len(runs) != expected:
            raise RuntimeError(f"the profiler recorded {len(runs)} runs of {graph}, not {expected}")
        pending[graph] = runs
    result: list[StepTiming] = []
    for timing in timings:
        runs = pending[timing.graph]
        result.append(replace(timing, ops=mean_by_op(runs[1:per_point])))
        pending[timing.graph] = runs[per_point:]
    return result


def prompt_lengths_for_shots(
    model_dir: Path, shots: Sequence[int], question: str = DEFAULT_QUESTION
) -> dict[int, int]:
    """Shots -> tokens of the model's prompt for `question` with that many exemplars."""
    manifest = Manifest.load(model_dir)
    tokenizer = TextTokenizer.from_file(model_dir / manifest.tokenizer)
    return {k: len(tokenizer.encode(bench_prompt(manifest, question, k))) for k in shots}


def timings_by_point(
    timings: Sequence[StepTiming],
) -> dict[tuple[int, int], list[StepTiming]]:
    """(prompt tokens, generated tokens) -> that point's timings, one per graph, in run order."""
    points: dict[tuple[int, int], list[StepTiming]] = {}
    for t in timings:
        points.setdefault((t.prompt_tokens, t.generated_tokens), []).append(t)
    return points


def step_seconds(timings: Sequence[StepTiming]) -> dict[tuple[int, int], dict[str, float]]:
    """(prompt tokens, generated tokens) -> graph -> seconds, for side-by-side tables."""
    return {
        point: {t.graph: t.seconds for t in group}
        for point, group in timings_by_point(timings).items()
    }
