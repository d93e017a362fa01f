"""``Predict``: one LM call that turns a signature's inputs into its outputs.

    qa = Predict("question -> answer", lm=lm)
    pred = await qa.acall(question="What is 2 + 3?")            # or qa(question=...) from sync code
    pred = await qa.acall(question="...", config={"rollout_id": 1, "temperature": 0.7}, lm=other_lm)

The LM is the call's ``lm=``, else the predictor's own, else ``dspex.context``/``dspex.configure``'s;
the adapter is the predictor's own, else the settings', else a :class:`~dspex.adapters.ChatAdapter`.
A call may also pass ``demos=`` and ``signature=`` for that call only, as in DSPy. Inputs are checked
as DSPy checks them: with warnings, never by refusing the call (see :mod:`dspex.modules._inputs`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from dspex import _dspy_state
from dspex._sync import called_from_sync, run_in_thread, run_sync
from dspex.adapters import Adapter, ChatAdapter, JSONAdapter
from dspex.adapters.types import AdapterResult
from dspex.configuration import Settings, current_settings
from dspex.errors import ConfigurationError, InputError, ProgramLoadError, SignatureError
from dspex.ids import canonical_json
from dspex.lm import LM, BaseLM, LMSettings
from dspex.modules._inputs import check_inputs, input_plan
from dspex.primitives import Example, Prediction, record_trace_step
from dspex.primitives.module import Predictor
from dspex.signatures import Signature, ensure_signature

__all__ = ["ADAPTERS_BY_NAME", "Predict", "serialize_object"]

logger = logging.getLogger(__name__)

# The adapters a saved program can name ("adapter": "chat").
ADAPTERS_BY_NAME: dict[str, type[Adapter]] = {cls.name: cls for cls in (ChatAdapter, JSONAdapter)}
_NO_LM_HINT = (
    "pass lm= to the call, give the predictor one (Predict(..., lm=dspex.LM(...)) or program.set_lm(lm)), "
    "or set a default with dspex.configure(lm=dspex.LM('openai/gpt-4o-mini')) / `with dspex.context(lm=...)`"
)
# With n > 1 and a temperature at or below this, DSPy samples at _N_TEMPERATURE (else the n answers
# would mostly be one answer n times); dspex does the same, and says so in Predict's docstring.
_LOW_TEMPERATURE = 0.15
_N_TEMPERATURE = 0.7


class Predict(Predictor):
    """A predictor: formats the signature, inputs and demos for the LM, and parses its answer.

    ``Predict(signature, callbacks=None, **config)`` as in DSPy: ``**config`` are request options for
    every call (``temperature``, ``rollout_id``, ``max_tokens``, ``n``); a call's ``config={...}`` is
    merged over them. dspex adds the keyword-only ``lm=``, ``adapter=`` and ``demos=``.

    ``n > 1`` asks for n completions: they are n LM requests with consecutive rollout ids (the client
    sends one choice per request), and ``pred.completions`` holds them all, ``pred``'s fields being
    the first's. As DSPy does, a temperature unset or at most 0.15 is raised to 0.7 for them.

    Each call appends ``(predictor, inputs, prediction)`` to ``dspex.settings.trace`` unless it is
    None (bounded by ``max_trace_size``), and a :class:`~dspex.primitives.TraceStep` to the trace of
    the program call it runs in (``pred.trace``).
    """

    is_predictor: ClassVar[bool] = True
    program_alias: ClassVar[str | None] = "dspex.Predict"

    def __init__(
        self,
        signature: str | type[Signature],
        callbacks: list[Any] | None = None,
        *,
        lm: BaseLM | None = None,
        adapter: Adapter | None = None,
        demos: Sequence[Example | Mapping[str, Any]] | None = None,
        **config: Any,
    ) -> None:
        self.stage = secrets.token_hex(8)
        self.signature: type[Signature] = ensure_signature(signature)
        self.callbacks: list[Any] = list(callbacks or [])
        self.config: dict[str, Any] = dict(config)
        self.lm: Any = None  # a BaseLM or None (DSPy lets code set anything; calls check it)
        self.traces: list[Any] = []
        self.train: list[Any] = []
        self.demos: list[Any] = []
        self.lm = _checked_type("lm", lm, BaseLM)
        self.adapter = _checked_type("adapter", adapter, Adapter)
        self.demos = [_as_example(demo) for demo in demos or ()]

    def reset(self) -> None:
        """Forget what was learned or set: the LM, the demos, and DSPy's ``traces``/``train`` lists."""
        self.lm = None
        self.traces = []
        self.train = []
        self.demos = []

    def get_config(self) -> dict[str, Any]:
        """The request options every call sends (a call's ``config=`` goes on top)."""
        return self.config

    def update_config(self, **kwargs: Any) -> None:
        """Add or change request options: ``predict.update_config(temperature=0.7)``."""
        self.config = {**self.config, **kwargs}

    # -- calling ------------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        """DSPy's sync entry point: the same as :meth:`aforward`, run to completion."""
        return run_sync(self.aforward(*args, **kwargs))

    async def aforward(
        self,
        *args: Any,
        config: Mapping[str, Any] | None = None,
        lm: BaseLM | None = None,
        demos: Sequence[Any] | None = None,
        signature: str | type[Signature] | None = None,
        **inputs: Any,
    ) -> Prediction:
        """Call the LM; the result's fields are the signature's outputs."""
        if args:
            raise InputError(self._positional_args_message())
        settings = current_settings()
        sig = self.signature if signature is None else ensure_signature(signature)
        use_lm = _resolve_lm(lm or self.lm or settings.lm, self)
        merged = {**self.config, **config} if config else self.config
        keep_trace = inputs.pop("_trace", True)
        if "prediction" in inputs and _is_predicted_output(inputs["prediction"]):
            merged = {**merged, "prediction": inputs.pop("prediction")}
        check_inputs(input_plan(sig), inputs, warn_on_type_mismatch=settings.warn_on_type_mismatch)
        adapter = self.adapter or settings.adapter or _DEFAULT_ADAPTER
        use_demos = self.demos if demos is None else demos
        outputs, adapter_name = await self._complete(adapter, use_lm, sig, use_demos, inputs, merged)
        prediction = Prediction.from_completions(outputs, signature=sig)
        prediction._adapter = adapter_name
        record_trace_step(self, inputs, outputs[0])
        if keep_trace:
            _append_settings_trace(settings, self, inputs, prediction)
        return prediction

    async def _complete(
        self,
        adapter: Adapter,
        lm: BaseLM,
        sig: type[Signature],
        demos: Sequence[Any],
        inputs: dict[str, Any],
        config: dict[str, Any],
    ) -> tuple[list[dict[str, Any]], str]:
        """The outputs of each completion, and the name of the adapter that parsed them."""
        n = config.get("n") or 1
        if type(lm).__call__ is not _BASE_LM_CALL:
            # An LM that overrides DSPy's __call__ answers through it, as in DSPy (n included);
            # under an async call, through its own acall when it has one.
            request = _with_sampling_temperature(dict(config), lm, n)
            if not called_from_sync() and getattr(type(lm), "acall", None) is not _BASE_LM_ACALL:
                return await adapter.acall(lm, request, sig, demos, inputs), adapter.name
            return await run_in_thread(adapter, lm, request, sig, demos, inputs), adapter.name
        if n > 1:
            results = await self._complete_n(adapter, lm, sig, demos, inputs, config, n)
        else:
            results = [await adapter.acall_result(lm, sig, demos, inputs, config=config)]
        return [result.outputs for result in results], results[0].adapter

    async def _complete_n(
        self,
        adapter: Adapter,
        lm: BaseLM,
        sig: type[Signature],
        demos: Sequence[Any],
        inputs: dict[str, Any],
        config: dict[str, Any],
        n: int,
    ) -> list[AdapterResult]:
        base = _with_sampling_temperature({k: v for k, v in config.items() if k != "n"}, lm, n)
        start = base.get("rollout_id") or 0
        requests = [{**base, "rollout_id": start + i} for i in range(n)]
        if isinstance(adapter, Adapter):  # one formatted prompt, one LM call of n samples (DSPy's)
            return await adapter.acall_results(
                lm, sig, demos, inputs, configs=requests, announced={**base, "n": n}
            )
        return list(
            await asyncio.gather(
                *(adapter.acall_result(lm, sig, demos, inputs, config=request) for request in requests)
            )
        )

    def _positional_args_message(self) -> str:
        names = list(self.signature.input_fields)
        example = names[0] if names else "field"
        return (
            "Positional arguments are not allowed when calling `dspy.Predict`, must use keyword arguments "
            f"that match your signature input fields: '{', '.join(names)}'. For example: "
            f"`predict({example}=input_value, ...)`."
        )

    # -- state --------------------------------------------------------------------------------

    def predictor_state(self) -> dict[str, Any]:
        """Signature (with instructions), demos, LM settings (never a key), config and adapter name."""
        try:
            demos, config = (
                to_jsonable_python([demo.to_dict() for demo in self.demos]),
                to_jsonable_python(self.config),
            )
        except PydanticSerializationError as exc:
            raise ConfigurationError(
                f"{self!r} cannot be saved: its demos or config hold a non-JSON value ({exc})"
            ) from exc
        return {
            "signature": self.signature.dump(),
            "demos": demos,
            # Another BaseLM has no portable settings: the DSPy part of a saved file carries its state.
            "lm": self.lm.settings().model_dump(mode="json") if isinstance(self.lm, LM) else None,
            "config": config,
            "adapter": _adapter_state(self.adapter),
        }

    def load_predictor_state(
        self,
        state: Mapping[str, Any],
        *,
        lm_pool: dict[str, LM] | None = None,
        allow_modules: Collection[str] | None = None,
    ) -> None:
        """Overlay a :meth:`predictor_state` result. ``lm_pool`` shares one LM per distinct settings."""
        saved = Signature.from_dump(_required(state, "signature", Mapping), allow_modules=allow_modules)
        self.signature = _keep_own_fields(self.signature, saved)
        self.demos = [_as_example(demo) for demo in _required(state, "demos", list, [])]
        self.config = dict(_required(state, "config", Mapping, {}))
        self.lm = _lm_from_state(state.get("lm"), lm_pool if lm_pool is not None else {})
        self.adapter = _adapter_from_state(state.get("adapter"))

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """DSPy's predictor state: ``traces``, ``train``, ``demos`` (as dicts), ``signature``
        (instructions, each field's prefix and description) and ``lm`` (its state, never a key)."""
        return _dspy_state.dump_predictor_state(self, json_mode=json_mode)

    def load_state(self, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False) -> Self:
        """Lay a :meth:`dump_state` result (from dspex or DSPy) over this predictor; returns it.

        The LM state's ``api_base``, ``base_url`` and ``model_list`` are dropped (with a warning)
        unless ``allow_unsafe_lm_state=True``: pass it only for files you trust.
        """
        prepared = _dspy_state.prepare_predictor_state(
            self, state, allow_unsafe_lm_state=allow_unsafe_lm_state, log=logger
        )
        prepared.apply(self)
        return self

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """A predictor with the saved signature; the rest of the state is overlaid after."""
        return cls(Signature.from_dump(_required(node, "signature", Mapping), allow_modules=allow_modules))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature.signature_string!r})"


def _keep_own_fields(current: type[Signature], saved: type[Signature]) -> type[Signature]:
    """``current`` with ``saved``'s instructions when their fields are the same, else ``saved``.

    A dump keeps what defines a field, not every ``json_schema_extra`` key of it (such as DSPy's
    ``IS_TYPE_UNDEFINED`` mark), so loading into a predictor built with the same fields keeps that
    predictor's own field objects, as DSPy's ``load_state`` does.
    """
    try:
        same = current.dump()["fields"] == saved.dump()["fields"]
    except SignatureError:  # a type dump() cannot write: the saved signature is the safe answer
        same = False
    return current.with_instructions(saved.instructions) if same else saved


_DEFAULT_ADAPTER = ChatAdapter()
_BASE_LM_CALL = BaseLM.__call__
_BASE_LM_ACALL = BaseLM.acall


def _resolve_lm(lm: Any, predictor: Predict) -> BaseLM:
    if isinstance(lm, BaseLM):
        return lm
    if lm is None:
        raise ConfigurationError(f"No LM is loaded: {predictor!r} has no LM to call: {_NO_LM_HINT}")
    if isinstance(lm, str):
        raise ConfigurationError(
            f"LM must be an instance of `dspex.BaseLM`, not a string: use dspex.LM({lm!r}) where you "
            f"wrote {lm!r} (e.g. dspex.configure(lm=dspex.LM({lm!r})))"
        )
    raise ConfigurationError(f"LM must be an instance of `dspex.BaseLM`, not {type(lm)}.")


def _with_sampling_temperature(request: dict[str, Any], lm: BaseLM, n: int) -> dict[str, Any]:
    """``request`` with temperature 0.7 when n > 1 and the temperature is unset or at most 0.15 (DSPy's)."""
    if n > 1:
        temperature = request.get("temperature") or lm.kwargs.get("temperature")
        if temperature is None or temperature <= _LOW_TEMPERATURE:
            request["temperature"] = _N_TEMPERATURE
    return request


def _is_predicted_output(value: Any) -> bool:
    # OpenAI's "predicted outputs" request option, passed as an input the way DSPy lets it be.
    return isinstance(value, dict) and value.get("type") == "content" and "content" in value


def _append_settings_trace(
    settings: Settings, predictor: Predict, inputs: dict[str, Any], pred: Prediction
) -> None:
    """DSPy's trace: ``(predictor, inputs, prediction)`` on ``settings.trace``, oldest dropped first."""
    trace = settings.trace
    if trace is None or settings.max_trace_size <= 0:
        return
    if len(trace) >= settings.max_trace_size:
        del trace[: len(trace) - settings.max_trace_size + 1]
    trace.append((predictor, dict(inputs), pred))


def _checked_type(name: str, value: Any, expected: type) -> Any:
    if value is not None and not isinstance(value, expected):
        raise ConfigurationError(
            f"Predict({name}=...) needs a dspex.{expected.__name__}, got {type(value).__qualname__}"
        )
    return value


def _as_example(demo: Example | Mapping[str, Any]) -> Example:
    if isinstance(demo, Example):
        return demo
    if isinstance(demo, Mapping):
        return Example(demo)
    raise ConfigurationError(f"a demo must be a dspex.Example or a dict, got {type(demo).__qualname__}")


def _required(state: Mapping[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = state.get(key, default)
    if not isinstance(value, kind):
        raise ProgramLoadError(f"predictor state {key!r} is missing or not a {kind.__name__}")
    return value


def _lm_from_state(data: Any, pool: dict[str, LM]) -> LM | None:
    if data is None:
        return None
    settings = LMSettings.model_validate(data)
    key = canonical_json(settings)
    if key not in pool:
        pool[key] = LM.from_settings(settings)
    return pool[key]


def _adapter_state(adapter: Adapter | None) -> str | dict[str, Any] | None:
    """An adapter as its name, with the constructor options it was given when they are not the
    defaults (``{"name": "chat", "options": {"use_native_function_calling": true}}``), so a worker
    rebuilds the same adapter. Only plain JSON values are kept (callbacks and types are not)."""
    if adapter is None:
        return None
    options = {}
    for param in inspect.signature(type(adapter).__init__).parameters.values():
        value = getattr(adapter, param.name, param.default)
        plain = value is None or isinstance(value, bool | int | float | str)
        if plain and param.default is not param.empty and value != param.default:
            options[param.name] = value
    return {"name": adapter.name, "options": options} if options else adapter.name


def _adapter_from_state(state: Any) -> Adapter | None:
    if state is None:
        return None
    name, options = (
        (state.get("name"), state.get("options") or {}) if isinstance(state, Mapping) else (state, {})
    )
    if name not in ADAPTERS_BY_NAME:
        raise ProgramLoadError(f"unknown adapter {name!r}; known: {sorted(ADAPTERS_BY_NAME)}")
    try:
        return ADAPTERS_BY_NAME[name](**options)
    except TypeError as exc:
        raise ProgramLoadError(f"adapter {name!r}: options {options!r} do not fit it ({exc})") from exc


def serialize_object(obj: Any) -> Any:
    """A value as JSON-ready data: pydantic models dumped in JSON mode, lists/tuples/dicts walked."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [serialize_object(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(serialize_object(item) for item in obj)
    if isinstance(obj, dict):
        return {key: serialize_object(value) for key, value in obj.items()}
    return obj
