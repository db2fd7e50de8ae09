"""Loading models by registry name for the stages, once per process (after fork in workers)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from rich.console import Console

from verisolve.db import session_scope
from verisolve.inference.batching import BatchGenerator, BatchItem, load_batch_generator
from verisolve.inference.engine import Completion, Generator
from verisolve.inference.verifier import Verifier
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest, PromptSpec
from verisolve.pipeline.stages import GeneratedCandidate, K, SamplingRequest
from verisolve.settings import get_settings


class EngineGenerator:
    """An ONNX sampling engine behind the pipeline's generator interface.

    The continuous-batching engine when the model has its cascade graph: `generate_many`
    streams problems through one batch. Older exports get the per-problem engine, one problem at
    a time.
    """

    def __init__(self, engine: Generator | BatchGenerator, prompt: PromptSpec) -> None:
        self.engine = engine
        self.prompt = prompt

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        """Render the few-shot prompt and sample the request's candidates."""
        outputs = self.engine.generate(
            self.prompt.render(request.question), request.sampling, key=request.key
        )
        return [generated(c) for c in outputs]

    def generate_many(
        self, requests: Iterable[tuple[K, SamplingRequest]]
    ) -> Iterator[tuple[K, Sequence[GeneratedCandidate]]]:
        """Each request's tag and candidates, as soon as its last row ends."""
        if not isinstance(self.engine, BatchGenerator):
            for tag, request in requests:
                yield tag, self.generate(request)
            return
        items = (
            BatchItem(tag, self.prompt.render(r.question), r.sampling, key=r.key)
            for tag, r in requests
        )
        for tag, outputs in self.engine.stream(items):
            yield tag, [generated(c) for c in outputs]


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
    """The directory of a registered model name (names only: a worker loads nothing else)."""
    with session_scope() as session:
        return registry.resolve_name(session, name)


@lru_cache(maxsize=4)
def load_generator(name: str) -> EngineGenerator:
    """The generator of this name on the configured provider, loaded once per process."""
    settings = get_settings()
    path = model_path(name)
    engine = load_batch_generator(
        path,
        provider=settings.provider,
        max_rows=settings.rows_in_flight,
        kv_budget_bytes=settings.kv_budget_bytes,
    )
    return EngineGenerator(
        engine or Generator.load(path, provider=settings.provider), Manifest.load(path).prompt
    )


@lru_cache(maxsize=4)
def load_scorer(name: str) -> Verifier:
    """The verifier of this name on the configured provider, loaded once per process."""
    return Verifier.load(model_path(name), provider=get_settings().provider)


def ensure_models(generator: str, verifier: str | None, *, console: Console) -> None:
    """Install and register the default generator when it is asked for and missing."""
    from verisolve.modelstore.default import install_default, is_installed

    settings = get_settings()
    with session_scope() as session:
        known = registry.get(session, generator) is not None
    if not known and generator == settings.default_generator:
        target = settings.models_path / generator
        if not is_installed(target):
            console.print(f"Installing the default generator {generator} (once; about two minutes)")
        path = install_default(
            settings.models_path, on_stage=lambda line: console.print(f"  {line}")
        )
        with session_scope() as session:
            registry.register(session, Manifest.load(path), path)
    for name in (generator, verifier):
        if name is not None:
            model_path(name)  # a clear error now rather than in the middle of the job
