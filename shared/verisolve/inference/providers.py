"""ONNX Runtime sessions on an explicit execution provider, never a silent CPU fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import onnxruntime as ort

Provider = Literal["cpu", "cuda"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)

_ORT_NAMES: dict[Provider, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}


class ProviderUnavailableError(RuntimeError):
    """The execution provider asked for is not the one ONNX Runtime would run on."""


def ort_provider_name(provider: str) -> str:
    """ONNX Runtime's name for one of our provider names ("cpu" or "cuda")."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}: expected one of {', '.join(PROVIDERS)}")
    return _ORT_NAMES[provider]


def check_provider_available(provider: str) -> None:
    """Fail early when this ONNX Runtime build lacks the provider (e.g. CUDA on a CPU wheel)."""
    wanted = ort_provider_name(provider)
    available = ort.get_available_providers()
    if wanted not in available:
        raise ProviderUnavailableError(
            f"provider {provider!r} asked for, but this ONNX Runtime build "
            f"(onnxruntime {ort.__version__}) offers only {', '.join(available)}; "
            "for CUDA install onnxruntime-gpu (and not the CPU onnxruntime wheel beside it)"
        )


def create_session(
    model_path: Path,
    provider: str = "cpu",
    *,
    threads: int | None = None,
    arena: bool = True,
    profile: str | None = None,
) -> ort.InferenceSession:
    """A session that runs on `provider`, or a ProviderUnavailableError that says why not.

    `arena=False` turns ONNX Runtime's CPU memory arena off: tensors are freed to the system
    allocator rather than kept for reuse, which is leaner where their sizes change every run.
    `profile` turns ONNX Runtime's profiler on, writing its JSON at `session.end_profiling()`
    to a file whose name starts with this prefix (see benchmarks/op_profile.py).
    """
    check_provider_available(provider)
    wanted = ort_provider_name(provider)
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    if threads is not None:
        options.intra_op_num_threads = threads
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    # The CPU provider stays second in the list so that ops the CUDA provider lacks still run.
    providers = [wanted] if provider == "cpu" else [wanted, _ORT_NAMES["cpu"]]
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    in_use = session.get_providers()
    # ONNX Runtime drops a provider that fails to load (missing CUDA or cuDNN libraries) with
    # only a warning and runs everything on the CPU: refuse that here, at start.
    if wanted not in in_use:
        raise ProviderUnavailableError(
            f"provider {provider!r} asked for, but ONNX Runtime loaded {model_path.name} on "
            f"{', '.join(in_use)}: the {wanted} failed to initialise "
            "(check the CUDA and cuDNN libraries match this onnxruntime-gpu build)"
        )
    return session


def session_device(session: ort.InferenceSession) -> tuple[str, int]:
    """Where a session's bound outputs live, as IOBinding names it: ("cuda", id) or ("cpu", 0)."""
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return ("cpu", 0)
    options = session.get_provider_options().get("CUDAExecutionProvider", {})
    return ("cuda", int(options.get("device_id", 0)))
