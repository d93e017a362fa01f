"""``Predict``: one LM call that turns a signature's inputs into its outputs.

    qa = Predict("question -> answer", lm=lm)
    pred = await qa.acall(question="What is 2 + 3?")            # or qa(question=...) from sync code
    pred = await qa.acall(question="...", config={"rollout_id": 1, "temperature": 0.7}, lm=other_lm)

The LM is the call's ``lm=``, else the predictor's own, else ``dspex.context``/``dspex.configure``'s;
the adapter is the predictor's own, else the settings', else a :class:`~dspex.adapters.ChatAdapter`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

from pydantic_core import PydanticSerializationError, to_jsonable_python

from dspex.adapters import Adapter, ChatAdapter, JSONAdapter
from dspex.errors import ConfigurationError, InputError, ProgramLoadError
from dspex.ids import canonical_json
from dspex.lm import LM, LMSettings
from dspex.primitives import Example, Module, Prediction, record_trace_step
from dspex.settings import current_settings
from dspex.signatures import Signature, ensure_signature

__all__ = ["ADAPTERS_BY_NAME", "Predict"]

# The adapters a saved program can name ("adapter": "chat").
ADAPTERS_BY_NAME: dict[str, type[Adapter]] = {cls.name: cls for cls in (ChatAdapter, JSONAdapter)}
_NO_LM_HINT = (
    "pass lm= to the call, give the predictor one (Predict(..., lm=dspex.LM(...)) or program.set_lm(lm)), "
    "or set a default with dspex.configure(lm=dspex.LM('openai/gpt-4o-mini')) / `with dspex.context(lm=...)`"
)


class Predict(Module):
    """A predictor: formats the signature, inputs and demos for the LM, and parses its answer.

    ``**config`` are request options for every call (``temperature``, ``rollout_id``, ``max_tokens``);
    a call's ``config={...}`` is merged over them.
    """

    is_predictor: ClassVar[bool] = True
    program_alias: ClassVar[str | None] = "dspex.Predict"

    def __init__(
        self,
        signature: str | type[Signature],
        *,
        lm: LM | None = None,
        adapter: Adapter | None = None,
        demos: Sequence[Example | Mapping[str, Any]] | None = None,
        **config: Any,
    ) -> None:
        self.signature: type[Signature] = ensure_signature(signature)
        self.lm = _checked_type("lm", lm, LM)
        self.adapter = _checked_type("adapter", adapter, Adapter)
        self.demos: list[Example] = [_as_example(demo) for demo in demos or ()]
        self.config: dict[str, Any] = dict(config)

    async def aforward(
        self,
        *args: Any,
        config: Mapping[str, Any] | None = None,
        lm: LM | None = None,
        **inputs: Any,
    ) -> Prediction:
        """Call the LM once; the result's fields are the signature's outputs."""
        self._check_inputs(args, inputs)
        settings = current_settings()
        use_lm = lm or self.lm or settings.lm
        if use_lm is None:
            raise ConfigurationError(f"{self!r} has no LM to call: {_NO_LM_HINT}")
        adapter = self.adapter or settings.adapter or _DEFAULT_ADAPTER
        demos = [dict(demo.items()) for demo in self.demos]
        merged = {**self.config, **(config or {})}
        result = await adapter.acall(use_lm, self.signature, demos, inputs, config=merged)
        prediction = Prediction(result.outputs)
        prediction._adapter = result.adapter
        record_trace_step(self, inputs, result.outputs)
        return prediction

    def _check_inputs(self, args: tuple[Any, ...], inputs: Mapping[str, Any]) -> None:
        where = f"signature {self.signature.signature_string!r}"
        if args:
            raise InputError(f"Predict takes its inputs as keywords ({where}), got {len(args)} positional")
        expected = self.signature.input_fields
        missing = [name for name in expected if name not in inputs]
        if missing:
            raise InputError(f"missing input field {missing[0]!r} for {where} (missing: {missing})")
        unknown = [name for name in inputs if name not in expected]
        if unknown:
            raise InputError(
                f"unknown input field {unknown[0]!r} for {where}; its inputs are {list(expected)}"
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
            "lm": self.lm.settings().model_dump(mode="json") if self.lm else None,
            "config": config,
            "adapter": self.adapter.name if self.adapter else None,
        }

    def load_predictor_state(
        self,
        state: Mapping[str, Any],
        *,
        lm_pool: dict[str, LM] | None = None,
        allow_modules: Collection[str] | None = None,
    ) -> None:
        """Overlay a :meth:`predictor_state` result. ``lm_pool`` shares one LM per distinct settings."""
        self.signature = Signature.from_dump(
            _required(state, "signature", Mapping), allow_modules=allow_modules
        )
        self.demos = [_as_example(demo) for demo in _required(state, "demos", list, [])]
        self.config = dict(_required(state, "config", Mapping, {}))
        self.lm = _lm_from_state(state.get("lm"), lm_pool if lm_pool is not None else {})
        self.adapter = _adapter_from_name(state.get("adapter"))

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """A predictor with the saved signature; the rest of the state is overlaid after."""
        return cls(Signature.from_dump(_required(node, "signature", Mapping), allow_modules=allow_modules))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature.signature_string!r})"


_DEFAULT_ADAPTER = ChatAdapter()


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


def _adapter_from_name(name: Any) -> Adapter | None:
    if name is None:
        return None
    if name not in ADAPTERS_BY_NAME:
        raise ProgramLoadError(f"unknown adapter {name!r}; known: {sorted(ADAPTERS_BY_NAME)}")
    return ADAPTERS_BY_NAME[name]()
