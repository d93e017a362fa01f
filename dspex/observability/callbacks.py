"""The LM and tool metrics, recorded from the callback events of the programming model.

The programming model records no metrics itself: its LM (and its code interpreter, through DSPy's
``on_interpreter_execute_*`` hooks) reports what happened through the callback
seam (DSPy's ``on_lm_start``, and dspex's ``on_lm_attempt`` / ``on_lm_request``, see
:mod:`dspex.lm.events`), and :class:`PrometheusCallback` turns that into the ``dspex_lm_*`` series of
:mod:`dspex.observability.metrics`. Tool calls (DSPy's ``on_tool_start`` / ``on_tool_end``, which
:meth:`dspex.Tool.acall` fires for every call ReActV2 makes) and the state of ReActV2's per-service
breakers (dspex's ``on_tool_breaker_state``) become the ``dspex_tool_*`` series. Every worker
installs one for the programs it runs; outside a worker, install it yourself to get the same series:

    dspex.configure(callbacks=[PrometheusCallback()])
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from dspex.errors import CodeExecutionError
from dspex.lm.events import LMAttempt, LMRequest
from dspex.observability import metrics
from dspex.utils.callback import BaseCallback

__all__ = ["PrometheusCallback", "sandbox_outcome", "tool_outcome"]

# An attempt's outcome -> the dspex_lm_requests_total outcome it counts as (a failed attempt that is
# not retried counts once as "error" when its call ends).
_REQUEST_OUTCOME_OF_ATTEMPT: dict[str, metrics.LMOutcome] = {
    "ok": "ok",
    "rate_limited": "rate_limited",
    "transient": "retried",
}


class PrometheusCallback(BaseCallback):
    """Writes the LM series (requests, errors, durations, queue wait, tokens, cost, limiter limit).

    Series of a model and an endpoint are created at 0 when an LM call to them starts, so dashboards
    see them before their first event.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], metrics.LMSeries] = {}
        # call id -> (tool label, start time) of the tool calls running now
        self._tool_calls: dict[str, tuple[str, float]] = {}

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        model, endpoint = getattr(instance, "model", None), getattr(instance, "api_base", None)
        if isinstance(model, str) and isinstance(endpoint, str):  # an HTTP LM: it reports attempts
            self._of(model, endpoint)

    def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: LMAttempt) -> None:
        series = self._of(attempt.model, attempt.endpoint)
        counted = _REQUEST_OUTCOME_OF_ATTEMPT.get(attempt.outcome)
        if counted is not None:
            series.requests[counted].inc()
        if attempt.error is not None:
            metrics.lm_error(attempt.model, attempt.error)
        series.attempts[attempt.outcome].observe(attempt.duration_s)
        if attempt.limiter_limit is not None:
            series.queue_wait.observe(attempt.queue_wait_s)
            metrics.set_limiter_limit(attempt.endpoint, attempt.limiter_limit)

    def on_lm_request(self, call_id: str | None, instance: Any, request: LMRequest) -> None:
        series = self._of(request.model, request.endpoint)
        if request.outcome != "ok":  # cache_hit or error: no duration, no tokens
            series.requests[request.outcome].inc()
            return
        series.latency.observe(request.duration_s)
        if request.priced_as == request.model:
            series.prompt_tokens.inc(request.prompt_tokens)
            series.completion_tokens.inc(request.completion_tokens)
            series.cost.inc(request.cost_usd)
        else:  # e.g. embeddings priced as another model
            metrics.lm_tokens(request.priced_as, request.prompt_tokens, request.completion_tokens)
            metrics.lm_cost(request.priced_as, request.cost_usd)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        name = getattr(instance, "name", None)
        label = metrics.tool_label(name if isinstance(name, str) and name else type(instance).__name__)
        self._tool_calls[call_id] = (label, time.perf_counter())

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        started = self._tool_calls.pop(call_id, None)
        if started is not None:
            label, at = started
            metrics.tool_call(label, tool_outcome(exception), time.perf_counter() - at)

    def on_tool_breaker_state(self, service: str, state: str) -> None:
        if state in metrics.BREAKER_STATES:
            metrics.set_tool_breaker_state(metrics.tool_label(service), state)  # type: ignore[arg-type]

    def on_interpreter_execute_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        metrics.sandbox_execution(sandbox_outcome(exception))

    def _of(self, model: str, endpoint: str) -> metrics.LMSeries:
        key = (model, endpoint)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metrics.LMSeries(model, endpoint)
        return series

    def __repr__(self) -> str:
        return "PrometheusCallback()"


def sandbox_outcome(exception: BaseException | None) -> metrics.SandboxOutcome:
    """The ``dspex_sandbox_executions_total`` outcome of an execution that raised ``exception``."""
    if exception is None:
        return "ok"
    kind = getattr(exception, "kind", None)  # the sandbox's errors name their failure kind
    if kind in metrics.SANDBOX_OUTCOMES:
        return cast(metrics.SandboxOutcome, kind)  # one of them, checked just above
    if isinstance(exception, CodeExecutionError | SyntaxError):
        return "code_error"
    return "other"


def tool_outcome(exception: BaseException | None) -> metrics.ToolCallOutcome:
    """The ``dspex_tool_calls_total`` outcome of a tool call that raised ``exception``.

    ``timeout``: the tool raised ``TimeoutError`` itself. ``cancelled``: the call was cut off from
    outside; that includes the runner's policy timeout, which cancels the overrunning call (the
    tool sees a ``CancelledError``, and nothing in it tells a timeout from another cancellation).
    """
    if exception is None:
        return "ok"
    if isinstance(exception, TimeoutError):
        return "timeout"
    if isinstance(exception, asyncio.CancelledError):
        return "cancelled"
    return "error"
