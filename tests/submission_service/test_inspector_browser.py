"""The inspector in headless Chromium: sign-in, the job list, a problem's ranked and shaded
candidates, another tenant's job as a 404, and no console errors; a screenshot of each page."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
import uvicorn
from inspector_jobs import new_job, register_token_verifier, run_job

from services.submission.api import create_app
from verisolve.db import session_scope
from verisolve.tables import Problem

if TYPE_CHECKING:
    from conftest import Tenant, Tenants

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def base_url(engine: sa.Engine) -> Iterator[str]:
    """The service with its inspector, served by uvicorn on a thread."""
    port = _free_port()
    config = uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium driven by Debian's chromedriver (chromium-driver)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        message = "Chromium and chromedriver are needed: apt-get install chromium chromium-driver"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


def sign_in(browser: WebDriver, base_url: str, tenant: Tenant) -> None:
    browser.get(f"{base_url}/ui/jobs")
    assert "/ui/login" in browser.current_url
    browser.find_element(By.ID, "api_key").send_keys(tenant.token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # The click returns before the next page may have loaded: wait for it.
    WebDriverWait(browser, 30).until(
        lambda b: (
            b.current_url.endswith("/ui/jobs")
            and text_of(b, "h1") == "Jobs"
            and b.execute_script("return document.readyState") == "complete"
        )
    )


def text_of(browser: WebDriver, selector: str) -> str | None:
    """The text of the first element `selector` matches (None if none), read in one script.

    For waits across a navigation or a live update: an element found by one command may be gone by
    the next, and Chrome then says "Node with given id does not belong to the document", an error
    selenium cannot tell from any other (not a stale-element one); a single script cannot split.
    """
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;"
    text = browser.execute_script(script, selector)
    return None if text is None else str(text).strip()


def console_errors(browser: WebDriver) -> list[str]:
    entries = browser.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE"]


def shot(browser: WebDriver, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"{name}: the screenshot looks empty"


@pytest.fixture
def job_of_alice(engine: sa.Engine, tenants: Tenants, tmp_path: Path) -> tuple[Tenant, int]:
    alice = tenants.new()
    folder = tmp_path / "verifier"
    return alice, run_job(engine, alice.name, register_token_verifier(engine, folder), folder)


def test_pages_of_a_finished_job(
    browser: WebDriver,
    base_url: str,
    engine: sa.Engine,
    job_of_alice: tuple[Tenant, int],
    tmp_path: Path,
) -> None:
    alice, job_id = job_of_alice
    sign_in(browser, base_url, alice)
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.job")
    assert [r.get_attribute("data-job") for r in rows] == [str(job_id)]
    assert "topk-vote" in rows[0].text
    assert "3/3" in rows[0].text
    shot(browser, tmp_path, "jobs")

    browser.get(f"{base_url}/ui/jobs/{job_id}")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-poll") is None
    problems = browser.find_elements(By.CSS_SELECTOR, "tr.problem")
    assert len(problems) == 3
    shot(browser, tmp_path, "job")

    with session_scope(engine) as session:
        problem_id = session.scalar(
            sa.select(Problem.id).where(Problem.job_id == job_id, Problem.external_id == "kites")
        )
    browser.get(f"{base_url}/ui/jobs/{job_id}/problems/{problem_id}")
    cards = browser.find_elements(By.CSS_SELECTOR, "li.candidate")
    scores = [float(c.get_attribute("data-score")) for c in cards]
    assert len(scores) == 5
    assert scores == sorted(scores, reverse=True)
    tokens = cards[0].find_elements(By.CSS_SELECTOR, "pre.text span.tok")
    assert len(tokens) > 5
    assert all(0.0 <= float(t.get_attribute("title")) <= 1.0 for t in tokens)
    assert browser.find_elements(By.CSS_SELECTOR, "mark.calc-fail")
    shot(browser, tmp_path, "problem")
    assert console_errors(browser) == []


def test_another_tenants_job_is_not_found(
    browser: WebDriver,
    base_url: str,
    tenants: Tenants,
    job_of_alice: tuple[Tenant, int],
    tmp_path: Path,
) -> None:
    _, job_id = job_of_alice
    bob = tenants.new()
    sign_in(browser, base_url, bob)
    assert browser.find_elements(By.CSS_SELECTOR, "tr.job") == []
    browser.get(f"{base_url}/ui/jobs/{job_id}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    shot(browser, tmp_path, "not-found")
    # The 404 itself is the one error the console may show.
    assert all("404" in message for message in console_errors(browser))


def test_a_running_jobs_progress_updates_without_a_reload(
    browser: WebDriver, base_url: str, engine: sa.Engine, tenants: Tenants, tmp_path: Path
) -> None:
    owner = tenants.new()
    folder = tmp_path / "verifier"
    executor, job_id = new_job(engine, owner.name, register_token_verifier(engine, folder), folder)
    first, *_ = executor.remaining(job_id)  # starts the job
    sign_in(browser, base_url, owner)
    # The job list polls too while one of its jobs runs.
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-poll")
    browser.get(f"{base_url}/ui/jobs/{job_id}")
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-poll")
    progress = '[data-live^="progress-"] .count'
    assert text_of(browser, progress) == "0/3"
    table = text_of(browser, "table.problems")
    assert table is not None
    assert "✓" not in table
    executor.run_problem(first)
    # The page polls every few seconds; allow several periods on a loaded machine. The script
    # replaces parts while they are read: read them in one script call each.
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: text_of(b, progress) == "1/3")
    # The problems table came along: the answered problem shows its (right) answers.
    wait.until(lambda b: "5 ✓" in (text_of(b, "table.problems") or ""))
    assert console_errors(browser) == []
