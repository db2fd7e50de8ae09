"""A tiny random Llama, exported once per test session (needs the export extra)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as transformers saves it (config, safetensors, tokenizer)."""
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "hf", arch="llama")


@pytest.fixture(scope="session")
def tiny_generator_dir(tiny_hf_dir: Path) -> Path:
    """The tiny model exported as a verisolve generator (fp32)."""
    from verisolve.modelstore.export import export_generator

    out = tiny_hf_dir.parent / "generator"
    export_generator(tiny_hf_dir, out, name="tiny-llama", stop=["\n\n"])
    return out


@pytest.fixture(scope="session")
def tiny_verifier_hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random verifiers as transformers saves them: one per score form."""
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-verifier")
    return {
        "sequence": build_tiny_model(root / "sequence", head="sequence-classification", seed=1),
        "token": build_tiny_model(root / "token", head="token-classification", seed=2),
    }


@pytest.fixture(scope="session")
def tiny_verifier_onnx(tiny_verifier_hf: dict[str, Path]) -> dict[str, Path]:
    """The tiny verifiers exported as verisolve verifiers (fp32)."""
    from verisolve.modelstore.verifier_export import export_verifier

    out: dict[str, Path] = {}
    for form, hf_dir in tiny_verifier_hf.items():
        out[form] = hf_dir.parent / f"{form}-onnx"
        export_verifier(hf_dir, out[form], name=f"tiny-{form}", score_form=form)  # type: ignore[arg-type]
    return out
