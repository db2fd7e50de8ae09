"""The inspector's pages: sign-in, the job list, a job's problems, a problem's candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.submission.deps import SessionDep
from services.submission.ui import queries
from services.submission.ui.charts import accuracy_chart
from services.submission.ui.rendering import render_text, value_class
from services.submission.ui.session import COOKIE, SESSION_SECONDS, UiTenantDep, sign, ui_config
from services.submission.ui.tokens import Shading, VerifierTokenizer, shade, verifier_tokenizer
from verisolve.answers import is_correct
from verisolve.apikeys import authenticate
from verisolve.tables import Candidate

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals.update(value_class=value_class, urlencode=urlencode)
router = APIRouter(prefix="/ui", include_in_schema=False, default_response_class=HTMLResponse)

PageNo = Annotated[int, Query(ge=1, le=1_000_000)]
Flag = Annotated[bool, Query()]


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("local", ui_config(request).local_tenant is not None)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("")
def home() -> RedirectResponse:
    """The inspector starts at the job list."""
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str = "/ui/jobs") -> Response:
    """The sign-in form: one API key field."""
    return _render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, session: SessionDep) -> Response:
    """Sign in with an API key: a signed session cookie for the key's tenant."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("api_key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/ui/jobs"])[0])
    key = await run_in_threadpool(authenticate, session, token)  # blocking I/O off the loop
    if key is None:
        error = "That API key is not valid (unknown or revoked)."
        return _render(request, "login.html", status_code=401, next=target, error=error)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        sign(ui_config(request), key),
        max_age=SESSION_SECONDS,
        path="/ui",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout() -> RedirectResponse:
    """Forget the browser session."""
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


def _safe_next(target: str) -> str:
    """Only a path inside the inspector: never a redirect to another site."""
    ok = target.startswith("/ui/") and not target.startswith("//") and "\\" not in target
    return target if ok else "/ui/jobs"


@router.get("/jobs")
def jobs(
    request: Request, session: SessionDep, tenant: UiTenantDep, before: int | None = None
) -> Response:
    """The tenant's jobs, newest first, with progress and accuracy per strategy."""
    rows = queries.job_rows(session, tenant, before)
    older = rows[-1].job.id if len(rows) == queries.JOBS_PER_PAGE else None
    return _render(request, "jobs.html", tenant=tenant, rows=rows, older=older)


@router.get("/jobs/{job_id}")
def job(
    request: Request,
    session: SessionDep,
    tenant: UiTenantDep,
    job_id: int,
    page: PageNo = 1,
    wrong: Flag = False,
    disagree: Flag = False,
    unparsed: Flag = False,
    q: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """A job: parameters, accuracy, curves, and a filtered page of its problems."""
    found = queries.owned_job(session, tenant, job_id)
    where = queries.ProblemFilter(wrong, disagree, unparsed, q.strip())
    paging, problems = queries.problem_page(session, found, where, page)
    return _render(
        request,
        "job.html",
        tenant=tenant,
        row=queries.job_row(session, found),
        chart=accuracy_chart(found.metrics),
        problems=problems,
        page=paging,
        where=where,
        strategies=_strategies(found.strategy, problems),
    )


def _strategies(chosen: str, problems: list[queries.ProblemRow]) -> list[str]:
    """The job's strategy first, then the others that answered, in a stable order."""
    seen = {s for p in problems for s in p.selections}
    return [chosen, *sorted(seen - {chosen})]


@router.get("/jobs/{job_id}/problems/{problem_id}")
def problem(
    request: Request,
    session: SessionDep,
    tenant: UiTenantDep,
    job_id: int,
    problem_id: int,
    page: PageNo = 1,
) -> Response:
    """A problem: its answers, the votes, and its candidates ranked by verifier score."""
    found = queries.owned_job(session, tenant, job_id)
    row = queries.problem_row(session, found, problem_id)
    paging, candidates = queries.candidate_page(session, row, page)
    tokenizers: dict[str, VerifierTokenizer | str] = {}
    shown = [(c, _shading(session, row, c, tokenizers)) for c in candidates]
    return _render(
        request,
        "problem.html",
        tenant=tenant,
        job=found,
        row=row,
        page=paging,
        candidates=[
            (c, render_text(c.text, s.spans), s.note, _correct(c.answer, row.problem.gold))
            for c, s in shown
        ],
        strategies=_strategies(found.strategy, [row]),
    )


def _correct(answer: str | None, gold: str | None) -> bool | None:
    return None if gold is None else is_correct(answer, gold)


def _shading(
    session: Session,
    row: queries.ProblemRow,
    candidate: Candidate,
    tokenizers: dict[str, VerifierTokenizer | str],
) -> Shading:
    """The candidate's token shading; each verifier's tokenizer is looked up once a page."""
    if not candidate.token_scores:
        return Shading()
    name = candidate.verifier or row.problem.job.verifier or ""
    if name not in tokenizers:
        tokenizers[name] = verifier_tokenizer(session, name)
    return shade(tokenizers[name], row.problem.question, candidate.text, candidate.token_scores)
