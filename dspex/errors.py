"""The one exception tree of dspex.

Everything dspex raises on purpose derives from :class:`DspexError`; foreign exceptions
(aiohttp and httpx, confluent-kafka, pydantic, sqlite3) are translated at the boundary where they occur,
with the original kept as ``__cause__``. Bad-input errors are also ``ValueError``s, as DSPy raises
there, and DSPy 3.4.1's names (``DSPyError``, ``LMAuthError``, ``LMInvalidRequestError``,
``LMTransportError``, ``LMUnsupportedModelError``, ``LMProviderError``) are aliases of the classes below.

    DspexError
    ├── ConfigurationError            a setting or argument that cannot work (a ValueError)
    │   └── SecurityPolicyError       a job names code, an API base or key variable the worker does not allow
    ├── SignatureError                a malformed signature string or field definition
    ├── InputError                    a module called with a missing or unknown input field (a ValueError)
    ├── AdapterParseError             LM output that cannot be parsed; carries the raw text
    ├── ProgramLoadError              a saved program that is corrupt or from a newer schema version
    ├── MetricError                   a metric that cannot be found or built
    ├── LMError                       an LM call that failed; carries ``status`` and ``retry_after``
    │   ├── LMRateLimitError          429: flow control, retried without using up retries
    │   ├── LMServerError             5xx: transient, retried with backoff
    │   ├── LMTimeoutError            no answer in time: transient
    │   ├── LMConnectionError         the endpoint could not be reached: transient
    │   ├── LMUnexpectedError         an answer the client cannot use
    │   ├── FinetuneError             a fine-tuning job that failed or was cancelled; names the job
    │   └── LMRequestError            other 4xx: never retried, the provider's message kept
    │       ├── LMAuthenticationError 401 / 403: a systemic error, fails a whole job
    │       ├── LMNotFoundError       404: unknown model or path, systemic too
    │       └── ContextWindowExceededError  the prompt is longer than the model's window
    ├── SchemaError                   a message that does not decode into its model
    ├── PoisonMessageError            a message no handler can ever process: dead-lettered, not retried
    ├── KafkaError                    a Kafka operation that failed; carries topic, partition, offset
    │   ├── BrokerUnavailableError    no broker answered a metadata request at the address tried
    │   │   └── BrokerAuthenticationError  the broker refused our SASL credentials; names what to change
    │   └── TopicError                a topic that could not be created or has the wrong shape
    ├── JobError                      a cluster job that failed, was cancelled or did not finish in time
    ├── OptimizerError                an optimization that cannot go on (more errors than max_errors)
    └── DevBrokerError                the project's dev broker could not be fetched, started or stopped
"""

from __future__ import annotations

import traceback
from typing import Any

__all__ = [
    "AdapterParseError",
    "BrokerAuthenticationError",
    "BrokerUnavailableError",
    "CodeExecutionError",
    "CodeInterpreterError",
    "ConfigurationError",
    "ContextWindowExceededError",
    "DSPyError",
    "DevBrokerError",
    "DspexError",
    "FeedbackMetricError",
    "FinetuneError",
    "InputError",
    "JobError",
    "KafkaError",
    "LMAuthError",
    "LMAuthenticationError",
    "LMConnectionError",
    "LMError",
    "LMInvalidRequestError",
    "LMNotFoundError",
    "LMProviderError",
    "LMRateLimitError",
    "LMRequestError",
    "LMServerError",
    "LMTimeoutError",
    "LMTransportError",
    "LMUnexpectedError",
    "LMUnsupportedModelError",
    "MetricError",
    "OptimizerError",
    "PoisonMessageError",
    "ProgramLoadError",
    "ProgramOfThoughtError",
    "ReflectionParseError",
    "SchemaError",
    "SecurityPolicyError",
    "SignatureError",
    "TopicError",
]


class DspexError(Exception):
    """Root of every error dspex raises on purpose."""


class ConfigurationError(DspexError, ValueError):
    """A setting or argument that cannot work. The message says what to change."""


class SecurityPolicyError(ConfigurationError):
    """A job or message references something the worker was not started to allow."""


class SignatureError(DspexError, ValueError, TypeError):
    """A malformed signature string or field definition (a ValueError and a TypeError, as in DSPy)."""


class InputError(DspexError, ValueError):
    """A module was called with a missing or unknown input field (also a ``ValueError``, what DSPy raises)."""


class AdapterParseError(DspexError):
    """LM output that could not be parsed into the signature's output fields.

    ``adapter_name``, ``signature``, ``lm_response`` and ``parsed_result`` are DSPy's attribute names.
    """

    def __init__(
        self,
        message: str,
        *,
        raw_text: str,
        adapter: str = "",
        field: str | None = None,
        signature: Any = None,
        parsed_result: Any = None,
    ) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.adapter = adapter
        self.field = field
        self.signature = signature
        self.parsed_result = parsed_result

    @property
    def adapter_name(self) -> str:
        return self.adapter

    @property
    def lm_response(self) -> str:
        return self.raw_text


class ProgramLoadError(DspexError, ValueError):
    """A saved program that is corrupt, or written by a newer schema version."""


class MetricError(DspexError):
    """A metric that cannot be found, imported or built."""


class LMError(DspexError):
    """An LM call that failed.

    ``status`` is the HTTP status when there was a response; ``retry_after`` is the number of
    seconds the provider asked us to wait, when it said so.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        model: str | None = None,
        api_base: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.model = model
        self.api_base = api_base

    @property
    def transient(self) -> bool:
        """Whether retrying the same request later can succeed."""
        return isinstance(self, LMRateLimitError | LMServerError | LMTimeoutError | LMConnectionError)

    @property
    def systemic(self) -> bool:
        """Whether every request to this endpoint will fail the same way (bad key, unknown model)."""
        return isinstance(self, LMAuthenticationError | LMNotFoundError)


class LMRateLimitError(LMError):
    """429 Too Many Requests."""


class LMServerError(LMError):
    """5xx from the provider."""


class LMTimeoutError(LMError):
    """The provider did not answer in time."""


class LMConnectionError(LMError):
    """The provider could not be reached."""


class LMRequestError(LMError):
    """A 4xx other than 429: the request itself is wrong; retrying cannot help."""


class LMAuthenticationError(LMRequestError):
    """401 or 403: the API key is missing, wrong or not allowed."""


class LMNotFoundError(LMRequestError):
    """404: unknown model or endpoint path."""


class ContextWindowExceededError(LMRequestError):
    """The prompt is longer than the model's context window (DSPy's name; ReAct trims and retries)."""


class LMUnexpectedError(LMError):
    """An answer the client cannot use (e.g. structured output the provider did not honour)."""


class FinetuneError(LMError):
    """A fine-tuning job that did not give a model: ``job_id`` and the provider's ``reason``."""

    def __init__(
        self, message: str, *, job_id: str | None = None, reason: str | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.job_id = job_id
        self.reason = reason


# DSPy 3.4.1's names for the same errors, so `except dspy.LMAuthError` keeps working with dspex.
DSPyError = DspexError
LMAuthError = LMAuthenticationError
LMInvalidRequestError = LMRequestError
LMTransportError = LMConnectionError
LMUnsupportedModelError = LMNotFoundError
LMProviderError = LMError


class SchemaError(DspexError):
    """A message whose bytes do not decode into the expected model."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class PoisonMessageError(DspexError):
    """Raised by a consumer handler for a message it can never process (unknown candidate, a job
    naming code the worker does not allow): the consumer runtime dead-letters it under ``reason``
    and moves on instead of retrying it forever."""

    def __init__(self, message: str, *, reason: str = "poison") -> None:
        super().__init__(message)
        self.reason = reason


class KafkaError(DspexError):
    """A Kafka operation that failed, with where it happened when known."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset


class BrokerUnavailableError(KafkaError):
    """No broker answered a metadata request at the bootstrap address."""

    def __init__(self, bootstrap: str, *, detail: str = "") -> None:
        hint = "start one with `make demo` or `dspex dev broker start`, or pass --bootstrap HOST:PORT"
        message = f"no Kafka broker answered at {bootstrap}"
        if detail:
            message += f" ({detail})"
        super().__init__(f"{message}; {hint}")
        self.bootstrap = bootstrap


class BrokerAuthenticationError(BrokerUnavailableError):
    """The broker answered but refused our SASL credentials (caught as BrokerUnavailableError too)."""

    def __init__(self, bootstrap: str, *, detail: str = "") -> None:
        KafkaError.__init__(self, f"the Kafka broker at {bootstrap} refused our credentials: {detail}")
        self.bootstrap = bootstrap


class TopicError(KafkaError):
    """A topic that could not be created, or exists with an incompatible shape."""


class JobError(DspexError):
    """A job run by the workers that failed, was cancelled, or did not finish in time.

    ``state`` is the job's last known state ("failed", "cancelled", "running", ... or None when no
    status was seen); ``reason`` is what its status said, e.g. the provider's message on a 401.
    """

    def __init__(
        self, message: str, *, job_id: str, state: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state
        self.reason = reason


class OptimizerError(DspexError):
    """An optimization that cannot go on: more failed runs or metric calls than ``max_errors``.

    ``reason`` says what failed; ``history`` is the optimization's history up to the failure (a
    :class:`dspex.optimizers.TrialHistory`), the failing step recorded in it.
    """

    def __init__(self, message: str, *, reason: str, history: object = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.history = history


class CodeInterpreterError(DspexError, RuntimeError):
    """A code interpreter itself failed (setup, process or protocol): resubmitting code cannot fix it."""


class CodeExecutionError(CodeInterpreterError):
    """The submitted code (or a tool it called) raised inside a healthy interpreter."""


class ProgramOfThoughtError(DspexError, RuntimeError):
    """Every attempt of ProgramOfThought to write code that runs failed; the message ends with the
    last error (a RuntimeError, as DSPy raises)."""


class FeedbackMetricError(ConfigurationError, TypeError):
    """A GEPA metric that cannot work: it does not take GEPA's five arguments, or returned neither a
    number nor a ``Prediction`` with a ``score``. A TypeError as in DSPy, and a ConfigurationError so
    an evaluation stops at it instead of scoring every example as a failure."""


class ReflectionParseError(DspexError, ValueError):
    """The reflection LM's answer held no usable instruction, twice (a failed proposal, not a crash)."""


class DevBrokerError(DspexError):
    """The project's development broker could not be fetched, started or stopped."""


# The two helpers below are functions, not exception classes, so they stay out of ``__all__`` (which
# dspex exports whole as its exception tree); DSPy code reaches them as ``dspy.utils.exceptions.*``.


def is_retryable_lm_error(error: BaseException) -> bool:
    """Whether ``error`` is an LM failure that a later retry of the same request can get past."""
    return isinstance(error, LMError) and error.transient


def format_error_for_lm(error: BaseException, *, traceback_frames: int = 0) -> str:
    """``error`` as text to show an LM (a tool's failure, code that raised).

    With ``traceback_frames`` 0 or less it is just the error's message; otherwise the formatted
    traceback, at most that many frames, on a new line so it reads apart from any prefix the caller
    puts before it.
    """
    if traceback_frames <= 0:
        return str(error)
    lines = traceback.format_exception(type(error), error, error.__traceback__, limit=traceback_frames)
    return "\n" + "".join(lines).strip()
