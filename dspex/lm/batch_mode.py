"""Answering a program's LM calls from provider-batch results instead of calling the LM online.

A task of a job in batch mode (``Client.evaluate(..., mode="batch")``) runs its program under
:func:`batch_replay` with the answers gathered so far. Each chat call looks up its request hash (the
LM cache's key: API base and request body) in them: a found answer is returned as the online call's
answer would be, its usage priced at the batch rate; a missing one stops the run with
:class:`ParkRequest`, which the predictor turns into a message for the provider-batch worker (the
task is then committed and held nowhere). Once the provider answered, the task comes back with one
more answer and its program runs again from the start, one LM call layer further each round.

``ParkRequest`` is a BaseException on purpose: programs and adapters catch Exception to fall back
or retry (ChatAdapter's JSON fallback would send a different request), and none of that may run
when the answer simply is not there yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from dspex.errors import LMError, LMServerError
from dspex.lm.cache import cache_key
from dspex.lm.pricing import DEFAULT_PRICES
from dspex.lm.provider_batch import check_batch_provider
from dspex.lm.retry import error_for_status
from dspex.lm.usage import Usage, record_usage

__all__ = ["BatchReplay", "ParkRequest", "ParkedCall", "active_replay", "batch_replay", "request_hash"]


def request_hash(api_base: str, body: Mapping[str, Any]) -> str:
    """The id of one LM request (the response cache's key): what batch answers are filed under."""
    return cache_key(api_base, body)


@dataclass(frozen=True)
class ParkedCall:
    """An LM request a batch-mode run needs answered: where it goes and its body (never a key)."""

    request_hash: str
    api_base: str
    model: str
    api_key_env: str | None
    body: dict[str, Any]


class ParkRequest(BaseException):
    """The run needs an answer the provider has not given yet (see the module docs)."""

    def __init__(self, call: ParkedCall) -> None:
        super().__init__(f"LM request {call.request_hash} parked for a provider batch")
        self.call = call


class BatchReplay:
    """The answers of one task so far (request hash -> stored answer)."""

    def __init__(self, answers: Mapping[str, Mapping[str, Any]]) -> None:
        self.answers = answers
        self.used = 0

    def answer(self, lm: Any, body: dict[str, Any], priced_as: str) -> tuple[dict[str, Any], Usage, float]:
        """The stored answer to ``body`` (data, usage, latency); ParkRequest when there is none."""
        digest = request_hash(lm.api_base, body)
        found = self.answers.get(digest)
        if found is None:
            check_batch_provider(lm.model)  # refused before anything is submitted: fails the job
            raise ParkRequest(ParkedCall(digest, lm.api_base, lm.model, lm.api_key_env, dict(body)))
        self.used += 1
        data = found.get("body")
        if found.get("status") != 200 or not isinstance(data, dict):
            raise _stored_error(lm, found)
        if found.get("cached"):  # answered for another task: the provider billed it there
            hit = Usage(lm_calls=1, cache_hits=1)
            record_usage(hit)
            return data, hit, 0.0
        reported = data.get("usage") or {}
        prompt = int(reported.get("prompt_tokens") or 0)
        completion = int(reported.get("completion_tokens") or 0)
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=DEFAULT_PRICES.cost_of(priced_as, prompt, completion, batch=not found.get("online")),
            lm_calls=1,
        )
        record_usage(usage)
        return data, usage, 0.0


def _stored_error(lm: Any, found: Mapping[str, Any]) -> LMError:
    """The provider's error for a request its batch did not answer, with its text kept."""
    status = found.get("status")
    message = str(found.get("error") or "no answer in the provider's batch results")
    if isinstance(status, int) and status >= 400:
        error = error_for_status(status, message, {}, model=lm.model, api_base=lm.api_base)
        return error
    return LMServerError(f"{lm.api_base} (provider batch): {message}", model=lm.model)


_replay: ContextVar[BatchReplay | None] = ContextVar("dspex_batch_replay", default=None)


def active_replay() -> BatchReplay | None:
    """The batch-mode answers of the running task, or None when calls go online."""
    return _replay.get()


@contextmanager
def batch_replay(answers: Mapping[str, Mapping[str, Any]]) -> Iterator[BatchReplay]:
    """Run LM calls inside against ``answers`` (see the module docs)."""
    replay = BatchReplay(answers)
    token = _replay.set(replay)
    try:
        yield replay
    finally:
        _replay.reset(token)
