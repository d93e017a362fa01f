"""``BaseLM``: what modules call. :class:`~dspex.lm.LM` (OpenAI-compatible HTTP) is one; bring your own.

Everything in dspex talks to an LM through one coroutine, ``acomplete(messages, **overrides) ->
LMResponse``. A subclass implements that, or, as in DSPy, ``forward(prompt=None, messages=None,
**kwargs)`` (or ``aforward``) returning an OpenAI-style chat completion (an object or a dict with
``choices[i].message.content``, ``usage`` and ``model``)::

    class Echo(dspex.BaseLM):
        def forward(self, prompt=None, messages=None, **kwargs):
            return {"choices": [{"message": {"content": messages[-1]["content"]}}], "model": self.model}

Calling an LM directly is DSPy's: ``lm("hi")`` or ``lm(messages=[...])`` gives a list of strings,
one per choice. Every call is remembered in ``lm.history`` (bounded; off with
``dspex.configure(disable_history=True)``), which ``lm.inspect_history()`` prints.
"""

from __future__ import annotations

import contextvars
import copy as copy_mod
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

from pydantic_core import to_jsonable_python

from dspex._callers import CALLER_MODULES
from dspex._sync import run_sync
from dspex.errors import ConfigurationError
from dspex.lm.call_log import current_log
from dspex.lm.events import callback_api
from dspex.lm.usage import Usage, as_mapping, record_usage

if TYPE_CHECKING:
    from dspex.lm.client import LMResponse

__all__ = [
    "BUILTIN_LM_CLASS_PATH",
    "GLOBAL_HISTORY",
    "LM_CLASS_STATE_KEY",
    "MAX_HISTORY_SIZE",
    "BaseLM",
    "announced_lm_call",
    "call_lm",
    "record_call",
]

T = TypeVar("T")

# DSPy's saved LM state names the LM's class under this key; its built-in LM is this path, which
# dspex's LM writes too (so DSPy loads it) and reads as its own LM.
LM_CLASS_STATE_KEY = "_dspy_lm_class"
BUILTIN_LM_CLASS_PATH = "dspy.clients.lm.LM"
_OWN_LM_CLASS_PATHS = frozenset({BUILTIN_LM_CLASS_PATH, "dspex.lm.client.LM"})

# DSPy keeps the last 10,000 calls; so do we, per LM and process-wide, so a long run's memory stays flat.
MAX_HISTORY_SIZE = 10_000
# A plain list as in DSPy (code indexes, slices and type-checks it); `_remember_globally` drops the
# oldest entries past the bound, under a lock because calls are recorded from many threads.
GLOBAL_HISTORY: list[dict[str, Any]] = []
_GLOBAL_HISTORY_LOCK = threading.Lock()


class BaseLM:
    """The LM interface: ``acomplete`` (native), ``forward``/``aforward`` (DSPy's), ``__call__``."""

    model: str
    model_type: str = "chat"

    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        callbacks: list[Any] | None = None,
        num_retries: int = 3,
        **kwargs: Any,
    ) -> None:
        self.model = model
        self.model_type = model_type
        self.cache = cache
        self.callbacks: list[Any] = list(callbacks or [])  # the caller's list stays theirs
        self.num_retries = num_retries
        kwargs.pop(LM_CLASS_STATE_KEY, None)  # a class marker is the class's to write, never a kwarg
        self.kwargs: dict[str, Any] = self._get_initial_kwargs(
            temperature=temperature, max_tokens=max_tokens, **kwargs
        )
        # A plain list as in DSPy (users index and slice it); record_call keeps it bounded.
        self.history: list[dict[str, Any]] = []

    # -- the one call every module makes --------------------------------------------------

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, rollout_id: int | None = None, **overrides: Any
    ) -> LMResponse:
        """One chat completion. The default runs DSPy's ``aforward``/``forward`` and reads its answer."""
        kwargs = {**self.kwargs, **overrides}
        if rollout_id is not None:
            kwargs["rollout_id"] = rollout_id
        started = time.perf_counter()
        prompt = _DIRECT_PROMPT.get()
        if prompt is not None and _is_prompt_only(messages, prompt):
            # lm("text") on a DSPy-style LM: its forward gets the prompt as DSPy passes it
            raw = await self.aforward(prompt=prompt, messages=None, **kwargs)
        else:
            raw = await self.aforward(messages=[dict(m) for m in messages], **kwargs)
        return _response_from(raw, self.model, time.perf_counter() - started)

    def forward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        """DSPy's extension point: return an OpenAI-style chat completion for these messages."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement acomplete(messages, **overrides) or DSPy's "
            "forward(prompt=None, messages=None, **kwargs)"
        )

    async def aforward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        """Async ``forward``; the default calls ``forward``."""
        return self.forward(prompt=prompt, messages=messages, **kwargs)

    # -- DSPy's direct call -------------------------------------------------------------------

    def __call__(
        self, prompt: str | None = None, messages: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any
    ) -> list[str | dict[str, Any]]:
        """``lm("hi")`` / ``lm(messages=[...])``: the answer texts, one per choice (with tool calls,
        ``{"text": ..., "tool_calls": [...]}`` as DSPy gives them)."""
        return run_sync(self.acall(prompt, messages, **kwargs))

    async def acall(
        self, prompt: str | None = None, messages: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any
    ) -> list[str | dict[str, Any]]:
        """Async ``__call__``."""
        chat = list(messages) if messages is not None else [{"role": "user", "content": prompt or ""}]
        token = _DIRECT_PROMPT.set(prompt if messages is None else None)
        try:
            response = await call_lm(self, chat, kwargs)
        finally:
            _DIRECT_PROMPT.reset(token)
        if response.tool_calls:  # DSPy's shape for a completion with function calls
            return [{"text": response.text or None, "tool_calls": response.tool_calls}]
        return [response.text]

    # -- copies and history -------------------------------------------------------------------

    def copy(self, **kwargs: Any) -> BaseLM:
        """A shallow copy with some settings changed (``lm.copy(temperature=0.7)``), as DSPy's.

        Clients and other attributes are shared; ``history`` starts empty and ``callbacks`` and
        ``kwargs`` are the copy's own. A key already in ``kwargs`` (or not an attribute) changes the
        request options (None removes it); any other attribute (``model``, ``cache``) is set.
        """
        new = copy_mod.copy(self)
        new.kwargs = {**self.kwargs}
        new.callbacks = list(getattr(self, "callbacks", None) or [])
        new.history = []
        for key, value in kwargs.items():
            if key in new.kwargs or not hasattr(self, key) or _is_property(self, key):
                if value is None:
                    new.kwargs.pop(key, None)
                else:
                    new.kwargs[key] = value
            else:
                setattr(new, key, value)
        return new

    def _get_initial_kwargs(
        self, *, temperature: float | None, max_tokens: int | None, **kwargs: Any
    ) -> dict[str, Any]:
        """The request options the LM starts with (DSPy's hook: a subclass may rename or check them)."""
        return {"temperature": temperature, "max_tokens": max_tokens, **kwargs}

    def inspect_history(self, n: int = 1, file: TextIO | None = None) -> None:
        """Print this LM's last ``n`` calls: messages and answers."""
        from dspex.lm.history import pretty_print_history

        pretty_print_history(list(self.history), n, file=file)

    def update_history(self, entry: dict[str, Any]) -> None:
        """Remember ``entry`` (DSPy's history entry) as a call of this LM: in its history, the
        process-wide one and the calling modules' (unless history is disabled), as calls are."""
        from dspex.configuration import current_settings

        settings = current_settings()
        if settings.disable_history:
            return
        _remember_globally(entry)
        for owner_history in (self.history, *(module.history for module in CALLER_MODULES.get())):
            owner_history.append(entry)
            if len(owner_history) > settings.max_history_size:
                del owner_history[: len(owner_history) - settings.max_history_size]

    # What the LM declares it supports (DSPy's names): JSONAdapter asks for `response_format` only
    # when it is listed. A subclass for an endpoint with structured outputs overrides these.
    @property
    def supported_params(self) -> frozenset[str]:
        return frozenset()

    @property
    def supports_response_schema(self) -> bool:
        return False

    @property
    def supports_function_calling(self) -> bool:
        return False

    @property
    def temperature(self) -> float | None:
        return self.kwargs.get("temperature")

    @property
    def max_tokens(self) -> int | None:
        return self.kwargs.get("max_tokens")

    def dump_state(self) -> dict[str, Any]:
        """DSPy's LM state: the class, model, model_type, cache and request kwargs (never a key)."""
        kwargs = {
            key: value for key, value in self.kwargs.items() if key not in ("api_key", LM_CLASS_STATE_KEY)
        }
        return {
            LM_CLASS_STATE_KEY: f"{type(self).__module__}.{type(self).__qualname__}",
            "model": self.model,
            "model_type": self.model_type,
            "cache": self.cache,
            "num_retries": getattr(self, "num_retries", 3),
            **kwargs,
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any], *, allow_custom_lm_class: bool = False) -> BaseLM:
        """An LM from :meth:`dump_state` output. A class other than the built-in LM is imported only
        with ``allow_custom_lm_class=True`` (loading trusted files: ``allow_unsafe_lm_state=True``)."""
        state = dict(state)
        class_path = state.pop(LM_CLASS_STATE_KEY, None)
        if cls is not BaseLM:
            return cls(**state)
        if class_path is None or class_path in _OWN_LM_CLASS_PATHS:
            from dspex.lm.client import LM

            return LM(**_lm_arguments(state))
        if not allow_custom_lm_class:
            raise ConfigurationError(
                f"Refusing to import custom serialized LM class `{class_path}`. "
                "Pass allow_unsafe_lm_state=True when loading trusted files to enable custom LM classes."
            )
        lm_class = _import_class(class_path)
        if not (isinstance(lm_class, type) and issubclass(lm_class, BaseLM)):
            raise ConfigurationError(
                f"Serialized LM class `{class_path}` must be a subclass of dspex.BaseLM."
            )
        return lm_class.load_state(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


async def call_lm(lm: Any, messages: Sequence[Mapping[str, Any]], request: Mapping[str, Any]) -> LMResponse:
    """What every module's LM call goes through: ``lm.acomplete``, the callbacks' ``on_lm_start`` /
    ``on_lm_end`` around it (when any are installed), and the call's line in the LM history."""

    async def complete() -> LMResponse:
        response = await _complete(lm, messages, request)
        record_call(lm, messages, response, request)
        return response

    def inputs() -> dict[str, Any]:  # built only when a callback listens
        return {"messages": list(messages), **request}

    return await announced_lm_call(lm, inputs, complete, _texts_of_one)


async def announced_lm_call(
    lm: Any,
    inputs: Callable[[], dict[str, Any]],
    run: Callable[[], Awaitable[T]],
    texts: Callable[[T], list[str]],
) -> T:
    """``run()`` heard by the callbacks as one LM call: ``on_lm_start`` with ``inputs()`` (built only
    when a callback listens), ``on_lm_end`` with ``texts`` of its result or with its error."""
    api = callback_api()
    callbacks = api.listening(api.active_callbacks(lm), "lm")
    if not callbacks:
        return await run()
    call_id = api.notify_start(callbacks, "lm", lm, inputs())
    # inside, the LM's attempt and request events (dspex.lm.events) name this call, as DSPy's
    # instrumented calls set ACTIVE_CALL_ID for what they run
    token = api.ACTIVE_CALL_ID.set(call_id)
    try:
        result = await run()
    except BaseException as exc:
        api.notify_end(callbacks, "lm", call_id, None, exc)
        raise
    finally:
        api.ACTIVE_CALL_ID.reset(token)
    api.notify_end(callbacks, "lm", call_id, texts(result), None)
    return result


def _texts_of_one(response: LMResponse) -> list[str]:
    return [response.text]


# The prompt of a direct ``lm("text")`` call, while it runs: BaseLM's default ``acomplete`` hands
# it to a DSPy-style ``forward(prompt=...)`` as DSPy does, instead of the message built from it.
_DIRECT_PROMPT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dspex_lm_direct_prompt", default=None
)


def _is_property(obj: object, name: str) -> bool:
    return isinstance(getattr(type(obj), name, None), property)


def _is_prompt_only(messages: Sequence[Mapping[str, Any]], prompt: str) -> bool:
    return len(messages) == 1 and messages[0].get("role") == "user" and messages[0].get("content") == prompt


# Set while a user's own ``__call__`` override runs, so that its ``super().__call__`` goes to
# ``acomplete`` instead of back into the override.
_INSIDE_OVERRIDE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dspex_lm_call_override", default=False
)


# _complete and _answer hand back what to await rather than awaiting it themselves: each
# coroutine layer costs every LM call its frame, and these two only choose.


def _complete(
    lm: Any, messages: Sequence[Mapping[str, Any]], request: Mapping[str, Any]
) -> Awaitable[LMResponse]:
    """:func:`_answer`, kept in the LM call log when one is open (a predictor's, per task)."""
    log = current_log()
    if log is None:
        return _answer(lm, messages, request)
    return log.complete(_answer, lm, messages, request)


def _answer(
    lm: Any, messages: Sequence[Mapping[str, Any]], request: Mapping[str, Any]
) -> Awaitable[LMResponse]:
    """``lm.acomplete``, or the LM's own ``__call__`` when a DSPy-style subclass overrides it."""
    overrides_call = isinstance(lm, BaseLM) and type(lm).__call__ is not BaseLM.__call__
    if not overrides_call or _INSIDE_OVERRIDE.get():
        return cast("Awaitable[LMResponse]", lm.acomplete(messages, **request))
    return _answer_by_override(lm, messages, request)


async def _answer_by_override(
    lm: Any, messages: Sequence[Mapping[str, Any]], request: Mapping[str, Any]
) -> LMResponse:
    """The LM's own ``__call__`` (a DSPy-style subclass's), in a thread, as an LMResponse."""
    from dspex._sync import run_in_thread

    started = time.perf_counter()
    outputs = await run_in_thread(_call_override, lm, list(messages), dict(request))
    first = outputs[0] if outputs else ""
    text = first.get("text", "") if isinstance(first, Mapping) else str(first)
    return _response_from(text, lm.model, time.perf_counter() - started)


def _call_override(lm: BaseLM, messages: list[dict[str, Any]], request: dict[str, Any]) -> list[Any]:
    token = _INSIDE_OVERRIDE.set(True)
    try:
        return lm(messages=messages, **request)
    finally:
        _INSIDE_OVERRIDE.reset(token)


def record_call(
    lm: BaseLM, messages: Sequence[Mapping[str, Any]], response: LMResponse, kwargs: Mapping[str, Any]
) -> None:
    """Append one call to ``lm.history`` and the process-wide history (unless history is disabled)."""
    history = getattr(lm, "history", None)
    settings = _current_settings()
    if history is None or settings.disable_history:
        return
    usage = getattr(response, "usage", None)
    entry = {
        "prompt": None,
        "messages": list(messages),
        "kwargs": dict(kwargs),
        "response": response,
        "outputs": [response.text],
        "usage": {**usage.model_dump(), "total_tokens": usage.total_tokens} if usage is not None else {},
        "cost": usage.cost_usd if usage is not None else None,
        "timestamp": datetime.now().isoformat(),
        "model": getattr(lm, "model", None),
        "model_type": getattr(lm, "model_type", "chat"),
    }
    history.append(entry)
    if len(history) > settings.max_history_size:
        del history[: len(history) - settings.max_history_size]
    _remember_globally(entry)
    for module in CALLER_MODULES.get():
        kept = module.history
        kept.append(entry)
        if len(kept) > settings.max_history_size:
            del kept[: len(kept) - settings.max_history_size]


def _current_settings() -> Any:
    """dspex.configuration's ``current_settings()``; that module imports this one, so it is reached
    at call time, once (an ``import`` in :func:`record_call` would cost it on every LM call)."""
    global _SETTINGS_OF
    if _SETTINGS_OF is None:
        from dspex.configuration import current_settings

        _SETTINGS_OF = current_settings
    return _SETTINGS_OF()


_SETTINGS_OF: Callable[[], Any] | None = None


def _remember_globally(entry: dict[str, Any]) -> None:
    with _GLOBAL_HISTORY_LOCK:
        GLOBAL_HISTORY.append(entry)
        if len(GLOBAL_HISTORY) > MAX_HISTORY_SIZE:
            del GLOBAL_HISTORY[: len(GLOBAL_HISTORY) - MAX_HISTORY_SIZE]


def _response_from(raw: Any, model: str, latency: float) -> LMResponse:
    """An LMResponse from what a DSPy-style ``forward`` returned (object or dict, OpenAI's shape)."""
    from dspex.lm.client import LMResponse

    if isinstance(raw, str):
        record_usage(Usage(lm_calls=1))
        return LMResponse(text=raw, model=model, usage=Usage(lm_calls=1), latency_s=latency)
    choices = _get(raw, "choices")
    if not choices:
        raise ConfigurationError(f"{model}: forward() returned no choices: {raw!r:.200}")
    message = _get(choices[0], "message")
    text = _get(message, "content") if message is not None else _get(choices[0], "text")
    reported = _get(raw, "usage") or {}
    prompt_tokens = int(_get(reported, "prompt_tokens") or 0)
    completion_tokens = int(_get(reported, "completion_tokens") or 0)
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, lm_calls=1)
    record_usage(usage, model, as_mapping(reported))  # the report by model, as DSPy keeps it
    return LMResponse(
        text=text or "",
        model=str(_get(raw, "model") or model),
        usage=usage,
        latency_s=latency,
        finish_reason=_get(choices[0], "finish_reason"),
        tool_calls=_tool_calls_of(message),
    )


def _tool_calls_of(message: Any) -> list[dict[str, Any]] | None:
    """The message's function calls as plain dicts (a provider SDK returns objects), or None."""
    calls = _get(message, "tool_calls") if message is not None else None
    if not calls:
        return None
    return [to_jsonable_python(call, fallback=vars) for call in calls]


def _lm_arguments(state: dict[str, Any]) -> dict[str, Any]:
    """DSPy's LM state as arguments of dspex's LM (which keeps DSPy's finetuning fields as given)."""
    # DSPy writes null for "the provider's default"; dspex's LM keeps its own defaults then
    return {key: value for key, value in state.items() if value is not None or key not in _NULLABLE}


_NULLABLE = frozenset({"temperature", "max_tokens", "num_retries", "api_base", "base_url"})


def _import_class(path: str) -> Any:
    """The class at ``module.Class`` or ``module.Outer.Inner``: the longest importable module prefix."""
    import importlib

    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:]:
                target = getattr(target, name)
        except AttributeError as exc:
            raise ConfigurationError(f"cannot import serialized LM class `{path}`: {exc}") from exc
        return target
    raise ConfigurationError(f"cannot import serialized LM class `{path}`: no module of it can be imported")


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)
