"""``LM``: an OpenAI-compatible chat-completions and embeddings client.

    lm = LM("openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY")
    response = await lm.acomplete([{"role": "user", "content": "2 + 3?"}])
    response.text, response.usage.cost_usd

An LM is immutable: ``lm.copy(temperature=0.7)`` gives a changed one. Its :class:`LMSettings` are what
travels in a saved program or a job; they name the environment variable that holds the key and never
hold a key. The key itself is read at call time (from ``api_key=`` or that variable) and only ever
goes into the ``Authorization`` header: never into settings, the cache key, a log line or an error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)
from pydantic_core import PydanticSerializationError, from_json, to_json

from dspex._sync import run_sync
from dspex.errors import (
    ConfigurationError,
    LMConfigurationError,
    LMConnectionError,
    LMError,
    LMNotConfiguredError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMUnsupportedFeatureError,
)
from dspex.lm import cache as cache_mod
from dspex.lm._sse import send_streamed
from dspex.lm.base import BUILTIN_LM_CLASS_PATH, LM_CLASS_STATE_KEY, BaseLM
from dspex.lm.batch_mode import active_replay
from dspex.lm.breaker import CircuitBreaker
from dspex.lm.events import ATTEMPT_HOOK, REQUEST_HOOK, AttemptOutcome, LMAttempt, LMRequest, emit, listeners
from dspex.lm.http1 import Target, target_of
from dspex.lm.limiter import AdaptiveLimiter, limiter_for
from dspex.lm.pricing import DEFAULT_PRICES
from dspex.lm.responses_api import chat_to_responses_request, responses_to_chat_answer
from dspex.lm.retry import RetryPolicy, error_for_status, with_retries
from dspex.lm.sse import open_stream_sink
from dspex.lm.transport import aclose_client, get_http1_pool, get_session, opened_loop_resources
from dspex.lm.usage import Usage, record_usage

__all__ = ["LM", "LMResponse", "LMSettings"]

logger = logging.getLogger(__name__)

_TRANSIENT = (LMServerError, LMTimeoutError, LMConnectionError)
# Providers whose OpenAI-compatible endpoint is known, so LM("anthropic/...") works with no
# api_base, as DSPy's (litellm's) does; the key variable is the one litellm reads for each.
_PROVIDER_ENDPOINTS: dict[str, tuple[str, str | None]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "anthropic": ("https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "together_ai": ("https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "fireworks_ai": ("https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "xai": ("https://api.x.ai/v1", "XAI_API_KEY"),
    "perplexity": ("https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "cerebras": ("https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    "deepinfra": ("https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    # a local server: no key
    "ollama": ("http://localhost:11434/v1", None),
    "ollama_chat": ("http://localhost:11434/v1", None),
}
_DEFAULT_API_BASES = {name: base for name, (base, _) in _PROVIDER_ENDPOINTS.items()}
_DEFAULT_KEY_ENVS = {name: env for name, (_, env) in _PROVIDER_ENDPOINTS.items() if env}
# Set by the client itself, or not supported yet (streaming, several choices per call).
_RESERVED_KWARGS = frozenset({"model", "messages", "input", "stream", "n"})
# DSPy LM arguments for its finetuning and provider layers: kept on the LM and in its saved state
# (DSPy's defaults here), never sent in requests.
_DSPY_ONLY_KWARGS: dict[str, Any] = {
    "finetuning_model": None,
    "launch_kwargs": {},
    "train_kwargs": {},
    "use_developer_role": False,
}

# Validates a 200 response's body and returns its JSON object; raises LMServerError when malformed.
_Check = Callable[["LM", bytes], dict[str, Any]]
# One HTTP attempt (url, body, check) -> the answer: LM._send, or a streamed one (dspex.lm._sse).
_Send = Callable[[str, dict[str, Any], _Check], Awaitable[dict[str, Any]]]
_JSON = {"Content-Type": "application/json"}
_JSON_LINES = b"Content-Type: application/json\r\n"


class LMSettings(BaseModel):
    """Everything that defines an LM and can travel (saved programs, jobs). Never a key.

    ``cache_dir`` is left out on purpose: it is a path on one machine, chosen where the LM runs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    api_base: str
    api_key_env: str | None = None
    # DSPy 3.4.1's defaults: None sends nothing, the provider's default applies
    temperature: float | None = Field(default=None, ge=0.0)
    max_tokens: int | None = Field(default=None, ge=1)
    cache: bool = True
    max_retries: int = Field(default=5, ge=0)
    timeout: float = Field(default=120.0, gt=0.0)
    request_kwargs: dict[str, Any] = Field(default_factory=dict)
    # the API the calls go to: chat completions, or OpenAI's Responses API
    model_type: Literal["chat", "responses"] = "chat"
    # system messages sent as "developer" ones (on the Responses API, as DSPy does)
    use_developer_role: bool = False

    @model_serializer(mode="wrap")
    def _leave_out_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Written only when set, so the settings of every chat LM read as before (in saved
        # programs, jobs and content-keyed pools) and load where these fields are unknown.
        data: dict[str, Any] = handler(self)
        if data.get("model_type") == "chat":
            del data["model_type"]
        if data.get("use_developer_role") is False:
            del data["use_developer_role"]
        return data


class LMResponse(BaseModel):
    """One completion. ``latency_s`` covers the whole call, retries and waits included."""

    model_config = ConfigDict(frozen=True)

    text: str
    model: str
    usage: Usage
    cached: bool = False
    latency_s: float = 0.0
    finish_reason: str | None = None
    # the provider's function calls (OpenAI shape: id, type, function.name, function.arguments), if any
    tool_calls: list[dict[str, Any]] | None = None


def _split_model(model: str) -> tuple[str, str]:
    """('provider', 'name') of 'provider/name'; a bare name is an OpenAI model, as in DSPy."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(
            f"LM model must be 'provider/name' (e.g. 'openai/gpt-4o-mini'), got {model!r}"
        )
    provider, sep, name = model.partition("/")
    if not sep:
        return "openai", model
    if not provider or not name:
        raise ConfigurationError(
            f"LM model must be 'provider/name' (e.g. 'openai/gpt-4o-mini'), got {model!r}"
        )
    return provider, name


_OPENAI_REASONING_FAMILY = re.compile(
    r"^(?:o[1345](?:-(?:mini|nano|pro))?(?:-\d{4}-\d{2}-\d{2})?|gpt-5(?:\.\d+)*(?!-chat)(?:-.*)?)$"
)


def is_openai_reasoning_model(model: str) -> bool:
    """An OpenAI reasoning model (o1, o3, o4, o5 and their -mini/-nano/-pro, every gpt-5 but the
    -chat ones), which takes ``max_completion_tokens`` and only the default temperature."""
    return _OPENAI_REASONING_FAMILY.match(model.rpartition("/")[2].lower()) is not None


def _check_reasoning_settings(model: str, temperature: float | None, max_tokens: int | None) -> None:
    if not is_openai_reasoning_model(model):
        return
    if (temperature and temperature != 1.0) or (max_tokens and max_tokens < 16000):
        # "reasoning models require passing ..." is DSPy's wording, which code may match on
        raise LMConfigurationError(
            "OpenAI's reasoning models require passing temperature=1.0 or None and max_tokens >= 16000 "
            f"or None; got temperature={temperature!r}, max_tokens={max_tokens!r} "
            f"(e.g. dspex.LM({model!r}, temperature=1.0, max_tokens=16000))",
            model=model,
            provider=model.partition("/")[0] if "/" in model else "openai",
        )


def _check_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    if not kwargs:  # most calls: nothing to check
        return {}
    reserved = sorted(_RESERVED_KWARGS & kwargs.keys())
    if reserved and not (reserved == ["n"] and kwargs["n"] == 1):
        raise ConfigurationError(
            f"LM request option(s) {reserved} cannot be set: the client sets model/messages/input, "
            "and streaming or n > 1 are not supported"
        )
    return {key: value for key, value in kwargs.items() if value is not None}


class LM(BaseLM):
    """An OpenAI-compatible LM endpoint: chat completions and embeddings, with retries, a response
    cache, usage and cost.

        lm = LM("openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY", temperature=0.0)
        sim = LM("sim/arith", api_base="http://127.0.0.1:8000/v1", cache_dir=tmp_path)

    ``model`` is 'provider/name' (the request sends 'name'); provider "openai" defaults ``api_base``
    to https://api.openai.com/v1 and ``api_key_env`` to OPENAI_API_KEY; anthropic, gemini, groq,
    deepseek, mistral, together_ai, fireworks_ai, openrouter, xai, perplexity, cerebras, deepinfra
    and ollama(_chat) default to their OpenAI-compatible endpoints and litellm's key variables;
    other providers need an ``api_base`` (building the LM does not check it: its first call raises
    :class:`~dspex.errors.LMNotConfiguredError`). With no key (neither ``api_key`` nor a set
    ``api_key_env``) no Authorization header is sent. ``cache=False`` turns off both cache
    layers; ``cache_dir`` defaults to ~/.cache/dspex/lm.
    ``retry_policy`` sets backoff timings and the 429 wait budget (its ``max_retries`` is replaced by
    ``max_retries``). ``limiter=True`` adds the process's adaptive concurrency limiter for this API
    base (or pass an :class:`AdaptiveLimiter`). ``breaker`` (a :class:`CircuitBreaker`, shared by
    the LMs of one endpoint) makes calls wait while the endpoint is down. ``**request_kwargs`` go
    into every request body (e.g. ``top_p=0.9``). ``model_type="responses"`` sends each call to
    OpenAI's Responses API (``POST {api_base}/responses``, see :mod:`dspex.lm.responses_api`);
    ``use_developer_role=True`` then sends system messages as "developer" ones, as DSPy does.
    """

    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        # DSPy's positional order up to num_retries, so LM("m", "chat", 0.0, 1000, True) works.
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        callbacks: list[Any] | None = None,
        num_retries: int | None = None,
        *,
        api_base: str | None = None,
        base_url: str | None = None,
        api_key_env: str | None = None,
        api_key: str | SecretStr | None = None,
        cache_dir: str | Path | None = None,
        max_retries: int = 5,
        timeout: float = 120.0,
        retry_policy: RetryPolicy | None = None,
        limiter: AdaptiveLimiter | bool = False,
        breaker: CircuitBreaker | None = None,
        provider: Any = None,
        **request_kwargs: Any,
    ) -> None:
        if model_type not in ("chat", "responses"):
            raise ConfigurationError(
                f"LM {model!r}: model_type={model_type!r} is not supported; dspex speaks chat completions "
                "(model_type='chat') and OpenAI's Responses API (model_type='responses')"
            )
        self.model_type = model_type
        self._provider = provider  # a dspex.lm.finetune.Provider; None: the OpenAI-compatible one
        self._dspy_state = _pop_dspy_state(request_kwargs)
        use_developer_role = bool(self._dspy_state.pop("use_developer_role"))
        if num_retries is not None:  # DSPy's name
            max_retries = num_retries
        provider, self._request_model = _split_model(model)
        if is_openai_reasoning_model(model) and "max_completion_tokens" in request_kwargs:
            # DSPy's name of max_tokens for these models (in their kwargs and some saved states)
            alias = request_kwargs.pop("max_completion_tokens")
            max_tokens = max_tokens if max_tokens is not None else alias
        _check_reasoning_settings(model, temperature, max_tokens)
        # No endpoint is fine until a call needs one (as in DSPy, building an LM checks nothing).
        base = api_base or base_url or _DEFAULT_API_BASES.get(provider) or ""
        try:
            self._settings = LMSettings(
                model=model if "/" in model else f"{provider}/{model}",
                api_base=base.rstrip("/"),
                api_key_env=api_key_env or _DEFAULT_KEY_ENVS.get(provider),
                temperature=temperature,
                max_tokens=max_tokens,
                cache=cache,
                max_retries=max_retries,
                timeout=timeout,
                request_kwargs=_check_kwargs(request_kwargs),
                model_type="responses" if model_type == "responses" else "chat",
                use_developer_role=use_developer_role,
            )
        except ValidationError as exc:
            raise ConfigurationError(f"invalid LM settings for {model!r}: {exc}") from exc
        # what every request body starts from: the set options only (None: the provider's default)
        self._defaults_sent = {
            key: value
            for key, value in self.kwargs.items()
            if value is not None and key != LM_CLASS_STATE_KEY
        }
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        # its own directory's cache; without one, dspex.cache as it is at each call (_response_cache)
        self._cache = cache_mod.cache_for(cache_dir) if cache and cache_dir is not None else None
        self._follows_global_cache = bool(cache) and cache_dir is None
        self._policy = dataclasses.replace(retry_policy or RetryPolicy(), max_retries=max_retries)
        self._limiter = limiter
        self._breaker = breaker
        # Per connection only: the whole answer has its own deadline in _send, which a per-read
        # timeout of the same length could never beat (and it re-arms a timer on every read).
        self._http_timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout)
        # A plain list as in DSPy (users index and slice it); record_call keeps it bounded.
        self.history: list[dict[str, Any]] = []
        self.callbacks: list[Any] = list(callbacks or [])

    # -- settings ------------------------------------------------------------------------------

    @property
    def model(self) -> str:  # type: ignore[override]
        """'provider/name'; requests send the part after the first '/'."""
        return self._settings.model

    @property
    def api_base(self) -> str:
        return self._settings.api_base

    @property
    def kwargs(self) -> dict[str, Any]:  # type: ignore[override]
        """DSPy's request options: temperature, max_tokens (``max_completion_tokens`` for OpenAI's
        reasoning models) and the extra request keywords; None where the provider's default applies."""
        kwargs = {
            "temperature": self.temperature,
            self._max_tokens_key: self.max_tokens,
            **self._settings.request_kwargs,
        }
        marker = self._dspy_state.get(LM_CLASS_STATE_KEY)
        if marker is not None:  # given as a keyword: shown as DSPy shows it, never sent nor saved
            kwargs[LM_CLASS_STATE_KEY] = marker
        return kwargs

    @property
    def _max_tokens_key(self) -> str:
        return "max_completion_tokens" if is_openai_reasoning_model(self.model) else "max_tokens"

    @property
    def api_key_env(self) -> str | None:
        """The environment variable the key is read from at call time (unless ``api_key=`` was given)."""
        return self._settings.api_key_env

    @property
    def temperature(self) -> float | None:
        return self._settings.temperature

    @property
    def max_tokens(self) -> int | None:
        return self._settings.max_tokens

    @property
    def cache(self) -> bool:
        return self._settings.cache

    @cache.setter
    def cache(self, value: bool) -> None:
        """DSPy's ``lm.cache = False``: this LM's later calls skip the response cache (True: use
        it again), as GRPO does around its rollouts."""
        self._settings = self._settings.model_copy(update={"cache": bool(value)})
        self._cache = cache_mod.cache_for(self.cache_dir) if value and self.cache_dir is not None else None
        self._follows_global_cache = bool(value) and self.cache_dir is None

    @property
    def max_retries(self) -> int:
        return self._settings.max_retries

    @property
    def timeout(self) -> float:
        return self._settings.timeout

    @property
    def request_kwargs(self) -> dict[str, Any]:
        return dict(self._settings.request_kwargs)

    def settings(self) -> LMSettings:
        """The LM's portable settings (no key, no cache directory)."""
        return self._settings

    @property
    def supported_params(self) -> frozenset[str]:
        """OpenAI-compatible chat completions take ``response_format`` (JSON mode)."""
        return frozenset({"response_format"})

    @property
    def supports_function_calling(self) -> bool:
        """OpenAI-compatible chat completions take ``tools`` (native function calling)."""
        return True

    @property
    def num_retries(self) -> int:  # type: ignore[override]
        """DSPy's name for ``max_retries``."""
        return self.max_retries

    @property
    def finetuning_model(self) -> str | None:
        """DSPy's model to fine-tune when it differs from the one served (kept, saved; unused here)."""
        return self._dspy_state["finetuning_model"]  # type: ignore[no-any-return]

    @property
    def launch_kwargs(self) -> dict[str, Any]:
        """DSPy's arguments for launching a local model (kept and saved)."""
        return self._dspy_state["launch_kwargs"]  # type: ignore[no-any-return]

    @property
    def train_kwargs(self) -> dict[str, Any]:
        """DSPy's default fine-tuning arguments (kept and saved)."""
        return self._dspy_state["train_kwargs"]  # type: ignore[no-any-return]

    @property
    def use_developer_role(self) -> bool:
        """Send system messages with the "developer" role (DSPy does so for the Responses API)."""
        return self._settings.use_developer_role

    def dump_state(self) -> dict[str, Any]:
        """DSPy 3.4.1's LM state (``dspy.LM(**state)`` rebuilds it; DSPy reads it as its built-in LM).

        ``api_base`` is kept for non-OpenAI endpoints (DSPy drops it on load unless
        ``allow_unsafe_lm_state=True``); the key never is, nor the variable naming it.
        """
        state: dict[str, Any] = {
            **self._settings.request_kwargs,
            LM_CLASS_STATE_KEY: BUILTIN_LM_CLASS_PATH,
            "model": self.model,
            "model_type": self.model_type,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,  # also for reasoning models: DSPy saves the constructor's name
            "num_retries": self.max_retries,
            "cache": self.cache,
            "finetuning_model": self.finetuning_model,
            "launch_kwargs": self.launch_kwargs,
            "train_kwargs": self.train_kwargs,
        }
        if self.use_developer_role:  # DSPy writes it only when on
            state["use_developer_role"] = True
        if self.api_base and self.api_base != _DEFAULT_API_BASES.get(self.model.partition("/")[0]):
            state["api_base"] = self.api_base
        return state

    @classmethod
    def from_settings(cls, settings: LMSettings, **overrides: Any) -> LM:
        """An LM from settings; ``overrides`` (any constructor argument, e.g. ``cache_dir``) win."""
        fields = settings.model_dump()
        request_kwargs = {**fields.pop("request_kwargs"), **overrides.pop("request_kwargs", {})}
        return cls(**{**fields, **request_kwargs, **overrides})

    def copy(self, **changes: Any) -> LM:
        """A new LM with ``changes``; the key, cache directory, retry policy and limiter carry over."""
        kept: dict[str, Any] = {
            "api_key": self._api_key,
            "cache_dir": self.cache_dir,
            "retry_policy": self._policy,
            "limiter": self._limiter,
            "breaker": self._breaker,
            "provider": self._provider,
            **self._dspy_state,
        }
        return LM.from_settings(self._settings, **{**kept, **changes})

    def __repr__(self) -> str:
        return f"LM({self.model!r}, api_base={self.api_base!r}, api_key_env={self.api_key_env!r})"

    # An LM is immutable, so copies may share it (Module.deepcopy of a program keeps its LMs).
    def __copy__(self) -> LM:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> LM:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles (e.g. to another process) carry settings, never the key: an explicit api_key=
        # does not survive; the receiving side reads the key from api_key_env as usual.
        limiter = self._limiter if isinstance(self._limiter, bool) else False
        return (_unpickle, (self._settings, self.cache_dir, self._policy, limiter, self._dspy_state))

    # -- calls ---------------------------------------------------------------------------------

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, rollout_id: int | None = None, **overrides: Any
    ) -> LMResponse:
        """One chat completion. ``rollout_id`` is sent as the request's ``seed``; ``overrides`` change
        this request's body (``temperature=0.7``, ``response_format={...}``); None values are dropped."""
        body: dict[str, Any] = {
            "model": self._request_model,
            "messages": [dict(message) for message in messages],
            **self._defaults_sent,
        }
        body.update(_check_kwargs(overrides))
        if rollout_id is not None:
            body["seed"] = rollout_id
        if self.model_type == "responses":
            return await self._respond(body)
        sink = open_stream_sink()  # set only under dspex.streamify: then this call may stream
        send = None if sink is None else functools.partial(send_streamed, self, sink)
        data, usage, latency = await self._call("/chat/completions", body, _check_chat, self.model, send)
        return self._chat_response(data, usage.cache_hits > 0, latency, usage)

    async def _respond(self, body: dict[str, Any]) -> LMResponse:
        """``body`` (a chat request) sent to OpenAI's Responses API (``POST /responses``)."""
        seed = body.pop("seed", None)
        if self.use_developer_role:
            body["messages"] = [_as_developer(message) for message in body["messages"]]
        request = chat_to_responses_request(body)
        if seed is not None:  # no seed in this API; the rollout still gets its own cache entry
            request["metadata"] = {**(request.get("metadata") or {}), "dspex_rollout_id": str(seed)}
        data, usage, latency = await self._call("/responses", request, _check_responses, self.model)
        return self._chat_response(data, usage.cache_hits > 0, latency, usage)

    def complete(
        self, messages: Sequence[Mapping[str, Any]], *, rollout_id: int | None = None, **overrides: Any
    ) -> LMResponse:
        """Sync :meth:`acomplete` (inside async code, ``await acomplete`` instead)."""
        return run_sync(self.acomplete(messages, rollout_id=rollout_id, **overrides))

    async def aembed(self, texts: Sequence[str], *, model: str | None = None) -> list[list[float]]:
        """Embeddings of ``texts`` from ``/embeddings``, in order. ``model`` is 'provider/name' or a
        bare name; the default is this LM's model."""
        name = _split_model(model)[1] if model and "/" in model else (model or self._request_model)
        body = {"model": name, "input": list(texts)}
        data, _, _ = await self._call("/embeddings", body, _check_embeddings, model or self.model)
        items = sorted(data["data"], key=lambda item: item.get("index", 0))
        return [list(item["embedding"]) for item in items]

    async def aclose(self) -> None:
        """Write pending cache entries to disk and close this loop's shared HTTP client (the next
        call, by any LM, opens a new one)."""
        cache = self._response_cache()
        if cache is not None:
            await asyncio.to_thread(cache.flush)
        await aclose_client()

    # -- fine-tuning ---------------------------------------------------------------------------

    @property
    def provider(self) -> Any:
        """Who fine-tunes this LM: ``provider=`` as given, else an OpenAI-compatible provider for
        this LM's API base (:class:`dspex.lm.finetune.OpenAIProvider`)."""
        if self._provider is None:
            from dspex.lm.finetune import OpenAIProvider

            self._provider = OpenAIProvider()
        return self._provider

    def finetune(
        self,
        train_data: Sequence[Mapping[str, Any]],
        train_data_format: Any = None,
        train_kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """Start fine-tuning this model on ``train_data`` (DSPy's ``LM.finetune``): a
        :class:`dspex.lm.finetune.TrainingJob` whose ``result()`` is a new LM for the tuned model at
        the same endpoint, with the same key and settings. Bad records, ``train_kwargs`` or an upload
        target that is not allowed raise here, before anything is sent."""
        from dspex.lm.finetune import Endpoint, start_finetune

        provider = self.provider
        base = provider.upload_base(self.api_base, self.model)
        own = base == self.api_base  # the LM's key goes to its own endpoint only
        env = None if own else getattr(provider, "api_key_env", None)
        key = self._key if own else (lambda: os.environ.get(env) if env else None)
        endpoint = Endpoint(
            api_base=base,
            model=self._request_model,
            headers=lambda: {"Authorization": f"Bearer {k}"} if (k := key()) else {},
            secret=key,
        )
        prefix = self.model.partition("/")[0]
        return start_finetune(
            provider, endpoint, self._request_model, train_data, train_data_format, train_kwargs,
            make_lm=lambda tuned: self.copy(model=f"{prefix}/{tuned}"),
        )  # fmt: skip

    def reinforce(self, train_kwargs: Mapping[str, Any] | None = None) -> Any:
        """Start reinforcement learning of this model (DSPy's ``LM.reinforce``): the provider's
        :class:`~dspex.lm.finetune.ReinforceJob`, initialized, for :class:`dspex.GRPO` to step. A
        provider without ``reinforceable = True`` (the default OpenAI-compatible one) is an
        :class:`~dspex.errors.LMUnsupportedFeatureError`."""
        provider = self.provider
        if not getattr(provider, "reinforceable", False):
            raise LMUnsupportedFeatureError(
                f"provider {provider!r} of {self.model} does not implement reinforcement learning; "
                "give the LM one that does (provider=..., with reinforceable = True)",
                features=["reinforce"],
                model=self.model,
            )
        job = provider.ReinforceJob(lm=self, train_kwargs=train_kwargs)
        job.initialize()
        return job

    # -- internals -----------------------------------------------------------------------------

    async def _call(
        self, path: str, body: dict[str, Any], check: _Check, priced_as: str, send: _Send | None = None
    ) -> tuple[dict[str, Any], Usage, float]:
        """The answer to ``body`` (from the cache, or the endpoint with retries), its usage priced as
        ``priced_as``, and the call's duration; the callbacks hear every attempt and the call.
        ``send`` makes each attempt (default: one JSON answer; a stream under dspex.streamify)."""
        replay = active_replay()
        if replay is not None and path == "/chat/completions":  # a batch-mode task: no online call
            return replay.answer(self, body, priced_as)
        started = time.perf_counter()
        callbacks = listeners(self)
        cache = self._response_cache()
        key = cache_mod.cache_key(self.api_base, body) if cache is not None else ""
        hit = cache.lm_get(key) if cache is not None else None
        if hit is not None:
            usage = self._record(priced_as, hit, cached=True)
            latency = time.perf_counter() - started
            if callbacks:
                self._announce_request(callbacks, "cache_hit", latency, priced_as, usage)
            return hit, usage, latency
        if not self.api_base:
            raise _missing_endpoint(self)
        url = self.api_base + path
        try:
            data = await with_retries(
                lambda: self._attempt(url, body, check, callbacks, send or self._send),
                self._policy,
                breaker=self._breaker,
            )
        except LMError as exc:
            _name_the_model(exc, self.model)
            if callbacks:
                self._announce_request(
                    callbacks, "error", time.perf_counter() - started, priced_as, None, exc
                )
            raise
        latency = time.perf_counter() - started
        if cache is not None:
            cache.lm_put(key, data)
        usage = self._record(priced_as, data, cached=False)
        if callbacks:
            self._announce_request(callbacks, "ok", latency, priced_as, usage)
        return data, usage, latency

    def _response_cache(self) -> cache_mod.Cache | None:
        """Where this call's response is looked up and stored: the LM's own directory's cache, else
        ``dspex.cache`` (None when ``cache=False`` or both of its tiers are off)."""
        if not self._follows_global_cache:
            return self._cache
        found = cache_mod.global_cache()
        return found if found.enabled else None

    async def _attempt(
        self, url: str, body: dict[str, Any], check: _Check, callbacks: list[Any], send: _Send
    ) -> dict[str, Any]:
        if self._breaker is None:
            return await self._limited(url, body, check, callbacks, send)
        probe = self._breaker.try_acquire()  # closed: no coroutine to await
        if probe is None:
            probe = await self._breaker.acquire()  # waits while the endpoint is down
        try:
            data = await self._limited(url, body, check, callbacks, send)
        except (LMConnectionError, LMServerError):
            self._breaker.record_failure(probe)
            raise
        except LMTimeoutError:
            # A slow endpoint is the limiter's business; a probe that hears nothing is a failure.
            (self._breaker.record_failure if probe else self._breaker.abandon)(probe)
            raise
        except LMError:  # any other HTTP answer (429, 4xx): the endpoint is reachable
            self._breaker.record_success(probe)
            raise
        except BaseException:
            self._breaker.abandon(probe)
            raise
        self._breaker.record_success(probe)
        return data

    async def _limited(
        self, url: str, body: dict[str, Any], check: _Check, callbacks: list[Any], send: _Send
    ) -> dict[str, Any]:
        """One HTTP attempt, inside a limiter slot when there is a limiter."""
        limiter = limiter_for(self.api_base, self._limiter)
        queued = sent = time.perf_counter()
        try:
            if limiter is None:
                data = await send(url, body, check)
            else:
                async with limiter.slot():
                    sent = time.perf_counter()
                    data = await send(url, body, check)
                limiter.record_tokens(_total_tokens(data))
        except LMError as exc:
            if callbacks:
                self._announce_attempt(callbacks, limiter, queued, sent, exc)
            raise
        if callbacks:
            self._announce_attempt(callbacks, limiter, queued, sent, None)
        return data

    def _announce_attempt(
        self,
        callbacks: list[Any],
        limiter: AdaptiveLimiter | None,
        queued: float,
        sent: float,
        exc: LMError | None,
    ) -> None:
        attempt = LMAttempt(
            model=self.model,
            endpoint=self.api_base,
            outcome=_attempt_outcome(exc),
            queue_wait_s=sent - queued,
            duration_s=time.perf_counter() - sent,
            status=200 if exc is None else exc.status,  # an answer that passed the checks is a 200
            error=None if exc is None else type(exc).__name__,
            limiter_limit=None if limiter is None else limiter.limit,
        )
        emit(callbacks, ATTEMPT_HOOK, self, attempt)

    def _announce_request(
        self,
        callbacks: list[Any],
        outcome: Literal["ok", "cache_hit", "error"],
        latency: float,
        priced_as: str,
        usage: Usage | None,
        exc: LMError | None = None,
    ) -> None:
        request = LMRequest(
            model=self.model,
            endpoint=self.api_base,
            outcome=outcome,
            duration_s=latency,
            priced_as=priced_as,
            prompt_tokens=usage.prompt_tokens if usage is not None else 0,
            completion_tokens=usage.completion_tokens if usage is not None else 0,
            cost_usd=usage.cost_usd if usage is not None else 0.0,
            error=None if exc is None else type(exc).__name__,
        )
        emit(callbacks, REQUEST_HOOK, self, request)

    async def _send(self, url: str, body: dict[str, Any], check: _Check) -> dict[str, Any]:
        opened = opened_loop_resources()
        pool = opened.http1 if opened is not None else await get_http1_pool()
        target = _http1_target(url) if pool is not None else None
        if pool is None or target is None:
            return await self._send_with_aiohttp(url, body, check)
        payload = _encode_json(body)
        try:
            # one deadline for connecting and the whole answer, as on the aiohttp path
            async with asyncio.timeout(self.timeout):
                response = await pool.post(target, self._header_lines(), payload)
        except TimeoutError as exc:
            detail = f"no answer within {self.timeout}s ({type(exc).__name__})"
            raise LMTimeoutError(self._describe(detail)) from exc
        except OSError as exc:  # refused, reset, dropped mid-answer, not HTTP, unknown host
            raise LMConnectionError(self._describe(f"could not reach {url} ({exc!r})")) from exc
        if response.status >= 400:
            raise self._status_error(
                response.status, _body_text(response.body, response.charset), response.headers
            )
        return check(self, response.body)

    async def _send_with_aiohttp(self, url: str, body: dict[str, Any], check: _Check) -> dict[str, Any]:
        """``_send`` through the loop's aiohttp session: URLs the lean client leaves to it, and
        every URL under ``DSPEX_LM_HTTP_CLIENT=aiohttp``."""
        session = await get_session()
        payload = _encode_json(body)
        try:
            # The request's own timeouts cover connecting; asyncio.timeout is the deadline for the
            # whole answer, so a server trickling bytes cannot hold a call.
            async with asyncio.timeout(self.timeout):
                async with session.post(
                    url,
                    data=_body(payload),
                    headers=self._headers(),
                    timeout=self._http_timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    raw = await response.read()
        except aiohttp.ConnectionTimeoutError as exc:  # no connection in time: unreachable
            raise LMConnectionError(self._describe(f"could not reach {url} ({exc!r})")) from exc
        except TimeoutError as exc:  # aiohttp's read timeouts are TimeoutErrors too
            detail = f"no answer within {self.timeout}s ({type(exc).__name__})"
            raise LMTimeoutError(self._describe(detail)) from exc
        except (aiohttp.ClientError, OSError) as exc:  # refused, reset, dropped mid-answer, bad URL
            raise LMConnectionError(self._describe(f"could not reach {url} ({exc!r})")) from exc
        if status >= 400:
            raise self._status_error(status, _body_text(raw, response.charset), response.headers)
        return check(self, raw)

    def _status_error(self, status: int, text: str, headers: Mapping[str, str]) -> LMError:
        return error_for_status(
            status, text, headers, model=self.model, api_base=self.api_base, secret=self._key()
        )

    def _describe(self, what: str) -> str:
        return f"{self.model} at {self.api_base}: {what}"

    def _key(self) -> str | None:
        if self._api_key is not None:
            return self._api_key.get_secret_value()
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {**_JSON, "Authorization": f"Bearer {key}"} if key else _JSON

    def _header_lines(self) -> bytes:
        """``_headers()`` as the lean client writes them (CRLF after each)."""
        key = self._key()
        if not key:
            return _JSON_LINES
        if "\r" in key or "\n" in key:  # it would end the header and start another
            raise LMConfigurationError(self._describe("the API key holds a line break"))
        return b"%bAuthorization: Bearer %b\r\n" % (_JSON_LINES, key.encode("utf-8"))

    def _extract_citations_from_response(self, choice: Any) -> list[dict[str, Any]] | None:
        """The citations of one choice of a chat answer, flattened into one list (DSPy 3.4.1's name).

        Anthropic's citations reach an OpenAI-shaped answer (LiteLLM's) in the message's
        ``provider_specific_fields["citations"]``: a list with one list of citations per text
        block. ``choice`` may be a dict or an object with attributes. None when there are none.
        """
        message = _field(choice, "message")
        fields = _field(message, "provider_specific_fields") if message is not None else None
        found = _field(fields, "citations") if fields is not None else None
        if not isinstance(found, list):
            return None
        return [item for group in found for item in (group if isinstance(group, list) else [group])]

    def _chat_response(
        self, data: dict[str, Any], cached: bool, latency: float, usage: Usage | None = None
    ) -> LMResponse:
        """The response of a chat answer; ``usage`` None records it here (else the caller did)."""
        choice = data["choices"][0]
        message = choice.get("message") or {}
        if usage is None:
            usage = self._record(self.model, data, cached=cached)
        return LMResponse(
            text=message.get("content") or "",
            tool_calls=message.get("tool_calls") or None,
            model=data.get("model") or self._request_model,
            usage=usage,
            cached=cached,
            latency_s=latency,
            finish_reason=choice.get("finish_reason"),
        )

    def _record(self, priced_as: str, data: Mapping[str, Any], *, cached: bool) -> Usage:
        if cached:
            usage = Usage(lm_calls=1, cache_hits=1)
            record_usage(usage)  # a hit was not billed: no report for DSPy's per-model usage
            return usage
        else:
            reported = data.get("usage") or {}
            prompt = int(reported.get("prompt_tokens") or 0)
            completion = int(reported.get("completion_tokens") or 0)
            cost = DEFAULT_PRICES.cost_of(priced_as, prompt, completion)
            usage = Usage(  # validated in pydantic-core: faster than model_construct
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=float(cost),
                lm_calls=1,
                cache_hits=0,
            )
        # the provider's report too, by model, for DSPy's per-model usage (chat answers, as DSPy)
        record_usage(usage, self.model, reported if "choices" in data else None)
        return usage


def _attempt_outcome(exc: LMError | None) -> AttemptOutcome:
    if exc is None:
        return "ok"
    if isinstance(exc, LMRateLimitError):
        return "rate_limited"
    return "transient" if isinstance(exc, _TRANSIENT) else "failed"


def _total_tokens(data: Mapping[str, Any]) -> int:
    usage = data.get("usage")
    if not isinstance(usage, Mapping):
        return 0
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


def _unpickle(
    settings: LMSettings,
    cache_dir: Path | None,
    policy: RetryPolicy,
    limiter: bool,
    dspy_state: Mapping[str, Any] | None = None,
) -> LM:
    return LM.from_settings(
        settings, cache_dir=cache_dir, retry_policy=policy, limiter=limiter, **(dspy_state or {})
    )


def _pop_dspy_state(request_kwargs: dict[str, Any]) -> dict[str, Any]:
    """DSPy's LM arguments that are not request options (and a class marker given as a keyword),
    taken out of ``request_kwargs``."""
    state = {name: request_kwargs.pop(name, default) for name, default in _DSPY_ONLY_KWARGS.items()}
    state["launch_kwargs"] = dict(state["launch_kwargs"] or {})
    state["train_kwargs"] = dict(state["train_kwargs"] or {})
    if LM_CLASS_STATE_KEY in request_kwargs:
        state[LM_CLASS_STATE_KEY] = request_kwargs.pop(LM_CLASS_STATE_KEY)
    return state


def _name_the_model(error: LMError, model: str) -> None:
    """DSPy's ``model`` and ``provider`` on an error that was raised without them (a timeout, a
    refused connection: their messages name the model already)."""
    if error.model is None:
        error.model = model
    if error.provider is None:
        error.provider = model.partition("/")[0]


def _missing_endpoint(lm: LM) -> LMNotConfiguredError:
    provider = lm.model.partition("/")[0]
    return LMNotConfiguredError(
        f"no API endpoint for provider {provider!r}: pass api_base=... (the provider's "
        "OpenAI-compatible URL) to dspex.LM",
        model=lm.model,
        provider=provider,
    )


# httpx's encoding of ``json=``: compact, UTF-8, no NaN (kept so requests stay byte-identical). One
# encoder for every request: json.dumps builds a new one per call when given options.
_REQUEST_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _encode_json(body: Mapping[str, Any]) -> bytes:
    # pydantic-core writes the same bytes as the encoder above for plain JSON values, in a fifth of
    # the time; anything else (a float it would write in another notation, a type json refuses or
    # pydantic-core would turn into something, a lone surrogate) goes through json as before.
    if _same_in_pydantic_core(body):
        try:
            return to_json(body)
        except PydanticSerializationError:
            pass
    return _REQUEST_ENCODER.encode(body).encode("utf-8")


def _same_in_pydantic_core(value: Any) -> bool:
    """Whether ``value`` holds only dicts with string keys, lists, strings, ints, bools, None and
    floats written without an exponent (json writes ``1e-05``, pydantic-core ``0.00001``)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _same_in_pydantic_core(item):
                return False
        return True
    if kind is list:
        return all(map(_same_in_pydantic_core, value))
    if kind is float:  # NaN and infinities too: json refuses them (allow_nan=False)
        return math.isfinite(value) and "e" not in repr(value)
    return False


@functools.lru_cache(maxsize=256)
def _http1_target(url: str) -> Target | None:
    """Parsed once per URL: an LM sends every call to the same one or two."""
    return target_of(url)


# aiohttp warns (ResourceWarning) when given more raw bytes than this; a file object is streamed.
_LARGE_BODY_BYTES = 1024 * 1024


def _body(payload: bytes) -> bytes | io.BytesIO:
    """The request body as aiohttp takes it without a warning (requests with images run to MBs)."""
    return io.BytesIO(payload) if len(payload) > _LARGE_BODY_BYTES else payload


def _body_text(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _json_object(lm: LM, raw: bytes) -> dict[str, Any]:
    try:
        data = _loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LMServerError(lm._describe("answered 200 with a body that is not JSON"), status=200) from exc
    if not isinstance(data, dict):
        raise LMServerError(lm._describe("answered 200 with JSON that is not an object"), status=200)
    return data


def _loads(raw: bytes) -> Any:
    """``json.loads(raw)``, parsed by pydantic-core's parser (a third of the CPU on an LM's answer).

    It reads UTF-8 JSON as json does (NaN and Infinity, big integers, the last of repeated keys);
    what it refuses (another encoding, a BOM, a lone surrogate escape, a body that is not JSON)
    is read again by json, so the value or the error is always json's."""
    try:
        return from_json(raw)
    except ValueError:
        return json.loads(raw)


def _check_chat(lm: LM, raw: bytes) -> dict[str, Any]:
    # A malformed 200 is the provider's fault and may not repeat: it is retried like a 5xx.
    data = _json_object(lm, raw)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LMServerError(lm._describe("answered 200 without choices"), status=200)
    return data


def _check_responses(lm: LM, raw: bytes) -> dict[str, Any]:
    """A Responses API answer, as a chat-completions answer (what is cached and recorded)."""
    data = _json_object(lm, raw)
    if not isinstance(data.get("output"), list):
        raise LMServerError(lm._describe("answered 200 without output"), status=200)
    return responses_to_chat_answer(data)


def _as_developer(message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "role": "developer"} if message.get("role") == "system" else message


# DSPy's name of the conversion (dspy.clients.lm), for code that imports it from there.
_convert_chat_request_to_responses_request = chat_to_responses_request


def _check_embeddings(lm: LM, raw: bytes) -> dict[str, Any]:
    data = _json_object(lm, raw)
    items = data.get("data")
    if not isinstance(items, list) or not all(
        isinstance(item, dict) and "embedding" in item for item in items
    ):
        raise LMServerError(lm._describe("answered 200 without embeddings"), status=200)
    return data


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` of a mapping, else the attribute (None when absent)."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
