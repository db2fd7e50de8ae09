"""The API client: chunking, retries with backoff, line errors gathered over a whole file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from verisolve.client import ApiError, Client, chunks

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, sleeps: list[float] | None = None, retries: int = 3) -> Client:
    record = sleeps if sleeps is not None else []
    return Client(
        "http://api.test/",
        "vs_key",
        transport=httpx.MockTransport(handler),
        retries=retries,
        backoff_s=0.5,
        sleep=record.append,
    )


def job(job_id: int = 7) -> dict[str, object]:
    return {"id": job_id, "status": "pending"}


def write_lines(path: Path, n: int) -> Path:
    path.write_text("".join(f'{{"question": "Q{i}"}}\n' for i in range(n)), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("n_lines", "max_lines", "max_bytes", "expected"),
    [
        (5, 2, 10_000, [(0, 2), (2, 2), (4, 1)]),
        (5, 100, 40, [(0, 2), (2, 2), (4, 1)]),  # each line is 18 bytes
        (3, 100, 5, [(0, 1), (1, 1), (2, 1)]),  # a line over the limit goes alone
        (0, 10, 100, []),
    ],
)
def test_chunks_split_by_lines_and_bytes(
    tmp_path: Path, n_lines: int, max_lines: int, max_bytes: int, expected: list[tuple[int, int]]
) -> None:
    path = write_lines(tmp_path / "p.jsonl", n_lines)
    parts = list(chunks(path, max_lines, max_bytes))
    assert [(c.offset, c.n_lines) for c in parts] == expected
    assert b"".join(c.body for c in parts) == path.read_bytes()


def test_a_line_over_the_limit_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    import tracemalloc

    path = write_lines(tmp_path / "p.jsonl", 1)
    with path.open("ab") as f:
        f.write(b'{"question": "' + b"x" * 20_000_000 + b'"}\n{"question": "last"}\n')
    tracemalloc.start()
    try:
        parts = list(chunks(path, 100, 10_000, max_line_bytes=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert [str(e) for c in parts for e in c.errors] == [
        "line 2: line is 20,000,017 bytes, over the limit of 1,000"
    ]
    assert b"".join(c.body for c in parts).split(b"\n")[1:3] == [b"", b'{"question": "last"}']


def test_requests_send_the_key_and_retry_server_errors_with_backoff() -> None:
    answers = iter([503, 502, 201])
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(next(answers), json=job())

    sleeps: list[float] = []
    assert client(handler, sleeps).create_job({})["id"] == 7
    assert seen == ["Bearer vs_key"] * 3
    assert sleeps == [0.5, 1.0]


def test_network_errors_are_retried_then_raised() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    sleeps: list[float] = []
    with pytest.raises(httpx.ConnectError):
        client(handler, sleeps, retries=2).job(1)
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("status", [401, 404, 409, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json={"detail": "no", "errors": [], "n_errors": 0})

    with pytest.raises(ApiError) as raised:
        client(handler).job(1)
    assert (raised.value.status_code, raised.value.detail, len(calls)) == (status, "no", 1)


def test_a_body_that_is_not_the_services_still_gives_an_error() -> None:
    with pytest.raises(ApiError, match="HTTP 502: bad gateway"):
        client(lambda _: httpx.Response(502, text="bad gateway"), retries=0).job(1)


def test_upload_gathers_every_bad_line_and_only_validates_after_a_rejection(
    tmp_path: Path,
) -> None:
    path = write_lines(tmp_path / "p.jsonl", 6)
    requests: list[tuple[int, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["line_offset"])
        requests.append((offset, request.url.params["dry_run"]))
        assert request.headers["content-type"] == "application/x-ndjson"
        if offset in (2, 4):
            error = {"line": offset + 1, "field": "question", "reason": "bad"}
            body = {"detail": "1 bad line(s)", "errors": [error], "n_errors": 1}
            return httpx.Response(422, json=body)
        counts = {"received": 2, "stored": 2, "skipped": 0, "n_problems": 2, "dry_run": False}
        return httpx.Response(200, json=counts)

    summary = client(handler).upload(7, path, chunk_lines=2)
    assert requests == [(0, "false"), (2, "false"), (4, "true")]
    assert [(e.line_no, e.field) for e in summary.errors] == [(3, "question"), (5, "question")]
    assert (summary.n_errors, summary.stored, summary.lines) == (2, 2, 6)


def test_upload_stops_on_an_error_that_is_not_about_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", 3)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"detail": "job 7 is running", "errors": []})

    with pytest.raises(ApiError, match="job 7 is running"):
        client(handler).upload(7, path)


def test_download_writes_the_stream_and_leaves_no_partial_file(tmp_path: Path) -> None:
    rows = b"".join(json.dumps({"id": str(i)}).encode() + b"\n" for i in range(3))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/7/answers"):
            return httpx.Response(200, content=rows)
        return httpx.Response(404, json={"detail": "no job 8", "errors": [], "n_errors": 0})

    out = tmp_path / "answers.jsonl"
    assert client(handler).download(7, "answers", out) == 3
    assert out.read_bytes() == rows
    with pytest.raises(ApiError, match="no job 8"):
        client(handler).download(8, "answers", tmp_path / "other.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]
