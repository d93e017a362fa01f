"""OpenTelemetry tracing of programs, examples and jobs, with OpenInference's attribute names.

Off by default. Turn it on in a client with ``dspex.configure(tracing=...)`` (an OTLP/HTTP endpoint
URL, ``True`` for the ``OTEL_*`` variables, or a :class:`TracingSettings`), and in workers with
``--otlp-endpoint`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT`` in their environment). A worker exports only
to the endpoint it was started with; a job cannot name one.

What becomes a span (see :mod:`~dspex.observability.tracing.callback`): every module call, LM call,
tool call, adapter format/parse, code execution, evaluation and compile, through the callback seam
(:class:`~dspex.utils.BaseCallback`); and on the cluster, each example's submission (client), its
task (predictor), its scoring (scorer, an ``EVALUATOR`` span) and its score folded into the job
(aggregator, :mod:`dspex.processors.aggregate_spans`), linked through a W3C ``traceparent`` header
on the task, prediction and score messages. Each example is one trace.

Sampling: parent-based, new traces kept with probability ``sample_ratio`` (default
:data:`DEFAULT_SAMPLE_RATIO`, 1%; ``OTEL_TRACES_SAMPLER(_ARG)`` may say otherwise), decided once per
example where its trace starts (and carried in the ``traceparent`` flag across Kafka).

Failed examples are always kept, and an unsampled example costs about what it costs with tracing
off. In a local evaluation, each example's sampling is drawn before its program is called
(:mod:`~dspex.observability.tracing.examples`): an unsampled one is not announced to tracing at
all (tracing's callback is muted while the evaluation's workers run it, one context-variable read
per call: the callback seam finds no callback listening, as with tracing off), and if it fails its
span is made after the fact from its inputs, start and end. Elsewhere (a worker's task, a program
called directly) tracing hears the example's own call (the program's module call) and nothing
inside it: that call's span is a plain object holding references to the call (no OpenTelemetry
call, no attribute built), and tracing's callback is muted for every call made inside. Each
process exports the part of an unsampled trace it ran when that part's local root span failed (an
exception, an error prediction or score; see :mod:`~dspex.observability.tracing.lean`). What a
failed example keeps:

- sampled: every span (modules, predictors, adapter format and parse, LM calls with their
  attempts and retries, tools), each with its inputs and outputs;
- not sampled: the worker's task span (on a cluster), the program's span with its inputs and the
  error, and one ``LLM`` span per LM call it made, made after the fact from the LM call log
  (:mod:`~dspex.observability.tracing.recalled`: model, messages, completion, tokens, cost,
  start and duration, and the error of a call that failed; not its attempts and retries). No span
  for inner modules, adapter format and parse, or tool calls: they were never announced.

A local evaluation's metric is not traced (it runs outside its example's trace).
Unsampled spans are not made OpenTelemetry's current span.
Secrets (API keys, authorization headers, any secret-named value) never go into attributes.
An unreachable receiver never fails or slows a call: export errors are counted in
``dspex_trace_export_errors_total`` and logged at most once a minute.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dspex.errors import ConfigurationError
from dspex.observability.tracing.settings import DEFAULT_SAMPLE_RATIO, TracingSettings, resolve

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from dspex.observability.tracing.callback import TracingCallback
    from dspex.observability.tracing.provider import Recorder

__all__ = [
    "DEFAULT_SAMPLE_RATIO",
    "Tracing",
    "TracingSettings",
    "active",
    "disable",
    "enable",
    "flush",
    "with_setting",
]


@dataclass(frozen=True)
class Tracing:
    """Tracing as it runs in this process: its settings, provider, span recorder and callback."""

    settings: TracingSettings
    provider: TracerProvider
    recorder: Recorder
    callback: TracingCallback


_CALLBACK_MODULE = "dspex.observability.tracing.callback"
_active: Tracing | None = None
_lock = threading.Lock()


def active() -> Tracing | None:
    """The tracing of this process, None when off."""
    return _active


def enable(value: Any) -> Tracing | None:
    """Start tracing as ``value`` says (see :func:`~dspex.observability.tracing.settings.resolve`),
    replacing any tracing already on; None when ``value`` turns it off. Prefer
    ``dspex.configure(tracing=value)``, which also installs the callback."""
    settings = resolve(value)
    global _active
    with _lock:
        previous, _active = _active, None
        if settings is not None:
            try:
                from dspex.observability.tracing.callback import TracingCallback
                from dspex.observability.tracing.provider import build_provider
            except ImportError as exc:
                raise ConfigurationError(
                    f"tracing needs the tracing extra (pip install 'dspex[tracing]'): {exc}"
                ) from exc

            provider, recorder = build_provider(settings)
            _active = Tracing(settings, provider, recorder, TracingCallback(recorder))
    if previous is not None:
        _close(previous)
    return _active


def disable() -> None:
    """Stop tracing: what was recorded is exported; this waits at most twice the export timeout
    (a flush, then the batch thread's end), however slow the receiver."""
    enable(None)


def flush(timeout_s: float | None = None) -> bool:
    """Export what has been recorded so far; False when the export did not finish in time."""
    tracing = _active
    if tracing is None:
        return True
    timeout = timeout_s if timeout_s is not None else tracing.settings.export_timeout_s
    return bool(tracing.provider.force_flush(int(timeout * 1000)))


def _close(tracing: Tracing) -> None:
    tracing.provider.force_flush(int(tracing.settings.export_timeout_s * 1000))
    tracing.provider.shutdown()


@atexit.register
def _at_exit() -> None:
    # bounded: a receiver that never answers costs the exiting process one export timeout
    tracing = _active
    if tracing is not None:
        tracing.provider.force_flush(int(tracing.settings.export_timeout_s * 1000))


def with_setting(callbacks: Sequence[Any], value: Any) -> tuple[TracingSettings | None, list[Any]]:
    """What ``configure(tracing=value)`` stores: the settings in force (None: off) and ``callbacks``
    with the tracing callback of the new settings in place of any earlier one."""
    tracing = enable(value)
    kept = [callback for callback in callbacks if type(callback).__module__ != _CALLBACK_MODULE]
    if tracing is None:
        return None, kept
    return tracing.settings, [*kept, tracing.callback]
