"""The reference stacks the engine is measured against: transformers (PyTorch) and optimum (ONNX).

Both sample with `generate(num_return_sequences=N, do_sample=True)` from the same prompt and
parameters, and stop early only when every row has ended under the engine's rules. They need
the `export` extra, imported here lazily.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from verisolve.benchmarks.generate import OPTIMUM, TRANSFORMERS, BenchSetup, RunResult, TokenCounter
from verisolve.modelstore.export import HF_SUBDIR
from verisolve.modelstore.manifest import Manifest


class BenchError(RuntimeError):
    """A baseline that cannot run; the message says what is missing."""


def hf_source(model_dir: Path, manifest: Manifest) -> tuple[Path, dict[str, str]]:
    """Where transformers loads the model from: <model>/hf, or the manifest's source dir or GGUF."""
    kept = model_dir / HF_SUBDIR
    if (kept / "config.json").is_file():
        return kept, {}
    source = Path(manifest.source)
    if (source / "config.json").is_file():
        return source, {}
    if source.suffix == ".gguf" and source.is_file():
        return source.parent, {"gguf_file": source.name}
    raise BenchError(
        f"{model_dir} keeps no Hugging Face source ({HF_SUBDIR}/ with config.json) and its "
        f"manifest's source {manifest.source!r} is neither such a directory nor a GGUF file; "
        "export it with keep_hf to benchmark transformers"
    )


def _generate_kwargs(
    setup: BenchSetup, manifest: Manifest, count: TokenCounter, prompt_len: int
) -> dict[str, Any]:
    """The `generate` arguments both baselines share."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class EngineRules(StoppingCriteria):
        """Ends a row where the engine would; generation stops when all rows have ended."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            rows = input_ids[:, prompt_len:].tolist()
            return torch.tensor([count.finished(r) for r in rows], dtype=torch.bool)

    if setup.temperature <= 0:
        raise BenchError("the baselines sample: use a temperature above 0")
    eos = list(manifest.eos_token_ids)
    return {
        "do_sample": True,
        "temperature": setup.temperature,
        "top_p": setup.top_p,
        "top_k": 0,
        "max_new_tokens": setup.max_new_tokens,
        "num_return_sequences": setup.samples,
        "eos_token_id": eos or None,
        "pad_token_id": eos[0] if eos else 0,
        "stopping_criteria": StoppingCriteriaList([EngineRules()]),
    }


def _timed_generate(
    model: Any, name: str, setup: BenchSetup, manifest: Manifest, prompt: str, count: TokenCounter
) -> RunResult:
    import torch

    ids = torch.tensor([count.tokenizer.encode(prompt)])
    kwargs = _generate_kwargs(setup, manifest, count, ids.shape[1])
    torch.manual_seed(setup.seed)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    seconds = time.perf_counter() - started
    rows = out[:, ids.shape[1] :].tolist()
    return RunResult(name, seconds, len(rows), count(rows))


def run_transformers(
    setup: BenchSetup, prompt: str, manifest: Manifest, count: TokenCounter
) -> RunResult:
    """transformers' PyTorch generate on the Hugging Face source, fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    if setup.threads:
        torch.set_num_threads(setup.threads)
    path, extra = hf_source(setup.model_dir, manifest)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **extra)
    return _timed_generate(model, TRANSFORMERS, setup, manifest, prompt, count)


def run_optimum(
    setup: BenchSetup, prompt: str, manifest: Manifest, count: TokenCounter
) -> RunResult:
    """optimum's ORTModelForCausalLM.generate on the model directory's own ONNX decoder."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    if setup.threads:
        options.intra_op_num_threads = setup.threads
    model = ORTModelForCausalLM.from_pretrained(
        str(setup.model_dir),
        file_name=manifest.graphs["decoder"],
        session_options=options,
        provider="CPUExecutionProvider",
        use_io_binding=False,
        local_files_only=True,
    )
    return _timed_generate(model, OPTIMUM, setup, manifest, prompt, count)
