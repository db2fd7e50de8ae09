"""A client of the submission service (httpx): jobs, chunked uploads, result downloads.

Every request is safe to repeat: uploads are keyed by problem id, job creation by an idempotency
key, and start and cancel change nothing the second time. So a request that fails on the
network, or with a 5xx, 429 or 503, is retried with exponential backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from verisolve.jsonl import LineError, OverlongLine, numbered_lines
from verisolve.settings import get_settings

NDJSON = "application/x-ndjson"
CHUNK_LINES = 5000
CHUNK_BYTES = 4 * 1024 * 1024  # well under the service's default body limit (16 MiB)
_RETRY_STATUS = frozenset({429, 502, 503, 504})

Stream = Literal["answers", "candidates"]


class ApiError(Exception):
    """The service refused a request: its status, summary and the lines at fault (if any)."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        errors: list[LineError] | None = None,
        n_errors: int = 0,
    ) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.errors = errors or []
        self.n_errors = max(n_errors, len(self.errors))


@dataclass(frozen=True)
class Chunk:
    """Consecutive lines of a file: `offset` lines come before them.

    A line over the byte limit is refused here, never read whole: it travels as a blank line
    (so the lines after it keep their numbers) and its error is in `errors`.
    """

    offset: int
    n_lines: int
    body: bytes
    errors: tuple[LineError, ...] = ()


@dataclass
class UploadSummary:
    """A whole file's upload: counts, and every rejected line (nothing of their chunks stored)."""

    lines: int = 0
    received: int = 0
    stored: int = 0
    skipped: int = 0
    errors: list[LineError] = field(default_factory=list)
    n_errors: int = 0


def chunks(
    path: Path,
    max_lines: int = CHUNK_LINES,
    max_bytes: int = CHUNK_BYTES,
    max_line_bytes: int | None = None,
) -> Iterator[Chunk]:
    """A file's lines in chunks of at most max_lines lines and max_bytes (a longer line alone)."""
    limit = get_settings().max_line_bytes if max_line_bytes is None else max_line_bytes
    offset, size = 0, 0
    lines: list[bytes] = []
    errors: list[LineError] = []
    for line_no, raw in numbered_lines(path, limit):
        line = raw if isinstance(raw, bytes) else b"\n"
        if lines and (len(lines) >= max_lines or size + len(line) > max_bytes):
            yield Chunk(offset, len(lines), b"".join(lines), tuple(errors))
            offset, lines, size, errors = offset + len(lines), [], 0, []
        if isinstance(raw, OverlongLine):
            errors.append(
                LineError(line_no, f"line is {raw.size:,} bytes, over the limit of {limit:,}")
            )
        lines.append(line)
        size += len(line)
    if lines:
        yield Chunk(offset, len(lines), b"".join(lines), tuple(errors))


class Client:
    """The submission API at `base_url`, with one tenant's API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 300.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
            timeout=timeout,
        )
        self._retries = retries
        self._backoff_s = backoff_s
        self._sleep = sleep or time.sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def create_job(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """A new pending job (or, for an idempotency key used before, the job made with it)."""
        return self._json("POST", "/v1/jobs", json=parameters)

    def job(self, job_id: int) -> dict[str, Any]:
        """A job with its progress and metrics."""
        return self._json("GET", f"/v1/jobs/{job_id}")

    def jobs(self, limit: int = 100, before: int | None = None) -> dict[str, Any]:
        """A page of the tenant's jobs, newest first."""
        params: dict[str, int] = {"limit": limit} | ({"before": before} if before else {})
        return self._json("GET", "/v1/jobs", params=params)

    def start_job(self, job_id: int) -> dict[str, Any]:
        """Start a job (again is harmless)."""
        return self._json("POST", f"/v1/jobs/{job_id}/start")

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        """Cancel a job that has not finished."""
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def upload_chunk(self, job_id: int, chunk: Chunk, *, dry_run: bool = False) -> dict[str, Any]:
        """Send one chunk; ApiError (with its line errors) when the service rejects it."""
        params: dict[str, Any] = {"line_offset": chunk.offset, "dry_run": dry_run}
        headers = {"Content-Type": NDJSON}
        return self._json(
            "POST",
            f"/v1/jobs/{job_id}/problems",
            params=params,
            content=chunk.body,
            headers=headers,
        )

    def upload(
        self,
        job_id: int,
        path: Path,
        *,
        chunk_lines: int | None = None,
        chunk_bytes: int | None = None,
        on_chunk: Callable[[Chunk], None] | None = None,
    ) -> UploadSummary:
        """Upload a file chunk by chunk; after a rejected chunk the rest are only validated."""
        summary = UploadSummary()
        sizes = (chunk_lines or CHUNK_LINES, chunk_bytes or CHUNK_BYTES)
        for chunk in chunks(path, *sizes):
            summary.errors.extend(chunk.errors)
            summary.n_errors += len(chunk.errors)
            try:
                result = self.upload_chunk(job_id, chunk, dry_run=summary.n_errors > 0)
            except ApiError as exc:
                if not exc.errors:
                    raise
                summary.errors.extend(exc.errors)
                summary.n_errors += exc.n_errors
            else:
                summary.received += result["received"]
                summary.stored += result["stored"]
                summary.skipped += result["skipped"]
            summary.lines += chunk.n_lines
            if on_chunk is not None:
                on_chunk(chunk)
        return summary

    def download(self, job_id: int, what: Stream, out: Path) -> int:
        """Write a job's answers or candidates (NDJSON) to `out`; returns how many lines."""
        partial = out.with_name(out.name + ".partial")
        try:
            for attempt in range(self._retries + 1):
                try:
                    lines = self._download_once(job_id, what, partial)
                except httpx.TransportError:
                    if attempt == self._retries:
                        raise
                    self._sleep(self._backoff_s * 2**attempt)
                    continue
                partial.replace(out)
                return lines
        finally:
            partial.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def _download_once(self, job_id: int, what: Stream, partial: Path) -> int:
        lines = 0
        with self._http.stream("GET", f"/v1/jobs/{job_id}/{what}") as response:
            if response.status_code != 200:
                response.read()
                raise _api_error(response)
            with partial.open("wb") as f:
                for data in response.iter_bytes():
                    f.write(data)
                    lines += data.count(b"\n")
        return lines

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, url, **kwargs)
        if response.status_code >= 400:
            raise _api_error(response)
        body: dict[str, Any] = response.json()
        return body

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried with backoff on network errors and on 429/502/503/504."""
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError:
                if last:
                    raise
            else:
                if response.status_code not in _RETRY_STATUS or last:
                    return response
            self._sleep(self._backoff_s * 2**attempt)
        raise AssertionError("unreachable")


def _api_error(response: httpx.Response) -> ApiError:
    """The service's error body as an ApiError (any body it cannot read: its text)."""
    try:
        body = response.json()
        detail = str(body["detail"])
        errors = [
            LineError(e["line"] or 0, e["reason"], e.get("field"))
            for e in body.get("errors", [])
            if e.get("line") is not None
        ]
        return ApiError(response.status_code, detail, errors, int(body.get("n_errors", 0)))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, response.text[:500] or response.reason_phrase)
