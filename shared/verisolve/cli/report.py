"""`verisolve report` and `verisolve rescore`: a job's metrics, and a job scored again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from sqlalchemy.orm import Session

from verisolve.cli.database import job_or_exit, require_schema
from verisolve.cli.line_errors import fail
from verisolve.cli.remote import ApiOption, report_remote
from verisolve.cli.reporting import console, show_report
from verisolve.db import get_engine, session_scope
from verisolve.evaluation import ProblemCandidates, evaluate
from verisolve.modelstore.registry import ModelNotFoundError
from verisolve.pipeline.jobs import JobError
from verisolve.pipeline.pooling import PoolingError, first_samples, pooled_candidates
from verisolve.pipeline.rescore import finish_rescore, problems_to_rescore, rescore_problem
from verisolve.pipeline.stages import job_candidates
from verisolve.tables import Job

JobArg = Annotated[int, typer.Argument(help="The job's id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write a PNG of accuracy against k.")]
SamplesOpt = Annotated[
    int | None,
    typer.Option(
        "--samples",
        "-n",
        min=1,
        help="Only each problem's first N candidates (by sample index): the job as -n N runs it.",
    ),
]
VoteKOpt = Annotated[
    int | None,
    typer.Option("--vote-k", min=1, help="k of topk-vote and of the curves \\[default: the job's]"),
]
WithOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--with",
        help="Pool another job's candidates of the same problems (the same models and sampling, "
        "another seed; repeatable); its sample indices follow the earlier jobs'.",
    ),
]


def report(
    job_id: JobArg,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
    samples: SamplesOpt = None,
    vote_k: VoteKOpt = None,
    pool: WithOpt = None,
    api: ApiOption = None,
) -> None:
    """Accuracy per strategy, coverage, pass@k and curves of a job (database or --api)."""
    if api:
        if samples is not None or vote_k is not None or pool:
            fail("--samples, --vote-k and --with read the database's candidates: not with --api")
            raise typer.Exit(1)
        show_report(report_remote(api, job_id), as_json=as_json, plot=plot)
        return
    engine = get_engine()
    require_schema(engine)
    with session_scope(engine) as session:
        jobs = [job_or_exit(session, i) for i in (job_id, *(pool or ()))]
        job = jobs[0]
        try:
            problems = candidates_to_report(session, jobs, samples)
        except PoolingError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None
        result = evaluate(problems, k=vote_k or job.vote_k, seed=job.seed)
        if vote_k is not None and all(j.verifier is None for j in jobs):
            fail(f"--vote-k {vote_k}: job {job.id} has no verifier, so no top-k vote to report")
        if not as_json:
            console.print(
                f"job {job.id}: {job.status}, {job.n_done}/{job.n_problems} problems done"
            )
            if len(jobs) > 1:
                console.print(
                    f"pooled with job{'s' if len(jobs) > 2 else ''} "
                    f"{', '.join(str(j.id) for j in jobs[1:])}: the {len(problems)} problems "
                    f"all of them hold, up to {sum(j.n_samples for j in jobs)} candidates each"
                )
        provenance = {"jobs": [j.id for j in jobs], "samples": samples, "problems": len(problems)}
    chosen = len(jobs) > 1 or samples is not None
    show_report(result, as_json=as_json, plot=plot, provenance=provenance if chosen else None)


def candidates_to_report(
    session: Session, jobs: Sequence[Job], samples: int | None
) -> list[ProblemCandidates]:
    """The first job's candidates, pooled with the others', cut to the first `samples`."""
    problems = (
        pooled_candidates(session, jobs) if len(jobs) > 1 else job_candidates(session, jobs[0].id)
    )
    if samples is None:
        return problems
    total = sum(j.n_samples for j in jobs)
    if samples > total:
        held = ", ".join(f"job {j.id}: {j.n_samples}" for j in jobs)
        raise PoolingError(f"--samples {samples}: there are {total} per problem ({held})")
    return first_samples(problems, samples)


def rescore(
    job_id: JobArg,
    verifier: Annotated[str, typer.Option("--verifier", help="A registered verifier's name.")],
    as_json: JsonOpt = False,
) -> None:
    """Score a job's candidates with another verifier and compute its selections again."""
    from verisolve.executors.loading import load_scorer

    engine = get_engine()
    require_schema(engine)
    with session_scope(engine) as session:
        job = job_or_exit(session, job_id)
        try:
            problem_ids = problems_to_rescore(session, job)
        except JobError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None
        vote_k = job.vote_k
    try:
        scorer = load_scorer(verifier)
    except ModelNotFoundError as exc:
        fail(f"--verifier: {exc}")
        raise typer.Exit(1) from None
    with Progress(console=console, disable=as_json) as progress:
        task = progress.add_task("rescoring", total=len(problem_ids))
        for problem_id in problem_ids:
            with session_scope(engine) as session:
                rescore_problem(session, problem_id, scorer, verifier, vote_k)
            progress.advance(task)
    with session_scope(engine) as session:
        result = finish_rescore(session, session.get_one(Job, job_id), verifier)
    show_report(result, as_json=as_json)
