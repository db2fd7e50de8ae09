"""Loading models by registry name for the stages, once per process (after fork in workers)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from rich.console import Console

from verisolve.db import session_scope
from verisolve.inference.batching import BatchGenerator, BatchItem, load_batch_generator
from verisolve.inference.engine import Completion, Generator
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.verifier import Verifier
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest
from verisolve.pipeline.stages import GeneratedCandidate, K, SamplingRequest
from verisolve.settings import get_settings


class EngineGenerator:
    """The ONNX sampling engines behind the pipeline's generator interface.

    `generate` runs one problem on the per-problem engine; `generate_many` streams problems
    through the continuous-batching engine when the model has its cascade graph (older exports
    fall back to one problem at a time).
    """

    def __init__(self, generator: Generator, batch: BatchGenerator | None = None) -> None:
        self.generator = generator
        self.batch = batch
        manifest = generator.manifest
        if manifest is None:
            raise ValueError("the generator was loaded without its manifest")
        self.prompt = manifest.prompt

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        """Render the few-shot prompt and sample the request's candidates."""
        outputs = self.generator.generate(
            self.prompt.render(request.question), sampling_params(request), key=request.key
        )
        return [generated(c) for c in outputs]

    def generate_many(
        self, requests: Iterable[tuple[K, SamplingRequest]]
    ) -> Iterator[tuple[K, Sequence[GeneratedCandidate]]]:
        """Each request's tag and candidates, as soon as its last row ends."""
        if self.batch is None:
            for tag, request in requests:
                yield tag, self.generate(request)
            return
        items = (
            BatchItem(tag, self.prompt.render(r.question), sampling_params(r), key=r.key)
            for tag, r in requests
        )
        for tag, outputs in self.batch.stream(items):
            yield tag, [generated(c) for c in outputs]


def sampling_params(request: SamplingRequest) -> SamplingParams:
    """The engine's sampling parameters for a pipeline request."""
    return SamplingParams(
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        max_new_tokens=request.max_new_tokens,
        seed=request.seed,
    )


def generated(c: Completion) -> GeneratedCandidate:
    """The pipeline's record of one engine completion."""
    return GeneratedCandidate(
        sample_index=c.sample_index,
        text=c.text,
        n_tokens=c.num_tokens,
        finish_reason=c.finish_reason,
        calc_calls=c.calculator_calls,
        calc_failures=c.calculator_failures,
        seconds=c.seconds,
    )


def model_path(name: str) -> Path:
    """The directory of a registered model name (or of a model directory given as a path)."""
    with session_scope() as session:
        return registry.resolve(session, name)


@lru_cache(maxsize=4)
def load_generator(name: str) -> EngineGenerator:
    """The generator of this name on the configured provider, loaded once per process."""
    settings = get_settings()
    path = model_path(name)
    batch = load_batch_generator(
        path,
        provider=settings.provider,
        max_rows=settings.rows_in_flight,
        kv_budget_bytes=settings.kv_budget_bytes,
    )
    return EngineGenerator(Generator.load(path, provider=settings.provider), batch)


@lru_cache(maxsize=4)
def load_scorer(name: str) -> Verifier:
    """The verifier of this name on the configured provider, loaded once per process."""
    return Verifier.load(model_path(name), provider=get_settings().provider)


def ensure_models(generator: str, verifier: str | None, *, console: Console) -> None:
    """Install and register the default generator when it is asked for and missing."""
    from verisolve.modelstore.default import install_default, is_installed

    settings = get_settings()
    with session_scope() as session:
        known = registry.get(session, generator) is not None or Path(generator).is_dir()
    if not known and generator == settings.default_generator:
        target = settings.models_path / generator
        if not is_installed(target):
            console.print(f"Installing the default generator {generator} (once; a few minutes)")
        path = install_default(settings.models_path)
        with session_scope() as session:
            registry.register(session, Manifest.load(path), path)
    for name in (generator, verifier):
        if name is not None:
            model_path(name)  # a clear error now rather than in the middle of the job
