"""What an LM call tells the callbacks beyond DSPy's ``on_lm_start`` / ``on_lm_end``.

DSPy's LM hides its HTTP attempts inside litellm, so its callbacks hear one start and one end per
call, with the answer texts. An operator needs more: how long the call waited for the endpoint's
concurrency limiter, how long each HTTP attempt took and how it ended, the usage and cost. dspex's
:class:`~dspex.lm.LM` reports these as two extra callback hooks (dspex extensions of
:class:`~dspex.utils.BaseCallback`, no-ops by default):

* ``on_lm_attempt(call_id, instance, attempt)`` after every HTTP attempt, with an :class:`LMAttempt`;
* ``on_lm_request(call_id, instance, request)`` once per call (answered, from the cache, or failed),
  with an :class:`LMRequest`.

``call_id`` is the id its ``on_lm_start`` got when the call came through a module or ``lm(...)``
(else the innermost instrumented call's, or None). The callbacks in effect are the LM's own and
the settings' (``dspex.configure(callbacks=...)`` / ``dspex.context(callbacks=...)``), as for every
other hook. Prometheus metrics are one such callback
(``dspex.observability.callbacks.PrometheusCallback``, installed by the workers); the programming
model itself records no metrics.

    class SlowCalls(dspex.BaseCallback):
        def on_lm_attempt(self, call_id, instance, attempt):
            if attempt.duration_s > 5:
                print(attempt.endpoint, attempt.status, attempt.duration_s)
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Final, Literal, NamedTuple, cast

__all__ = [
    "ATTEMPT_HOOK",
    "REQUEST_HOOK",
    "AttemptOutcome",
    "LMAttempt",
    "LMRequest",
    "RequestOutcome",
    "callback_api",
    "emit",
    "listeners",
]

logger = logging.getLogger(__name__)

ATTEMPT_HOOK: Final = "on_lm_attempt"
REQUEST_HOOK: Final = "on_lm_request"

# ok: answered; rate_limited: a 429 (waited and retried); transient: a timeout, a connection
# failure or a 5xx (retried while retries last); failed: any other error (the call ends).
AttemptOutcome = Literal["ok", "rate_limited", "transient", "failed"]
# ok: answered (after any retries); cache_hit: from the response cache, no request; error: failed.
RequestOutcome = Literal["ok", "cache_hit", "error"]


# NamedTuples rather than dataclasses: immutable, and built in a fraction of a frozen dataclass's time
# (two per LM call in every worker). ``event._asdict()`` gives a dict.


class LMAttempt(NamedTuple):
    """One HTTP attempt of an LM call.

    ``queue_wait_s`` is the time spent waiting for the endpoint's concurrency limiter (its fixed
    rate caps included; 0 without a limiter), ``duration_s`` the HTTP attempt alone, from sending
    the request to the answer read (or the failure). ``status`` is the HTTP status when one came
    back, ``error`` the dspex error class name of a failed attempt, ``limiter_limit`` the limiter's
    concurrency limit after the attempt (None without a limiter).
    """

    model: str
    endpoint: str
    outcome: AttemptOutcome
    queue_wait_s: float
    duration_s: float
    status: int | None = None
    error: str | None = None
    limiter_limit: int | None = None


class LMRequest(NamedTuple):
    """One LM call as a whole, from the caller's view.

    ``duration_s`` runs from the call's start to its answer (or failure): limiter and circuit
    breaker waits, every attempt, retries and their backoff included. ``priced_as`` is the model
    the usage was priced as (an embeddings call may name another model than the LM's).
    """

    model: str
    endpoint: str
    outcome: RequestOutcome
    duration_s: float
    priced_as: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


def callback_api() -> ModuleType:
    """:mod:`dspex.utils.callback`, imported on first use.

    dspex.utils imports dspex.lm (its DummyLM answers with an LMResponse), so dspex.lm reaches the
    callback module at call time. Kept here once imported: an ``import`` statement in a function
    costs as much as the rest of a small hook call, and the LM's hot path has several per call.
    """
    global _CALLBACK_API
    if _CALLBACK_API is None:
        from dspex.utils import callback

        _CALLBACK_API = callback
    return _CALLBACK_API


_CALLBACK_API: ModuleType | None = None


def listeners(lm: Any) -> list[Any]:
    """The callbacks in effect for ``lm`` (empty list when none: build no event then)."""
    return cast("list[Any]", callback_api().active_callbacks(lm))


def emit(callbacks: list[Any], hook: str, lm: Any, event: LMAttempt | LMRequest) -> None:
    """Call ``hook`` (:data:`ATTEMPT_HOOK` or :data:`REQUEST_HOOK`) on each callback that has it.

    A callback written for DSPy has neither hook and is skipped; a hook that raises is logged and
    never breaks the call, as for DSPy's hooks.
    """
    call_id = callback_api().ACTIVE_CALL_ID.get()
    for callback in callbacks:
        handler = getattr(callback, hook, None)
        if handler is None:
            continue
        try:
            handler(call_id, lm, event)
        except Exception:
            logger.warning("callback %r failed in %s", callback, hook, exc_info=True)
