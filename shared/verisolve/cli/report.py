"""`verisolve report` and `verisolve rescore`: a job's metrics, and a job scored again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from verisolve.cli.database import job_or_exit, require_schema
from verisolve.cli.line_errors import fail
from verisolve.cli.remote import ApiOption, report_remote
from verisolve.cli.reporting import console, show_report
from verisolve.db import get_engine, session_scope
from verisolve.evaluation import evaluate
from verisolve.modelstore.registry import ModelNotFoundError
from verisolve.pipeline.jobs import JobError
from verisolve.pipeline.rescore import finish_rescore, problems_to_rescore, rescore_problem
from verisolve.pipeline.stages import job_candidates
from verisolve.tables import Job

JobArg = Annotated[int, typer.Argument(help="The job's id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write a PNG of accuracy against k.")]


def report(
    job_id: JobArg, as_json: JsonOpt = False, plot: PlotOpt = None, api: ApiOption = None
) -> None:
    """Accuracy per strategy, coverage, pass@k and curves of a job (database or --api)."""
    if api:
        show_report(report_remote(api, job_id), as_json=as_json, plot=plot)
        return
    engine = get_engine()
    require_schema(engine)
    with session_scope(engine) as session:
        job = job_or_exit(session, job_id)
        result = evaluate(job_candidates(session, job.id), k=job.vote_k, seed=job.seed)
        if not as_json:
            console.print(
                f"job {job.id}: {job.status}, {job.n_done}/{job.n_problems} problems done"
            )
    show_report(result, as_json=as_json, plot=plot)


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
