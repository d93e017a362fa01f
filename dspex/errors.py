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
    ├── RetrievalError                a retrieval server that failed or answered something unusable
    ├── LMError                       an LM call that failed; carries ``code``, ``model``, ``provider``,
    │   │                             ``status``, ``request_id`` and ``retry_after``
    │   ├── LMConfigurationError      an LM that cannot be called as configured (also a ConfigurationError)
    │   │   └── LMNotConfiguredError  an LM missing what a call needs (an api_base for its provider)
    │   ├── LMRateLimitError          429: flow control, retried without using up retries
    │   ├── LMServerError             5xx: transient, retried with backoff
    │   ├── LMTimeoutError            no answer in time: transient
    │   ├── LMConnectionError         the endpoint could not be reached: transient
    │   ├── LMUnexpectedError         an answer the client cannot use
    │   │   └── LMStreamAssemblyError a stream that ended without a whole answer; carries ``partial``
    │   ├── LMUnsupportedFeatureError a feature the LM or provider does not have; names the ``features``
    │   ├── LMLockTimeoutError        a local lock that could not be taken in time: transient
    │   ├── LMCollectionLimitError    a local collector (of a stream) that reached its budget
    │   ├── FinetuneError             a fine-tuning job that failed or was cancelled; names the job
    │   └── LMRequestError            other 4xx: never retried, the provider's message kept
    │       ├── LMAuthenticationError 401 / 403: a systemic error, fails a whole job
    │       ├── LMBillingError        402, or an exhausted quota: systemic too
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
from typing import Any, ClassVar

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
    "LMBillingError",
    "LMCollectionLimitError",
    "LMConfigurationError",
    "LMConnectionError",
    "LMError",
    "LMInvalidRequestError",
    "LMLockTimeoutError",
    "LMNotConfiguredError",
    "LMNotFoundError",
    "LMProviderError",
    "LMRateLimitError",
    "LMRequestError",
    "LMServerError",
    "LMStreamAssemblyError",
    "LMTimeoutError",
    "LMTransportError",
    "LMUnexpectedError",
    "LMUnsupportedFeatureError",
    "LMUnsupportedModelError",
    "MetricError",
    "OptimizerError",
    "PoisonMessageError",
    "ProgramLoadError",
    "ProgramOfThoughtError",
    "ReflectionParseError",
    "RetrievalError",
    "SchemaError",
    "SecurityPolicyError",
    "SignatureError",
    "TopicError",
]


class DspexError(Exception):
    """Root of every error dspex raises on purpose.

    ``code`` is a stable short name of the kind of failure (DSPy's codes for the errors it has, e.g.
    ``"rate_limit"``), or None.
    """

    default_code: ClassVar[str | None] = None

    @property
    def code(self) -> str | None:
        """This error's stable code: the one given when raised, else its class's."""
        return self.__dict__.get("_code") or self.default_code

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickles only ``args`` and calls the class with them, which fails for errors
        # with keyword-only fields and would prefix an LMError's message twice: keep the state as is.
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(cls: type[DspexError], args: tuple[Any, ...], state: dict[str, Any]) -> DspexError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


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

    Takes DSPy's arguments (``adapter_name``, ``signature``, ``lm_response``, ``message``,
    ``parsed_result``: the message is then DSPy's "Adapter X failed to parse the LM response" text)
    or dspex's (a finished message with ``raw_text=``, ``adapter=`` and ``field=``). Either way the
    error carries ``adapter_name``, ``signature``, ``lm_response`` (also ``raw_text``),
    ``parsed_result`` and ``field``.
    """

    default_code = "adapter_parse_error"

    def __init__(
        self,
        adapter_name: str = "",
        signature: Any = None,
        lm_response: str | None = None,
        message: str | None = None,
        parsed_result: Any = None,
        *,
        raw_text: str | None = None,
        adapter: str = "",
        field: str | None = None,
    ) -> None:
        if raw_text is not None or lm_response is None:
            # dspex's form: the first argument is the whole message, already worded
            text = adapter_name or message or ""
            self.adapter_name = adapter
            self.lm_response = raw_text if raw_text is not None else ""
        else:
            text = _parse_failure_text(adapter_name, signature, lm_response, message, parsed_result)
            self.adapter_name = adapter_name
            self.lm_response = lm_response
        super().__init__(text)
        self.message = text
        self.signature = signature
        self.parsed_result = parsed_result
        self.field = field

    @property
    def raw_text(self) -> str:
        """The LM's unparsed answer (dspex's name for ``lm_response``)."""
        return self.lm_response

    @property
    def adapter(self) -> str:
        """dspex's name for ``adapter_name``."""
        return self.adapter_name


def _parse_failure_text(
    adapter_name: str, signature: Any, lm_response: str, message: str | None, parsed_result: Any
) -> str:
    """DSPy's wording of a parse failure, so code matching on it keeps working."""
    expected = ", ".join(getattr(signature, "output_fields", None) or ())
    text = f"{message}\n\n" if message else ""
    text += (
        f"Adapter {adapter_name} failed to parse the LM response. \n\n"
        f"LM Response: {lm_response} \n\n"
        f"Expected to find output fields in the LM response: [{expected}] \n\n"
    )
    if parsed_result is not None:
        parsed = ", ".join(parsed_result.keys() if hasattr(parsed_result, "keys") else parsed_result)
        text += f"Actual output fields parsed from the LM response: [{parsed}] \n\n"
    return text


class ProgramLoadError(DspexError, ValueError):
    """A saved program that is corrupt, or written by a newer schema version."""


class MetricError(DspexError):
    """A metric that cannot be found, imported or built."""


class RetrievalError(DspexError, ValueError):
    """A retrieval server (``ColBERTv2``) that could not be reached, failed, or answered something
    that holds no passages; the message names the server and what it said."""


class LMError(DspexError):
    """An LM call that failed, with DSPy's metadata.

    ``model`` (the message then starts with ``[model]``, as DSPy's does), ``provider``,
    ``provider_code`` (the provider's own error code), ``status`` (the HTTP status when there was a
    response), ``request_id`` (the provider's, when it sent one) and ``retry_after`` (the seconds
    the provider asked us to wait, when it said so); ``message`` is the text without the prefix.
    """

    default_code = "lm_error"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        provider_code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        api_base: str | None = None,
    ) -> None:
        prefix = f"[{model}]" if model else ""
        super().__init__(f"{prefix} {message}" if prefix and message else prefix or message)
        self.message = message
        self._code = code
        self.model = model
        self.provider = provider
        self.provider_code = provider_code
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.api_base = api_base

    @property
    def transient(self) -> bool:
        """Whether retrying the same request later can succeed."""
        return isinstance(
            self, LMRateLimitError | LMServerError | LMTimeoutError | LMConnectionError | LMLockTimeoutError
        )

    @property
    def systemic(self) -> bool:
        """Whether every request to this endpoint will fail the same way (bad key, unknown model)."""
        return isinstance(
            self, LMAuthenticationError | LMBillingError | LMNotFoundError | LMConfigurationError
        )


class LMConfigurationError(LMError, ConfigurationError):
    """An LM that cannot work as configured (e.g. a reasoning model with temperature 0.7); a
    ConfigurationError (and ValueError) too."""

    default_code = "configuration"


class LMNotConfiguredError(LMConfigurationError):
    """An LM missing what a call needs: an ``api_base`` for a provider with no known endpoint."""

    default_code = "not_configured"


class LMRateLimitError(LMError):
    """429 Too Many Requests."""

    default_code = "rate_limit"


class LMServerError(LMError):
    """5xx from the provider."""

    default_code = "server"


class LMTimeoutError(LMError):
    """The provider did not answer in time."""

    default_code = "timeout"


class LMConnectionError(LMError):
    """The provider could not be reached."""

    default_code = "transport"


class LMRequestError(LMError):
    """A 4xx other than 429: the request itself is wrong; retrying cannot help."""

    default_code = "invalid_request"


class LMAuthenticationError(LMRequestError):
    """401 or 403: the API key is missing, wrong or not allowed."""

    default_code = "auth"


class LMNotFoundError(LMRequestError):
    """404: unknown model or endpoint path."""

    default_code = "unsupported_model"


class ContextWindowExceededError(LMRequestError):
    """The prompt is longer than the model's context window (DSPy's name; ReAct trims and retries).

    ``ContextWindowExceededError(model="openai/gpt-4o")`` reads "[openai/gpt-4o] Context window
    exceeded", as in DSPy; the message may also come first, positionally.
    """

    default_code = "context_window_exceeded"

    def __init__(self, message: str = "Context window exceeded", **metadata: Any) -> None:
        super().__init__(message, **metadata)


class LMBillingError(LMRequestError):
    """402, or a provider saying the account's quota or credit is used up: retrying cannot help."""

    default_code = "billing"


class LMUnexpectedError(LMError):
    """An answer the client cannot use (e.g. structured output the provider did not honour)."""

    default_code = "unexpected"


class LMStreamAssemblyError(LMUnexpectedError):
    """A streamed answer that cannot be put together into a whole one. ``partial`` is what arrived
    (not a success: never cached), ``part_index`` the part that failed, when known."""

    default_code = "stream_assembly"

    def __init__(
        self, message: str = "", *, partial: Any = None, part_index: int | None = None, **metadata: Any
    ) -> None:
        super().__init__(message, **metadata)
        self.partial = partial
        self.part_index = part_index


class LMUnsupportedFeatureError(LMError):
    """A feature the LM, its provider or its client does not have. ``features`` names them (DSPy's
    ``feature`` names one), ``issues`` says why, when known."""

    default_code = "unsupported_feature"

    def __init__(
        self,
        message: str = "",
        *,
        features: list[str] | None = None,
        feature: str | None = None,
        issues: list[str] | None = None,
        **metadata: Any,
    ) -> None:
        super().__init__(message, **metadata)
        self.feature = feature
        self.features = list(features) if features is not None else ([feature] if feature is not None else [])
        self.issues = list(issues or [])


class LMLockTimeoutError(LMError):
    """A local lock (e.g. on stored credentials) that could not be taken in time: not the
    provider's failure, and worth retrying. ``path`` is what the lock guards."""

    default_code = "lock_timeout"

    def __init__(self, message: str = "", *, path: str = "", lock_path: str = "", **metadata: Any) -> None:
        super().__init__(message, **metadata)
        self.path = path
        self.lock_path = lock_path


class LMCollectionLimitError(LMError):
    """A local collector (of a streamed answer) that reached its budget; never retried. ``limit``,
    ``maximum`` and what was kept come from ``source``, the collector's own error, when given."""

    default_code = "collection_limit"

    def __init__(self, message: str = "", *, source: Any = None, **metadata: Any) -> None:
        super().__init__(message, **metadata)
        self.source = source
        self.limit = getattr(source, "limit", None)
        self.maximum = getattr(source, "maximum", None)
        self.partial = getattr(source, "partial", None)


class FinetuneError(LMError):
    """A fine-tuning job that did not give a model: ``job_id`` and the provider's ``reason``."""

    default_code = "finetune"

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
