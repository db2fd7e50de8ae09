"""`verisolve bench generate`: our engine against transformers' and optimum's `generate`.

All three get the same model, prompt, N, sampling parameters and token budget, and their
tokens are counted the same way: each row's generated tokens up to and including the one that
ended it under the engine's rules (EOS, a stop string, a complete `#### N` line), so a baseline
gets no credit for text written past the end of a solution, nor for padding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from verisolve.inference.engine import Generator
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.stopping import StopRules
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.manifest import Manifest

ENGINE = "engine"
# The engine on optimum's standard decode graph, when the model also has the prefix-shared one.
ENGINE_STANDARD = "engine-standard-graph"
TRANSFORMERS = "transformers"
OPTIMUM = "optimum"
RUNNERS = (ENGINE, ENGINE_STANDARD, TRANSFORMERS, OPTIMUM)

# Written for verisolve in GSM8K's style; used when no question file is given.
DEFAULT_QUESTION = (
    "A school orders 12 boxes of markers with 24 markers in each box. The art room keeps a third "
    "of the markers and the rest are shared equally among 8 classrooms. How many markers does "
    "each classroom get?"
)


@dataclass(frozen=True, slots=True)
class BenchSetup:
    """What every runner is given."""

    model_dir: Path
    samples: int = 64
    max_new_tokens: int = 256
    shots: int | None = None
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    threads: int | None = None
    question: str = DEFAULT_QUESTION

    def params(self) -> SamplingParams:
        """The engine's sampling parameters for this setup."""
        return SamplingParams(
            n=self.samples,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )


@dataclass(frozen=True, slots=True)
class RunResult:
    """One runner's timing and output size."""

    name: str
    seconds: float
    candidates: int
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        """Counted tokens per second of wall time."""
        return self.tokens / self.seconds

    @property
    def candidates_per_s(self) -> float:
        """Candidates per second of wall time."""
        return self.candidates / self.seconds


def bench_prompt(manifest: Manifest, question: str, shots: int | None) -> str:
    """The manifest's prompt for `question`, with the first `shots` exemplars (all if None)."""
    spec = manifest.prompt
    if shots is not None:
        if shots > len(spec.exemplars):
            raise ValueError(f"--shots {shots}: the model's prompt has {len(spec.exemplars)}")
        spec = spec.model_copy(update={"exemplars": spec.exemplars[:shots]})
    return spec.render(question)


def first_question(path: Path) -> str:
    """The `question` of the first line of a JSONL problem file."""
    with path.open(encoding="utf-8") as handle:
        line = handle.readline()
    try:
        question = json.loads(line)["question"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}:1: expected a JSON object with a 'question' field") from exc
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{path}:1: field 'question' must be a non-empty string")
    return question


@dataclass(frozen=True, slots=True)
class TokenCounter:
    """Counts generated rows' tokens the way the engine ends rows, for baselines' outputs."""

    tokenizer: TextTokenizer
    eos_token_ids: Sequence[int]
    rules: StopRules

    def __call__(self, rows: Sequence[Sequence[int]]) -> int:
        """Tokens of every row up to and including the one that ends it."""
        eos = set(self.eos_token_ids)
        total = 0
        for row in rows:
            ids = list(row)
            end = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
            total += _text_end(ids[:end], self.tokenizer, self.rules)
        return total

    def finished(self, row: Sequence[int]) -> bool:
        """Whether a row has ended (EOS or a stop rule) by its last token."""
        if any(t in self.eos_token_ids for t in row):
            return True
        return self.rules.find(self.tokenizer.decode(row)) is not None


def _text_end(ids: list[int], tokenizer: TextTokenizer, rules: StopRules) -> int:
    """The fewest leading tokens whose text already meets a stop rule, else len(ids)."""
    if rules.find(tokenizer.decode(ids)) is None:
        return len(ids)
    low, high = 1, len(ids)
    while low < high:  # texts of longer prefixes extend shorter ones, so this is monotone
        mid = (low + high) // 2
        if rules.find(tokenizer.decode(ids[:mid])) is None:
            low = mid + 1
        else:
            high = mid
    return low


def run_engine(setup: BenchSetup, prompt: str, *, prefix_shared: bool = True) -> RunResult:
    """Our engine: one prefill, calculator, early exit (on either decode graph)."""
    generator = Generator.load(setup.model_dir, threads=setup.threads, prefix_shared=prefix_shared)
    started = time.perf_counter()
    candidates = generator.generate(prompt, setup.params(), key="bench")
    seconds = time.perf_counter() - started
    tokens = sum(c.num_tokens for c in candidates)
    name = ENGINE if prefix_shared else ENGINE_STANDARD
    return RunResult(name, seconds, len(candidates), tokens)


def compare(
    setup: BenchSetup,
    runners: Sequence[str] = RUNNERS,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, object]:
    """Run each runner once on the same prompt; timings, rates and the engine's speedups."""
    from verisolve.benchmarks import baselines

    manifest = Manifest.load(setup.model_dir)
    prompt = bench_prompt(manifest, setup.question, setup.shots)
    tokenizer = TextTokenizer.from_file(setup.model_dir / manifest.tokenizer)
    rules = StopRules(manifest.stop, answer_line=True)
    count = TokenCounter(tokenizer, manifest.eos_token_ids, rules)
    run: dict[str, Callable[[], RunResult]] = {
        ENGINE: lambda: run_engine(setup, prompt),
        ENGINE_STANDARD: lambda: run_engine(setup, prompt, prefix_shared=False),
        TRANSFORMERS: lambda: baselines.run_transformers(setup, prompt, manifest, count),
        OPTIMUM: lambda: baselines.run_optimum(setup, prompt, manifest, count),
    }
    if "decoder_prefix" not in manifest.graphs:  # the engine already runs the standard graph
        runners = [r for r in runners if r != ENGINE_STANDARD]
    results: dict[str, RunResult] = {}
    for name in runners:
        progress(f"running {name} (N={setup.samples}, {setup.max_new_tokens} new tokens)")
        result = results[name] = run[name]()
        progress(
            f"{name}: {result.seconds:.1f} s, {result.tokens} tokens, "
            f"{result.tokens_per_s:.1f} tokens/s, {result.candidates_per_s:.3f} candidates/s"
        )
    return summary(setup, manifest, len(tokenizer.encode(prompt)), results)


def summary(
    setup: BenchSetup, manifest: Manifest, prompt_tokens: int, results: dict[str, RunResult]
) -> dict[str, object]:
    """One flat object: per runner seconds, tokens, rates; speedups of the engine's tokens/s."""
    out: dict[str, object] = {
        "model": manifest.name,
        "int8": manifest.int8,
        "samples": setup.samples,
        "max_new_tokens": setup.max_new_tokens,
        "shots": setup.shots if setup.shots is not None else len(manifest.prompt.exemplars),
        "prompt_tokens": prompt_tokens,
        "temperature": setup.temperature,
        "top_p": setup.top_p,
        "threads": setup.threads,
    }
    for name in RUNNERS:
        result = results.get(name)
        out[f"{name}_seconds"] = result.seconds if result else None
        out[f"{name}_tokens"] = result.tokens if result else None
        out[f"{name}_tokens_per_s"] = result.tokens_per_s if result else None
        out[f"{name}_candidates_per_s"] = result.candidates_per_s if result else None
    engine = results.get(ENGINE)
    for name in (ENGINE_STANDARD, TRANSFORMERS, OPTIMUM):
        other = results.get(name)
        ratio = engine.tokens_per_s / other.tokens_per_s if engine and other else None
        time_ratio = engine.candidates_per_s / other.candidates_per_s if engine and other else None
        out[f"speedup_vs_{name}"] = ratio
        out[f"time_speedup_vs_{name}"] = time_ratio
    return out
