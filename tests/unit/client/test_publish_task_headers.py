"""The task headers the publisher builds once per candidate equal what headers_for gives each task."""

from __future__ import annotations

import pytest

from dspex.client._publish import task_headers
from dspex.schemas import Task
from dspex.schemas.headers import TRACEPARENT, headers_for


def _task(**fields: object) -> Task:
    return Task.build(
        job_id="job-1", candidate_id="cand-1", example_index=7, example={"q": "x"}, input_keys=["q"], **fields
    )


@pytest.mark.parametrize("fields", [{}, {"priority": "bulk", "max_in_flight": 3}, {"max_in_flight": 1}])
@pytest.mark.parametrize("traceparent", [None, b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
def test_task_headers_equal_headers_for(fields: dict[str, object], traceparent: bytes | None) -> None:
    task = _task(**fields)
    token = TRACEPARENT.set(traceparent)
    try:
        expected = headers_for(task)
    finally:
        TRACEPARENT.reset(token)
    assert task_headers(task, traceparent) == expected
    assert ("dspex-example-index", b"7") in expected
