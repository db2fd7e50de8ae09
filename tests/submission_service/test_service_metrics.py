"""The service's /metrics: requests by route template, their latency, and upload sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.testclient import TestClient

from verisolve import metrics

if TYPE_CHECKING:
    from conftest import Tenant

PROBLEMS = b'{"question": "Tom has 2 kites and makes 3 more. How many kites?", "answer": 5}\n' * 3


def sample(name: str, **labels: str) -> float:
    return metrics.API_REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_by_route_template(client: TestClient, alice: Tenant) -> None:
    job_id = client.post("/v1/jobs", json={}, headers=alice.headers).json()["id"]
    route = "/v1/jobs/{job_id}"
    before = sample("verisolve_api_requests_total", method="GET", route=route, status="200")
    timed = sample("verisolve_api_request_duration_seconds_count", method="GET", route=route)
    assert client.get(f"/v1/jobs/{job_id}", headers=alice.headers).status_code == 200
    after = sample("verisolve_api_requests_total", method="GET", route=route, status="200")
    assert after == before + 1
    assert sample("verisolve_api_request_duration_seconds_count", method="GET", route=route) == (
        timed + 1
    )
    text = client.get("/metrics").text
    assert 'route="/v1/jobs/{job_id}"' in text
    assert f'route="/v1/jobs/{job_id}"' not in text


def test_upload_sizes_and_unmatched_paths(client: TestClient, alice: Tenant) -> None:
    job_id = client.post("/v1/jobs", json={}, headers=alice.headers).json()["id"]
    route = "/v1/jobs/{job_id}/problems"
    count = sample("verisolve_api_upload_bytes_count", route=route)
    total = sample("verisolve_api_upload_bytes_sum", route=route)
    response = client.post(f"/v1/jobs/{job_id}/problems", content=PROBLEMS, headers=alice.headers)
    assert response.status_code < 300, response.text
    assert sample("verisolve_api_upload_bytes_count", route=route) == count + 1
    assert sample("verisolve_api_upload_bytes_sum", route=route) == total + len(PROBLEMS)
    unmatched = sample(
        "verisolve_api_requests_total", method="GET", route="unmatched", status="404"
    )
    assert client.get("/no/such/path/42").status_code == 404
    assert sample(
        "verisolve_api_requests_total", method="GET", route="unmatched", status="404"
    ) == (unmatched + 1)
