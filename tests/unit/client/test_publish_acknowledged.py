"""The publisher waits for every acknowledgement and raises the first failure; none is left unretrieved."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from dspex.client._publish import _acknowledged
from dspex.errors import KafkaError


async def _settle_later(future: asyncio.Future[Any], outcome: object, delay: float) -> None:
    await asyncio.sleep(delay)
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def test_returns_once_every_acknowledgement_arrived() -> None:
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        pending = [loop.create_future() for _ in range(5)]
        settlers = [asyncio.create_task(_settle_later(f, i, 0.001 * (5 - i))) for i, f in enumerate(pending)]
        await _acknowledged(pending)
        await asyncio.gather(*settlers)
        return [f.done() for f in pending]

    assert asyncio.run(scenario()) == [True] * 5


def test_the_first_failure_is_raised_and_later_ones_are_retrieved(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pending = [loop.create_future() for _ in range(4)]
        pending[0].set_result(None)
        pending[1].set_exception(KafkaError("delivery to tasks failed: first"))
        late = asyncio.create_task(_settle_later(pending[3], KafkaError("delivery failed: later"), 0.01))
        with pytest.raises(KafkaError, match="first"):
            await _acknowledged(pending)
        pending[2].set_exception(KafkaError("delivery failed: after the raise"))
        await late
        await asyncio.sleep(0)  # the done callbacks run

    asyncio.run(scenario())
    gc.collect()  # an unretrieved failure would log "exception was never retrieved" when collected
    assert "never retrieved" not in caplog.text
