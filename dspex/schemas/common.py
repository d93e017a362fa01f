"""Parts shared by several messages: LM settings, metric spec, usage, errors, traces, example sets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from dspex.schemas.base import WireModel

__all__ = [
    "PRIORITIES",
    "SECRET_LIKE_KEYS",
    "CallbackEvent",
    "ErrorInfo",
    "ExampleSet",
    "LMSpec",
    "MetricKind",
    "MetricSpec",
    "Priority",
    "ToolCallRecord",
    "TraceEntry",
    "UsageRecord",
]

Priority = Literal["interactive", "normal", "bulk"]
"""How a job shares the predictors with other jobs: its weight in their fair queues
(:mod:`dspex.processors.fairqueue`). Absent on the wire means ``normal``."""
PRIORITIES: tuple[Priority, ...] = ("interactive", "normal", "bulk")

# Request options a job may not carry in LMSpec.extra: keys come only from the worker's environment.
SECRET_LIKE_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "secret",
        "password",
        "token",
        "access_token",
        "authorization",
        "headers",
        "extra_headers",
        "default_headers",
    }
)


class LMSpec(WireModel):
    """LM settings as they travel on a topic: everything to rebuild the client except the key.

    The key is named by ``api_key_env`` and read from the worker's environment (which must
    allow that variable); ``extra`` holds further request options (e.g. ``top_p``) and may not
    carry anything that looks like a credential.
    """

    model: str = Field(description='"provider/name", e.g. "openai/gpt-4o-mini".')
    api_base: str | None = None
    api_key_env: str | None = Field(default=None, description="Environment variable holding the key.")
    temperature: float | None = Field(default=None, description="None: the provider's default (as DSPy's).")
    max_tokens: int | None = Field(
        default=None, ge=1, description="None: the provider's default (as DSPy's)."
    )
    cache: bool = True
    max_retries: int = Field(default=5, ge=0)
    timeout: float = Field(default=120.0, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_secrets(self) -> LMSpec:
        if not self.extra:  # the usual case, read with every task
            return self
        found = sorted(key for key in self.extra if key.lower() in SECRET_LIKE_KEYS)
        if found:
            raise ValueError(
                f"LMSpec.extra must not carry credentials ({', '.join(found)}); "
                "name the environment variable that holds the key in api_key_env instead"
            )
        return self


MetricKind = Literal["builtin", "import", "judge"]


class MetricSpec(WireModel):
    """Which metric scores a job.

    ``kind="builtin"``: ``name`` is a built-in metric name such as ``"exact_match:answer"``;
    ``kind="import"``: ``name`` is an import path ``"pkg.module:function"`` (workers load it only
    from modules they allow); ``kind="judge"``: an LM judge answering ``judge_signature`` with
    ``judge_lm`` (``name`` labels it).
    """

    name: str
    kind: MetricKind = "builtin"
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword options, e.g. a tolerance.")
    judge_signature: str | dict[str, Any] | None = Field(
        default=None, description='A signature string ("question, answer -> correct: bool") or its dump.'
    )
    judge_lm: LMSpec | None = None

    @model_validator(mode="after")
    def _judge_needs_signature(self) -> MetricSpec:
        if self.kind == "judge" and self.judge_signature is None:
            raise ValueError("a judge metric needs judge_signature")
        return self


class UsageRecord(WireModel):
    """LM usage: tokens, cost in USD, calls made and how many of them the cache answered."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    lm_calls: int = Field(default=0, ge=0)
    cache_hits: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: UsageRecord) -> UsageRecord:
        return UsageRecord(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            lm_calls=self.lm_calls + other.lm_calls,
            cache_hits=self.cache_hits + other.cache_hits,
        )


class ErrorInfo(WireModel):
    """An error kept with a result.

    ``type`` is the exception class name, ``status`` the HTTP status when an LM answered,
    ``systemic`` whether every task of the job will fail the same way (bad key, unknown model,
    a program that cannot be built), which fails the whole job instead of scoring it zero.
    """

    type: str
    message: str
    status: int | None = None
    systemic: bool = False


class TraceEntry(WireModel):
    """One predictor call inside a program run: its attribute path, inputs and outputs."""

    predictor: str = Field(description='Attribute path of the predictor, e.g. "generate.predict".')
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class ToolCallRecord(WireModel):
    """One tool call of an agent (ReAct, ReActV2, CodeAct's code runs) inside a program run.

    ``start_s`` is when it started, in seconds since the run began, so calls of one turn that ran
    at the same time show overlapping ``[start_s, start_s + duration_s]``. ``duration_s`` covers the
    whole call, retries included. ``outcome``: ``ok``; ``error`` (the tool raised, timed out or
    returned what JSON cannot hold); ``unavailable`` (its circuit was open); ``invalid`` (unknown
    tool or arguments: nothing ran); ``cancelled`` (the run was stopped). A plain string, so that
    outcomes added later do not break older readers.
    """

    tool: str
    start_s: float = Field(ge=0)
    duration_s: float = Field(ge=0)
    outcome: str = "ok"


class CallbackEvent(WireModel):
    """One hook call of a user's callback while a worker ran a prediction (``--callback``).

    ``data`` is what the hook was given, in JSON form with long strings cut: the inputs of a start
    hook, the outputs of an end hook, the event of ``on_lm_attempt`` / ``on_lm_request``.
    ``returned`` is what the hook returned, when not None (a way for a callback to put its own
    findings into the result).
    """

    callback: str = Field(description='Import path the worker installed the callback by, "pkg.mod:Name".')
    hook: str = Field(description='The hook called, e.g. "on_module_start".')
    call_id: str | None = None
    at_s: float = Field(default=0.0, ge=0, description="Seconds since the prediction started.")
    instance: str | None = Field(default=None, description="Class name of the called component.")
    data: Any = None
    error: str | None = Field(default=None, description="The exception the call ended with (end hooks).")
    returned: Any = None
    hook_error: str | None = Field(default=None, description="The hook's own exception, if it raised.")


class ExampleSet(WireModel):
    """A set of examples given inline (``examples``) or by reference (``uri``), exactly one of them."""

    examples: list[dict[str, Any]] | None = None
    uri: str | None = Field(default=None, description="Where the examples live, e.g. a JSONL path.")
    input_keys: list[str] = Field(min_length=1)
    fingerprint: str | None = Field(default=None, description="Content id of the examples, when known.")

    @model_validator(mode="after")
    def _one_source(self) -> ExampleSet:
        if (self.examples is None) == (self.uri is None):
            raise ValueError("an ExampleSet needs exactly one of examples (inline) or uri (reference)")
        return self
