"""Jobs for the inspector's tests, run through the real stages with a scripted generator and a
token-level scorer that reads the registered verifier's tokenizer (no model needed)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from tokenizers import Tokenizer

from jobtools import make_job, spec
from verisolve.answers import parse_gold
from verisolve.db import session_scope
from verisolve.executors.inline import InlineExecutor
from verisolve.inference.verifier import verifier_text
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest
from verisolve.modelstore.tiny import build_tiny_tokenizer
from verisolve.pipeline.stages import CandidateScorer, GeneratedCandidate, SamplingRequest
from verisolve.problems import ProblemIn

QUESTIONS = [
    ("kites", "Tom has 2 kites and makes 3 more. How many kites does he have?", "5"),
    ("apples", "Ann picks 4 apples each day for 6 days. How many apples?", "24"),
    ("coins", "A jar holds 7 coins; 9 more are added. How many coins?", "16"),
]
# Per sample index: (solution, finish reason); the right answer wins the vote, and one sample
# calls the calculator with something it refuses.
SOLUTIONS = [
    ("She adds them: <<{a}+{b}={s}>>{s} in all.\n#### {s}", "eos"),
    ("Adding gives <<{a}+{b}={s}>>{s}.\n#### {s}", "eos"),
    ("First <<{a}*{b}={p}>>{p}, so the total is {p}.\n#### {p}", "eos"),
    ("Maybe <<{a}%{b}=1>>1 or so.\n#### 1", "stop"),
    ("I am not sure what to do with these numbers", "length"),
]


@dataclass(frozen=True)
class Score:
    """A verdict with a value per scored token."""

    score: float
    token_values: tuple[float, ...] | None


class ScriptedGenerator:
    """Writes the same five kinds of solution for every problem, with its numbers."""

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        a, b = (int(t) for t in _numbers(request.question)[:2])
        out = []
        for i in range(request.sampling.n):
            template, finish = SOLUTIONS[i % len(SOLUTIONS)]
            text = template.format(a=a, b=b, s=a + b, p=a * b)
            calls = text.count("<<")
            failures = 1 if "%" in text else 0
            out.append(GeneratedCandidate(i, text, len(text.split()), finish, calls, failures))
        return out


def _numbers(text: str) -> list[str]:
    return [w.strip(".?,") for w in text.split() if w.strip(".?,").isdigit()]


class TokenScorer:
    """A token-level verifier double: one value per token of what the real verifier encodes."""

    def __init__(self, model_dir: Path) -> None:
        self.manifest = Manifest.load(model_dir)
        self.tokenizer = Tokenizer.from_file(str(model_dir / self.manifest.tokenizer))

    def score(self, question: str, completions: Sequence[str]) -> Sequence[Score]:
        scores = []
        for completion in completions:
            text = verifier_text(self.manifest.prompt, question, completion)
            n = len(self.tokenizer.encode(text).ids)
            final = 0.9 if "+" in completion else 0.2 if "*" in completion else 0.05
            # The value drifts from 0.5 towards the final score along the tokens.
            values = tuple(0.5 + (final - 0.5) * (i + 1) / n for i in range(n))
            scores.append(Score(values[-1], values))
        return scores


def register_token_verifier(engine: sa.Engine, folder: Path) -> str:
    """A verifier directory with the tiny tokenizer and a token-form manifest, registered."""
    name = f"token-verifier-{uuid.uuid4().hex[:8]}"
    build_tiny_tokenizer(folder)
    manifest = Manifest(kind="verifier", name=name, score_form="token", pad_token_id=0)
    manifest.graphs["classifier"] = "model.onnx"
    manifest.save(folder)
    with session_scope(engine) as session:
        registry.register(session, manifest, folder)
    return name


def new_job(
    engine: sa.Engine,
    owner: str,
    verifier: str,
    model_dir: Path,
    n: int = 5,
    scorer: CandidateScorer | None = None,
) -> tuple[InlineExecutor, int]:
    """A pending job of the three questions, and an inline executor with the doubles."""
    problems = [
        ProblemIn(pid, question, gold, parse_gold(gold), line)
        for line, (pid, question, gold) in enumerate(QUESTIONS, start=1)
    ]
    job_spec = spec("scripted", verifier, n_samples=n, owner=owner, name="demo")
    with session_scope(engine) as session:
        job_id = make_job(session, job_spec, problems).id
    chosen = scorer or TokenScorer(model_dir)
    return InlineExecutor(engine, lambda _: ScriptedGenerator(), lambda _: chosen), job_id


def run_job(engine: sa.Engine, owner: str, verifier: str, model_dir: Path, n: int = 5) -> int:
    """A finished job of the three questions, solved inline with the doubles; its id."""
    executor, job_id = new_job(engine, owner, verifier, model_dir, n)
    executor.run(job_id)
    return job_id
