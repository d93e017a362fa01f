"""Who may read the dashboard: real HTTP requests to a served app with a token, and the binding
rules (loopback by default; anything else needs a token or an explicit opt-out)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from dashboard_fakes import FixedJobs, served

from dspex.errors import ConfigurationError
from dspex.observability.dashboard import create_app, serve_dashboard
from dspex.observability.dashboard.access import COOKIE_NAME, check_binding, is_loopback
from dspex.schemas import JobStatus
from dspex.streams.config import KafkaSettings

TOKEN = "correct-horse-battery-staple"
STATUS = JobStatus(job_id="job-secret-1", name="payroll eval", state="running", total_tasks=4)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with served(create_app(FixedJobs([STATUS]), token=TOKEN)) as base:
        yield base


async def test_no_token_wrong_token_and_the_right_one(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        bare = await client.get("/api/jobs")
        wrong = await client.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}x"})
        page = await client.get("/")
        asset = await client.get("/static/app.js")
        right = await client.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    for refused in (bare, wrong, page, asset):
        assert refused.status_code == 401, refused.request.url
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "payroll" not in refused.text and STATUS.job_id not in refused.text
        assert refused.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert bare.json()["error"].startswith("this dashboard needs its token")
    assert right.status_code == 200
    assert [job["job_id"] for job in right.json()["jobs"]] == [STATUS.job_id]


async def test_a_first_visit_with_the_token_sets_a_cookie_and_drops_the_token_from_the_address(
    url: str,
) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        visit = await client.get("/api/jobs", params={"token": TOKEN, "state": "running"})
        assert visit.status_code == 303
        assert visit.headers["Location"] == "/api/jobs?state=running"
        cookie = visit.cookies[COOKIE_NAME]
        assert TOKEN not in cookie  # a digest of it
        set_cookie = visit.headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        followed = await client.get(visit.headers["Location"])  # the client keeps the cookie
        detail = await client.get(f"/api/jobs/{STATUS.job_id}")
    assert followed.status_code == 200 and followed.json()["jobs"][0]["name"] == "payroll eval"
    assert detail.status_code == 200
    async with httpx.AsyncClient(base_url=url) as other:
        guessed = await other.get("/api/jobs", params={"token": "not-the-token-at-all"})
    async with httpx.AsyncClient(base_url=url, cookies={COOKIE_NAME: TOKEN}) as other:
        forged = await other.get("/api/jobs")  # the token itself is not the cookie's value
    assert guessed.status_code == 401 and forged.status_code == 401


async def test_without_a_token_the_app_answers_everyone() -> None:
    async with served(create_app(FixedJobs([STATUS]))) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await client.get("/api/jobs")
    assert answer.status_code == 200


def test_loopback_needs_no_token_and_any_other_address_does(caplog: pytest.LogCaptureFixture) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host), host
        check_binding(host, None)
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "192.168.0.7"):
        assert not is_loopback(host), host
        with pytest.raises(ConfigurationError, match="needs a token: set DSPEX_DASHBOARD_TOKEN"):
            check_binding(host, None)
    check_binding("0.0.0.0", TOKEN)
    with pytest.raises(ConfigurationError, match="at least 16"):
        check_binding("0.0.0.0", "short")
    with caplog.at_level(logging.WARNING, logger="dspex.observability.dashboard.access"):
        check_binding("0.0.0.0", None, insecure_no_token=True)
    assert "WITHOUT a token" in caplog.text


async def test_serving_refuses_a_wildcard_address_without_a_token() -> None:
    # refused before anything binds or connects: no broker is needed to see it
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="needs a token"):
        await serve_dashboard(settings, prefix="dspex.", host="0.0.0.0", port=9)
