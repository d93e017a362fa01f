"""The breaker's log lines hold for both of its users: LM calls wait, tool calls are refused."""

from __future__ import annotations

import logging

import pytest

from dspex.lm.breaker import CircuitBreaker


def test_opening_and_closing_are_logged_without_claiming_calls_wait(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker("tool lookup-api", failure_threshold=2, open_s=0.01, max_open_s=0.01)
    with caplog.at_level(logging.WARNING, logger="dspex.lm.breaker"):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success(probe=True)
    opened, closed = (record.getMessage() for record in caplog.records)
    assert opened.startswith("circuit breaker of tool lookup-api open (2 consecutive failures)")
    assert "no call goes through" in opened and "wait" not in opened and "fail" not in opened.split(")")[1]
    assert closed == "circuit breaker of tool lookup-api closed: the endpoint answers again"
