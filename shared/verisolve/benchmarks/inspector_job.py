"""A large finished job written straight into the database, for timing the inspector's pages.

Problems come from bench ingest's templates; each gets candidates that mix right answers, wrong
ones, calculator calls (some refused) and unparseable endings, scored by a synthetic token-level
verifier whose values follow the tiny tokenizer's tokens, so the shading path runs in full.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session
from tokenizers import Tokenizer

from verisolve.answers import extract_answer, parse_gold
from verisolve.db import session_scope
from verisolve.db.base import utcnow
from verisolve.evaluation import evaluate
from verisolve.inference.verifier import verifier_text
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest
from verisolve.modelstore.tiny import build_tiny_tokenizer
from verisolve.pipeline.jobs import create_job
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.spec import JobSpec, sampling_from
from verisolve.pipeline.stages import job_candidates, select_answers
from verisolve.problems import ProblemIn
from verisolve.tables import Candidate, Job, JobStatus, Problem, ProblemStatus

INSERT_ROWS = 5000


@dataclass(frozen=True)
class BenchVerifier:
    """The registered verifier's name, prompt and tokenizer."""

    name: str
    manifest: Manifest
    tokenizer: Tokenizer


def register_verifier(session: Session, folder: Path, name: str) -> BenchVerifier:
    """A token-form verifier directory (tiny tokenizer, no graph needed here), registered."""
    build_tiny_tokenizer(folder)
    manifest = Manifest(kind="verifier", name=name, score_form="token", pad_token_id=0)
    manifest.graphs["classifier"] = "model.onnx"
    manifest.save(folder)
    registry.register(session, manifest, folder)
    return BenchVerifier(name, manifest, Tokenizer.from_file(str(folder / "tokenizer.json")))


def _solution(rng: random.Random, gold: int) -> str:
    """A solution with two calculator calls, right about half the time."""
    a = rng.randint(2, 90)
    answer = gold if rng.random() < 0.5 else gold + rng.randint(-9, 9)
    kind = rng.random()
    if kind < 0.05:
        return f"There are <<{a}%7=3>>3 left over, I think. The answer is unclear"
    step = f"First <<{a}*2={2 * a}>>{2 * a} items, then <<{2 * a}-{a}={a}>>{a} more."
    return f"{step}\nSo the total is {answer}.\n#### {answer}"


def _values(offsets: list[tuple[int, int]], text: str, final: float) -> list[float]:
    """Hopeful values through the working, then the final verdict from the answer line on."""
    cut = text.rfind("So the total")
    cut = len(text) if cut < 0 else cut
    size = len(offsets)
    return [
        round(final if start >= cut else 0.5 + 0.15 * (t + 1) / size, 4)
        for t, (start, _) in enumerate(offsets)
    ]


def _candidates(
    rng: random.Random, verifier: BenchVerifier, problem: Problem, n: int
) -> Iterator[dict[str, object]]:
    gold = int(problem.gold or 0)
    texts = [_solution(rng, gold) for _ in range(n)]
    full = [verifier_text(verifier.manifest.prompt, problem.question, t) for t in texts]
    for i, (text, encoding) in enumerate(
        zip(texts, verifier.tokenizer.encode_batch(full), strict=True)
    ):
        answer = extract_answer(text)
        final = rng.uniform(0.5, 0.99) if answer == str(gold) else rng.uniform(0.01, 0.45)
        yield {
            "problem_id": problem.id,
            "sample_index": i,
            "text": text,
            "answer": answer,
            "n_tokens": len(text.split()),
            "finish_reason": "eos" if answer else "length",
            "calc_calls": text.count("<<"),
            "calc_failures": text.count("%"),
            "score": final,
            "token_scores": _values(encoding.offsets, full[i], final),
            "verifier": verifier.name,
        }


def build_job(
    engine: sa.Engine, owner: str, verifier: BenchVerifier, problems: list[dict[str, str]], n: int
) -> int:
    """A done job of these problems with n candidates each, selections and metrics; its id."""
    rng = random.Random(0)
    rows = [
        ProblemIn(p["id"], p["question"], p["answer"], parse_gold(p["answer"]), i)
        for i, p in enumerate(problems, start=1)
    ]
    generator = f"{owner}-generator"
    spec = JobSpec(generator, verifier.name, sampling_from({"n_samples": n}), owner=owner)
    with session_scope(engine) as session:
        session.add(registry.placeholder(generator))
        session.flush()
        job, _ = create_job(session, spec, rows, limits=JobLimits(max_problems=len(rows)))
        job_id = job.id
    with session_scope(engine) as session:
        stored = list(session.scalars(sa.select(Problem).where(Problem.job_id == job_id)))
        batch: list[dict[str, object]] = []
        for problem in stored:
            batch.extend(_candidates(rng, verifier, problem, n))
            if len(batch) >= INSERT_ROWS:
                session.execute(sa.insert(Candidate), batch)
                batch = []
        if batch:
            session.execute(sa.insert(Candidate), batch)
    _finish(engine, job_id, len(rows))
    return job_id


def _finish(engine: sa.Engine, job_id: int, n_problems: int) -> None:
    """Selections for every problem, then the job's metrics (few curve draws: it is a fixture)."""
    with session_scope(engine) as session:
        job = session.get_one(Job, job_id)
        for problem in session.scalars(sa.select(Problem).where(Problem.job_id == job_id)):
            select_answers(session, problem, job.vote_k)
            problem.status = ProblemStatus.DONE
        report = evaluate(job_candidates(session, job_id), k=job.vote_k, draws=2)
        job.metrics = report.to_json()
        job.status = JobStatus.DONE
        job.n_done = n_problems
        job.started_at = job.finished_at = utcnow()
