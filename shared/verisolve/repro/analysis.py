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
    strategy_hits,
)
from verisolve.pipeline.stages import job_candidates
from verisolve.selection import Strategy
from verisolve.tables import Candidate, Problem

if TYPE_CHECKING:
    from verisolve.repro.mini import Run

STRATEGIES = (Strategy.VERIFIER, Strategy.TOPK_VOTE, Strategy.MAJORITY, Strategy.FIRST)
SINGLE = "single-sample"
BOOTSTRAP_DRAWS = 2000
# The top-k vote's k for the sweep in result.json (the paper votes among the top 3 to 5 at N = 100).
VOTE_KS = (1, 2, 3, 4, 5, 7, 10)
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


def correct(strategy: Strategy, problems: Sequence[ProblemCandidates], k: int) -> np.ndarray:
    """1 where the strategy picks the gold answer of a problem, else 0."""
    return np.array(strategy_hits(problems, strategy, k=k), dtype=np.float64)


def per_problem(problems: Sequence[ProblemCandidates], k: int) -> dict[str, np.ndarray]:
    """Each strategy's 0/1 correctness per problem, and the single-sample accuracy per problem."""
    out = {strategy.value: correct(strategy, problems, k) for strategy in STRATEGIES}
    out[SINGLE] = np.array(
        [
            np.mean([is_correct(c.answer, p.gold) for c in p.candidates]) if p.candidates else 0.0
            for p in problems
        ]
    )
    return out


def interval95(v: np.ndarray, seed: int) -> list[float]:
    """The 95% percentile bootstrap interval of the mean of per-problem values. The resampled
    problems depend only on the seed and their number, so intervals of the same problems are
    paired."""
    idx = np.random.default_rng(seed).integers(0, len(v), size=(BOOTSTRAP_DRAWS, len(v)))
    means = v[idx].mean(axis=1)
    return [round(float(np.percentile(means, q)), 4) for q in (2.5, 97.5)]


def bootstrap(values: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """95% percentile intervals over problems for each accuracy and the paired differences."""
    return {
        "accuracy": {name: interval95(v, seed) for name, v in values.items()},
        "difference": {
            f"{a} - {b}": interval95(values[a] - values[b], seed) for a, b in DIFFERENCES
        },
    }


def vote_k_sweep(
    problems: Sequence[ProblemCandidates], ks: Sequence[int], seed: int
) -> dict[str, dict[str, Any]]:
    """The top-k vote's accuracy for each k, with the 95% interval of its difference from verifier
    top-1 paired over problems (the paper's figure 7: voting among the best-ranked helps when
    the verifier is fooled by a few high-scoring wrong candidates), and how many problems the
    vote gets right that top-1 gets wrong (`gained`) and the reverse (`lost`)."""
    top1 = correct(Strategy.VERIFIER, problems, 1)
    sweep = {}
    for k in ks:
        votes = correct(Strategy.TOPK_VOTE, problems, k)
        sweep[str(k)] = {
            "accuracy": round(float(votes.mean()), 4),
            "minus_top1_ci95": interval95(votes - top1, seed),
            "gained": int(((votes == 1) & (top1 == 0)).sum()),
            "lost": int(((votes == 0) & (top1 == 1)).sum()),
        }
    return sweep


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
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Verifier top-1 and majority vote on the test set against the verifier's training problems,
    each with its 95% interval; and the gain from the fewest training problems to the most."""
    from verisolve.repro.mini import VERIFIER

    k = run.sizes.vote_k
    points = []
    scored = []
    for share in sorted(run.sizes.scaling):
        if share >= 1.0:
            problems = list(test)
        else:
            path = run.file(f"test-scored-{VERIFIER}-{round(share * 100)}.jsonl")
            problems = _scored_file(path)
        scored.append(problems)
        values = per_problem(problems, k)
        points.append(
            {
                "train_problems": max(2, round(train_problems * share)),
                "verifier": round(float(values["verifier"].mean()), 4),
                "topk-vote": round(float(values["topk-vote"].mean()), 4),
                "majority": round(float(values["majority"].mean()), 4),
                "ci95": {
                    name: interval95(values[name], run.seed) for name in ("verifier", "majority")
                },
                "within_problem_auroc": within_problem_auroc(problems),
            }
        )
    gain = scaling_gain(scored[0], scored[-1], k, run.seed)
    gain["train_problems"] = [points[0]["train_problems"], points[-1]["train_problems"]]
    return points, gain


def scaling_gain(
    fewest: Sequence[ProblemCandidates], most: Sequence[ProblemCandidates], k: int, seed: int
) -> dict[str, Any]:
    """How much the verifier's gain over majority vote grows from the verifier trained on the
    fewest problems to the one trained on the most, with a 95% interval paired over the test
    problems. Both scored the same candidates, so majority vote is the same for both and the
    growth of the gain is the difference of their top-1 accuracies, problem by problem."""
    order = {p.problem_id: i for i, p in enumerate(most)}
    if len(order) != len(fewest) or any(p.problem_id not in order for p in fewest):
        raise ValueError("the scaling verifiers scored different test problems")
    fewest = sorted(fewest, key=lambda p: order[p.problem_id])
    small, large = per_problem(fewest, k), per_problem(most, k)
    if not np.array_equal(small["majority"], large["majority"]):
        raise ValueError("the scaling verifiers scored different candidates")
    growth = large["verifier"] - small["verifier"]
    return {"verifier - majority": round(float(growth.mean()), 4), "ci95": interval95(growth, seed)}


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
    n_samples = max(len(p.candidates) for p in test)
    result: dict[str, Any] = {
        "test_problems": len(test),
        "n_samples": n_samples,
        "vote_k": k,
        "accuracy": {name: round(float(v.mean()), 4) for name, v in values.items()},
        "ci95": bootstrap(values, run.seed),
        "test_at_1": single_sample_accuracy(test),
        "coverage": coverage(test),
        "verifier_auroc_within_problems": within_problem_auroc(test),
        "topk_vote_by_k": vote_k_sweep(test, [v for v in VOTE_KS if v <= n_samples], run.seed),
        "curves": {s.value: {str(n): round(a, 4) for n, a in c.items()} for s, c in curves.items()},
    }
    result["scaling"], result["scaling_gain"] = scaling(run, test, train_problems)
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
        (line,) = right.plot(xs, [100 * p[key] for p in points], marker="o", label=labels[key])
        lows, highs = zip(*(p["ci95"][key] for p in points), strict=True)
        right.fill_between(xs, [100 * v for v in lows], [100 * v for v in highs],
                           color=line.get_color(), alpha=0.15, linewidth=0)  # fmt: skip
    right.set_xscale("log")
    right.set_xticks(xs, [str(x) for x in xs])  # the sizes themselves, not crowded log ticks
    right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    right.set_xlabel("training problems the verifier learned from")
    right.set_title(f"at N = {result['n_samples']} (shaded: 95% intervals)")
    gain = result["scaling_gain"]
    low, high = gain["ci95"]
    right.annotate(
        f"verifier top-1, {xs[-1]} against {xs[0]} problems (paired): "
        f"{100 * gain['verifier - majority']:+.1f} points ({100 * low:+.1f} to {100 * high:+.1f})",
        xy=(0.02, 0.02), xycoords="axes fraction", fontsize=8,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
    )  # fmt: skip
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
