"""Loading models by registry name for the stages, once per process (after fork in workers)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from rich.console import Console

from verisolve.db import session_scope
from verisolve.inference.engine import Generator
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.verifier import Verifier
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest
from verisolve.pipeline.stages import GeneratedCandidate, SamplingRequest
from verisolve.settings import get_settings


class EngineGenerator:
    """The ONNX sampling engine behind the pipeline's generator interface."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        manifest = generator.manifest
        if manifest is None:
            raise ValueError("the generator was loaded without its manifest")
        self.prompt = manifest.prompt

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        """Render the few-shot prompt and sample the request's candidates."""
        params = SamplingParams(
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            max_new_tokens=request.max_new_tokens,
            seed=request.seed,
        )
        outputs = self.generator.generate(
            self.prompt.render(request.question), params, key=request.key
        )
        return [
            GeneratedCandidate(
                sample_index=c.sample_index,
                text=c.text,
                n_tokens=c.num_tokens,
                finish_reason=c.finish_reason,
                calc_calls=c.calculator_calls,
                calc_failures=c.calculator_failures,
                seconds=c.seconds,
            )
            for c in outputs
        ]


def model_path(name: str) -> Path:
    """The directory of a registered model name (or of a model directory given as a path)."""
    with session_scope() as session:
        return registry.resolve(session, name)


@lru_cache(maxsize=4)
def load_generator(name: str) -> EngineGenerator:
    """The generator of this name on the configured provider, loaded once per process."""
    return EngineGenerator(Generator.load(model_path(name), provider=get_settings().provider))


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
            console.print(f"Installing the default generator {generator} (once; about two minutes)")
        path = install_default(
            settings.models_path, on_stage=lambda line: console.print(f"  {line}")
        )
        with session_scope() as session:
            registry.register(session, Manifest.load(path), path)
    for name in (generator, verifier):
        if name is not None:
            model_path(name)  # a clear error now rather than in the middle of the job
