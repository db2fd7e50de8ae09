"""Training data: labelled candidates for verifiers, worked solutions for generators.

Verifier data come from finished jobs whose problems have gold answers, or from a candidate
file of `{"question", "completion", "gold" | "correct"}` lines (optional `"problem"` or `"id"`
groups a problem's candidates; otherwise the question does). Labels come from verisolve's own
grading (the final answer only, as in the paper). Problems, never candidates, are split into
training and validation sets, so no held-out question was seen in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.answers import extract_answer, is_correct
from verisolve.jsonl import (
    ErrorCollector,
    InvalidLineError,
    JsonlFileError,
    LineError,
    RawLine,
    json_type,
    numbered_lines,
    optional_text,
    read_object,
    required_text,
)
from verisolve.modelstore.manifest import sha256_file
from verisolve.pipeline.jobs import JobNotFound, get_job
from verisolve.problems import gold_field, id_field, load_problems
from verisolve.settings import get_settings
from verisolve.tables import Candidate, Job, JobStatus, Problem


class TrainingDataError(ValueError):
    """Training data that cannot be used; the message names the job, file, line or field."""


class CandidateFileError(JsonlFileError):
    """A candidate file with bad lines; nothing of it is used."""


@dataclass(frozen=True, slots=True)
class LabelledCandidate:
    """One candidate solution and whether its final answer is right."""

    problem: str
    question: str
    completion: str
    correct: bool
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class Solution:
    """One problem with its worked answer, for supervised fine-tuning."""

    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class Dataset:
    """Labelled candidates and where they came from (job ids or the file's sha256)."""

    candidates: tuple[LabelledCandidate, ...]
    source: dict[str, Any]


def _candidate_line(raw: RawLine, line_no: int, limit: int) -> LabelledCandidate | None:
    """One candidate line, labelled; raises InvalidLineError."""
    obj = read_object(raw, line_no, max_line_bytes=limit)
    if obj is None:
        return None
    question = required_text(obj, "question")
    if not question.strip():
        raise InvalidLineError("empty", "question")
    completion = required_text(obj, "completion")
    answer = extract_answer(completion)
    gold = gold_field(obj, "gold")
    if gold is not None:
        correct = is_correct(answer, gold[1])
    elif "correct" in obj:
        if not isinstance(obj["correct"], bool):
            raise InvalidLineError(
                f"must be true or false, not {json_type(obj['correct'])}", "correct"
            )
        correct = obj["correct"]
    else:
        raise InvalidLineError("missing: give 'gold' (the right answer) or 'correct'", "gold")
    group = optional_text(obj, "problem") or id_field(obj) or question
    return LabelledCandidate(group, question, completion, correct, answer)


def load_candidate_file(path: Path) -> Dataset:
    """Every candidate of a JSONL file, labelled; raises on any bad line or an empty file."""
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    limit = get_settings().max_line_bytes
    found: list[LabelledCandidate] = []
    errors = ErrorCollector()
    for line_no, raw in numbered_lines(path, limit):
        try:
            item = _candidate_line(raw, line_no, limit)
        except InvalidLineError as exc:
            errors.add(exc.at(line_no))
            continue
        if item is not None:
            found.append(item)
    if errors.count:
        raise CandidateFileError(errors.errors, errors.count)
    if not found:
        raise TrainingDataError(f"{path}: the file holds no candidates")
    source = {"file": str(path.resolve()), "sha256": sha256_file(path)}
    return Dataset(tuple(found), source)


def _check_job(session: Session, job_id: int) -> Job:
    """A job whose candidates can be trained on, or a TrainingDataError saying why not."""
    try:
        job = get_job(session, job_id)
    except JobNotFound as exc:
        raise TrainingDataError(str(exc)) from None
    if job.status in (JobStatus.PENDING, JobStatus.RUNNING):
        raise TrainingDataError(f"job {job_id} is still {job.status}: train on it once it is done")
    without_gold = session.scalar(
        sa.select(sa.func.count()).where(Problem.job_id == job_id, Problem.gold.is_(None))
    )
    if without_gold:
        raise TrainingDataError(
            f"job {job_id}: {without_gold} problem(s) have no gold answer, so their candidates "
            "cannot be labelled"
        )
    return job


def load_jobs(session: Session, job_ids: Sequence[int]) -> Dataset:
    """The candidates of finished jobs with gold answers, labelled by their final answers."""
    found: list[LabelledCandidate] = []
    for job_id in job_ids:
        _check_job(session, job_id)
        rows = session.execute(
            sa.select(Problem.external_id, Problem.question, Problem.gold, Candidate.text)
            .join(Candidate, Candidate.problem_id == Problem.id)
            .where(Problem.job_id == job_id)
            .order_by(Problem.id, Candidate.sample_index)
        )
        before = len(found)
        for external_id, question, gold, text in rows:
            answer = extract_answer(text)
            correct = is_correct(answer, gold)
            problem = f"{job_id}/{external_id}"
            found.append(LabelledCandidate(problem, question, text, correct, answer))
        if len(found) == before:
            raise TrainingDataError(f"job {job_id} has no candidates")
    return Dataset(tuple(found), {"jobs": list(job_ids)})


def check_labels(candidates: Sequence[LabelledCandidate]) -> None:
    """Refuse data with only right or only wrong candidates: nothing to tell apart."""
    right = sum(c.correct for c in candidates)
    if right == 0 or right == len(candidates):
        which = "right" if right else "wrong"
        raise TrainingDataError(
            f"all {len(candidates)} candidates are {which}: a verifier needs both labels"
        )


def split_problems(
    candidates: Sequence[LabelledCandidate], val_fraction: float, seed: int
) -> tuple[list[LabelledCandidate], list[LabelledCandidate]]:
    """Training and validation candidates, split by problem (seeded)."""
    problems = sorted({c.problem for c in candidates})
    random.Random(seed).shuffle(problems)
    n_val = round(len(problems) * val_fraction) if val_fraction > 0 else 0
    if val_fraction > 0 and len(problems) >= 2:
        n_val = min(max(n_val, 1), len(problems) - 1)
    held = set(problems[:n_val])
    train = [c for c in candidates if c.problem not in held]
    val = [c for c in candidates if c.problem in held]
    return train, val


def load_solutions(path: Path) -> tuple[list[Solution], dict[str, Any]]:
    """Problems with worked answers from a problem file (GSM8K format), and its provenance."""
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    problems = load_problems(path)
    errors = [
        LineError(p.line_no, "missing: fine-tuning needs the worked answer", "answer")
        for p in problems
        if p.gold_raw is None
    ]
    if errors:
        raise CandidateFileError(errors[:1000], len(errors))
    if not problems:
        raise TrainingDataError(f"{path}: the file holds no problems")
    solutions = [Solution(p.question, p.gold_raw or "") for p in problems]
    return solutions, {"file": str(path.resolve()), "sha256": sha256_file(path)}


def split_solutions(
    solutions: Sequence[Solution], val_fraction: float, seed: int
) -> tuple[list[Solution], list[Solution]]:
    """Training and held-out problems (seeded); at least one of each when there are two."""
    order = list(range(len(solutions)))
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * val_fraction) if val_fraction > 0 else 0
    if val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    held = set(order[:n_val])
    train = [s for i, s in enumerate(solutions) if i not in held]
    return train, [s for i, s in enumerate(solutions) if i in held]
