"""What the miniature reproduction measured: accuracy per strategy with bootstrap intervals over
problems, accuracy against N, the verifier's ranking within problems, and the data-scaling curve.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.answers import is_correct
from verisolve.evaluation import (
    EvalCandidate,
    ProblemCandidates,
    accuracy_curves,
    auroc,
    coverage,
    single_sample_accuracy,
)
from verisolve.pipeline.stages import job_candidates
from verisolve.selection import Strategy, select
from verisolve.tables import Candidate, Problem

if TYPE_CHECKING:
    from verisolve.repro.mini import Run

STRATEGIES = (Strategy.VERIFIER, Strategy.TOPK_VOTE, Strategy.MAJORITY, Strategy.FIRST)
SINGLE = "single-sample"
BOOTSTRAP_DRAWS = 2000
# Paired differences worth an interval: the paper's claims.
DIFFERENCES = (
    ("verifier", "majority"),
    ("verifier", SINGLE),
    ("topk-vote", "verifier"),
    ("topk-vote", "majority"),
)


def training_candidates(engine: sa.Engine, job_id: int) -> Iterator[dict[str, Any]]:
    """A job's candidates as candidate-file lines: problem, question, gold, completion, answer."""
    query = (
        sa.select(
            Problem.external_id,
            Problem.question,
            Problem.gold,
            Candidate.sample_index,
            Candidate.text,
            Candidate.answer,
        )
        .join(Candidate, Candidate.problem_id == Problem.id)
        .where(Problem.job_id == job_id)
        .order_by(Problem.id, Candidate.sample_index)
    )
    with Session(engine) as session:
        rows = session.execute(query).all()
    for external_id, question, gold, index, text, answer in rows:
        yield {
            "problem": external_id,
            "sample_index": index,
            "question": question,
            "gold": gold,
            "completion": text,
            "answer": answer,
        }


def per_problem(problems: Sequence[ProblemCandidates], k: int) -> dict[str, np.ndarray]:
    """Each strategy's 0/1 correctness per problem, and the single-sample accuracy per problem."""
    out: dict[str, np.ndarray] = {}
    for strategy in STRATEGIES:
        out[strategy.value] = np.array(
            [is_correct(select(strategy, p.candidates, k=k).answer, p.gold) for p in problems],
            dtype=np.float64,
        )
    out[SINGLE] = np.array(
        [
            np.mean([is_correct(c.answer, p.gold) for c in p.candidates]) if p.candidates else 0.0
            for p in problems
        ]
    )
    return out


def bootstrap(values: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """95% percentile intervals over problems for each accuracy and the paired differences."""
    n = len(next(iter(values.values())))
    idx = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_DRAWS, n))

    def interval(v: np.ndarray) -> list[float]:
        means = v[idx].mean(axis=1)
        return [round(float(np.percentile(means, q)), 4) for q in (2.5, 97.5)]

    return {
        "accuracy": {name: interval(v) for name, v in values.items()},
        "difference": {f"{a} - {b}": interval(values[a] - values[b]) for a, b in DIFFERENCES},
    }


def within_problem_auroc(problems: Sequence[ProblemCandidates]) -> float | None:
    """Mean AUROC of the scores inside each problem that has right and wrong candidates."""
    values = []
    for p in problems:
        labels = [is_correct(c.answer, p.gold) for c in p.candidates]
        area = auroc([c.score or 0.0 for c in p.candidates], labels)
        if area is not None:
            values.append(area)
    return float(np.mean(values)) if values else None


def _scored_file(path: Path) -> list[ProblemCandidates]:
    """Candidates of a `verisolve score` output, grouped by problem."""
    grouped: dict[str, list[EvalCandidate]] = defaultdict(list)
    gold: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        grouped[row["problem"]].append(
            EvalCandidate(row["sample_index"], row["answer"], row["score"])
        )
        gold[row["problem"]] = row["gold"]
    return [ProblemCandidates(p, gold[p], tuple(c)) for p, c in grouped.items()]


def scaling(
    run: Run, test: Sequence[ProblemCandidates], train_problems: int
) -> list[dict[str, Any]]:
    """Verifier top-1 and majority vote on the test set against the verifier's training problems."""
    from verisolve.repro.mini import VERIFIER

    k = run.sizes.vote_k
    points = []
    for share in sorted(run.sizes.scaling):
        if share >= 1.0:
            problems = list(test)
        else:
            path = run.file(f"test-scored-{VERIFIER}-{round(share * 100)}.jsonl")
            problems = _scored_file(path)
        values = per_problem(problems, k)
        points.append(
            {
                "train_problems": max(2, round(train_problems * share)),
                "verifier": round(float(values["verifier"].mean()), 4),
                "topk-vote": round(float(values["topk-vote"].mean()), 4),
                "majority": round(float(values["majority"].mean()), 4),
                "within_problem_auroc": within_problem_auroc(problems),
            }
        )
    return points


def analyse(run: Run, test_job: int, train_job: int) -> dict[str, Any]:
    """The whole result of the run, as JSON-ready data; also writes the plot."""
    from verisolve.repro.mini import _database

    engine = _database(run)
    with Session(engine) as session:
        test = job_candidates(session, test_job)
        train_problems = len(job_candidates(session, train_job))
    k = run.sizes.vote_k
    values = per_problem(test, k)
    curves = accuracy_curves(test, list(STRATEGIES), k=k, seed=run.seed)
    result: dict[str, Any] = {
        "test_problems": len(test),
        "n_samples": max(len(p.candidates) for p in test),
        "vote_k": k,
        "accuracy": {name: round(float(v.mean()), 4) for name, v in values.items()},
        "ci95": bootstrap(values, run.seed),
        "test_at_1": single_sample_accuracy(test),
        "coverage": coverage(test),
        "verifier_auroc_within_problems": within_problem_auroc(test),
        "curves": {s.value: {str(n): round(a, 4) for n, a in c.items()} for s, c in curves.items()},
        "scaling": scaling(run, test, train_problems),
    }
    plot(result, run.file("result.png"))
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy against N per strategy (the paper's figure 5), and against verifier data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"verifier": "verifier top-1", "topk-vote": f"top-{result['vote_k']} vote",
              "majority": "majority vote", "first": "single sample"}  # fmt: skip
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in result["curves"].items():
        ns = sorted(int(n) for n in curve)
        left.plot(ns, [100 * curve[str(n)] for n in ns], marker="o", label=labels[name])
    left.set_xscale("log", base=2)
    left.set_xlabel("samples per problem (N)")
    left.set_ylabel("test accuracy (%)")
    left.set_title(f"{result['test_problems']} synthetic test problems")
    left.legend()
    points = result["scaling"]
    xs = [p["train_problems"] for p in points]
    for key in ("verifier", "majority"):
        right.plot(xs, [100 * p[key] for p in points], marker="o", label=labels[key])
    right.set_xscale("log")
    right.set_xticks(xs, [str(x) for x in xs])  # the sizes themselves, not crowded log ticks
    right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    right.set_xlabel("training problems the verifier learned from")
    right.set_title(f"at N = {result['n_samples']}")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
