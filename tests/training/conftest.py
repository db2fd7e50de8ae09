"""Fixtures of the training tests: a tiny Llama with its tokenizer, candidate files."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_data import write_candidates

pytest.importorskip("transformers", reason="training needs the export extra")
pytest.importorskip("accelerate", reason="training needs the export extra")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama causal LM with the tiny byte-level tokenizer (an HF directory)."""
    from verisolve.modelstore.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base", seed=0)


@pytest.fixture
def candidates_file(tmp_path: Path) -> Path:
    """A small learnable candidate file (40 problems, 4 candidates each)."""
    return write_candidates(tmp_path / "candidates.jsonl", 40)
