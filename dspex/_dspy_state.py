"""DSPy 3.4.1's saved-state format, read and written by dspex.

DSPy's ``program.save("p.json")`` writes one entry per predictor, named as ``named_parameters()``
names it, and a ``"metadata"`` entry::

    {"generate.predict": {"traces": [], "train": [], "demos": [{...}, ...],
                          "signature": {"instructions": "...",
                                        "fields": [{"prefix": "Question:", "description": "..."}, ...]},
                          "lm": {"_dspy_lm_class": "dspy.clients.lm.LM", "model": ..., ...} | null},
     "metadata": {"dependency_versions": {"python": "3.11", "dspy": "3.4.1", "cloudpickle": "3.1"}}}

A predictor's state carries what an optimizer changes (instructions, field prefixes and descriptions,
demos, the LM), not the program's structure: it is laid over a program built with the same shape.
dspex writes exactly this shape (so DSPy's ``load`` reads a dspex file) and adds its self-describing
program under :data:`PROGRAM_KEY`, which DSPy never looks up (its ``load_state`` reads only the
predictor names it has).

Loading an LM state follows DSPy's safety rule: ``api_base``, ``base_url`` and ``model_list`` are
dropped (with a warning) unless ``allow_unsafe_lm_state=True``, so a file cannot point a program's
API key at another server; a custom LM class is imported only under that flag too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from dspex.errors import ConfigurationError, DspexError, ProgramLoadError
from dspex.lm.base import BaseLM
from dspex.primitives.example import Example

if TYPE_CHECKING:
    from dspex.primitives import Module
    from dspex.primitives.module import Predictor
    from dspex.signatures import Signature

__all__ = [
    "DSPY_VERSION",
    "METADATA_KEY",
    "PROGRAM_KEY",
    "UNSAFE_LM_STATE_KEYS",
    "MissingStateError",
    "PreparedPredictor",
    "check_state_names",
    "dependency_versions",
    "dump_module_state",
    "dump_predictor_state",
    "load_module_state",
    "prepare_predictor_state",
    "state_predictors",
]

logger = logging.getLogger(__name__)
# The LM-endpoint warning is Predict's, as in DSPy (where dspy.predict.predict's logger gives it).
_PREDICT_LOGGER: Final = logging.getLogger("dspex.modules.predict")

# The DSPy release whose file format dspex writes (DSPy warns when a file's version differs from its own).
DSPY_VERSION: Final = "3.4.1"
METADATA_KEY: Final = "metadata"
# dspex's self-describing program (dspex.serialization) inside a DSPy-shaped state file.
PROGRAM_KEY: Final = "dspex_program"
# Keys that would send requests (and the key read from the environment) to another server.
UNSAFE_LM_STATE_KEYS: Final = frozenset({"api_base", "base_url", "model_list"})
_SIGNATURE_SHAPE: Final = '{"instructions": str, "fields": [{"prefix": str, "description": str}, ...]}'
# Written by DSPy up to 2.5 for ChainOfThought; DSPy 2.6+ refuses it too.
_LEGACY_KEYS: Final = ("extended_signature",)
# DSPy writes null for "the provider's default"; dspex's LM has defaults of its own for these.
_DEFAULTED_LM_KEYS: Final = ("temperature", "max_tokens")
_KNOWN_KEYS: Final = frozenset({"traces", "train", "demos", "signature", "lm", "config", "fields"})


def dependency_versions() -> dict[str, str]:
    """DSPy's ``metadata.dependency_versions``: only keys DSPy's own loader knows (it looks each up)."""
    import cloudpickle  # only for its version: saved programs are JSON or read inertly

    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "dspy": DSPY_VERSION,
        "cloudpickle": ".".join(str(cloudpickle.__version__).split(".")[:2]),
    }


def state_predictors(module: Module) -> list[tuple[str, Predictor]]:
    """The predictors a state names, under DSPy's ``named_parameters()`` names."""
    named = getattr(module, "named_parameters", None)
    if callable(named):
        return [(name, param) for name, param in named() if getattr(param, "is_predictor", False)]
    return module.named_predictors()


# -- dumping ----------------------------------------------------------------------------------------


def dump_module_state(module: Module, *, json_mode: bool = True) -> dict[str, Any]:
    """DSPy's ``Module.dump_state()``: each predictor's state by name (a predictor's own state, flat,
    for a predictor: DSPy's ``Predict`` overrides ``dump_state``, so a saved Predict is flat too)."""
    if module.is_predictor:
        return dump_predictor_state(module, json_mode=json_mode)  # type: ignore[arg-type]
    return {name: dump_predictor_state(p, json_mode=json_mode) for name, p in state_predictors(module)}


def dump_predictor_state(predictor: Predictor, *, json_mode: bool = True) -> dict[str, Any]:
    """DSPy's ``Predict.dump_state()``; ``config`` is added when the predictor has request options."""
    state: dict[str, Any] = {
        "traces": list(getattr(predictor, "traces", None) or []),
        "train": list(getattr(predictor, "train", None) or []),
        "demos": [_demo_state(demo, json_mode) for demo in predictor.demos],
        "signature": predictor.signature.dump_state(),
        "lm": _lm_state(predictor.lm),
    }
    if predictor.config:
        # DSPy's Predict has the same `config` (request options); its load_state sets it back.
        state["config"] = dict(predictor.config)
    if not json_mode:
        return state
    try:
        return dict(to_jsonable_python(state))
    except PydanticSerializationError as exc:
        raise ConfigurationError(
            f"{predictor!r} cannot be saved as JSON: its demos or config hold a non-JSON value ({exc}); "
            "save to a .pkl path instead"
        ) from exc


def _demo_state(demo: Any, json_mode: bool) -> dict[str, Any]:
    fields = demo.to_dict() if isinstance(demo, Example) else dict(demo)
    if json_mode:
        return fields
    # As DSPy: pydantic values become their JSON form even in a pickle, other values stay as they are.
    return {name: _plain_models(value) for name, value in fields.items()}


def _plain_models(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return type(value)(_plain_models(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain_models(item) for key, item in value.items()}
    return value


def _lm_state(lm: Any) -> dict[str, Any] | None:
    if lm is None:
        return None
    dump = getattr(lm, "dump_state", None)
    if not callable(dump):
        raise ConfigurationError(
            f"the LM {lm!r} has no dump_state(), so a program holding it cannot be saved"
        )
    return dict(dump())


# -- loading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedPredictor:
    """A predictor state checked and converted, ready to assign (nothing is changed before all are)."""

    signature: type[Signature]
    demos: list[Example]
    lm: BaseLM | None
    config: dict[str, Any] | None
    traces: list[Any]
    train: list[Any]

    def apply(self, predictor: Predictor) -> None:
        predictor.signature = self.signature
        predictor.demos = self.demos
        predictor.lm = self.lm
        if self.config is not None:
            predictor.config = self.config
        # DSPy's always-empty bookkeeping lists: kept only by a predictor that has them, or when set.
        for name, value in (("traces", self.traces), ("train", self.train)):
            if value or hasattr(predictor, name):
                setattr(predictor, name, value)


def load_module_state(
    module: Module,
    state: Mapping[str, Any],
    *,
    allow_unsafe_lm_state: bool = False,
    source: str = "state",
    keep_equal_lms: bool = False,
) -> None:
    """DSPy's ``Module.load_state``: every predictor's state is checked before any is assigned.

    ``keep_equal_lms``: a predictor keeps its own LM when the state's LM is that LM's own dump
    (a dspex file's DSPy part repeats the LM its program part rebuilt in full).
    """
    if not isinstance(state, Mapping):
        raise ProgramLoadError(
            f"{source}: expected a JSON object of predictor states, got {type(state).__name__}"
        )
    if module.is_predictor:
        prepare_predictor_state(
            module,  # type: ignore[arg-type]
            {key: value for key, value in state.items() if key not in (METADATA_KEY, PROGRAM_KEY)},
            allow_unsafe_lm_state=allow_unsafe_lm_state,
            where=source,
            keep_equal_lm=keep_equal_lms,
        ).apply(module)  # type: ignore[arg-type]
        return
    check_state_names(module, state, source)
    predictors = state_predictors(module)
    prepared = [
        (
            predictor,
            prepare_predictor_state(
                predictor,
                state[name],
                allow_unsafe_lm_state=allow_unsafe_lm_state,
                where=f"{source}: {name!r}",
                keep_equal_lm=keep_equal_lms,
            ),
        )
        for name, predictor in predictors
    ]
    for predictor, ready in prepared:
        ready.apply(predictor)


class MissingStateError(ProgramLoadError, KeyError):
    """A state without an entry for one of the program's predictors (a ``KeyError`` too, as DSPy's)."""

    __str__ = ProgramLoadError.__str__  # the message as written, not KeyError's quoted repr


def check_state_names(module: Module, state: Mapping[str, Any], source: str) -> None:
    """:class:`MissingStateError` unless ``state`` has an entry for every predictor of ``module``."""
    if module.is_predictor:
        return
    missing = [name for name, _ in state_predictors(module) if name not in state]
    if missing:
        saved = sorted(key for key in state if key not in (METADATA_KEY, PROGRAM_KEY))
        raise MissingStateError(
            f"{source}: no state for predictor(s) {missing} of {type(module).__qualname__}; "
            f"the file has: {saved} (was it saved from a program of another shape?)"
        )


def prepare_predictor_state(
    predictor: Predictor,
    state: Any,
    *,
    allow_unsafe_lm_state: bool = False,
    where: str = "predictor state",
    keep_equal_lm: bool = False,
    log: logging.Logger | None = None,
) -> PreparedPredictor:
    """Check and convert one DSPy predictor state for ``predictor`` (:class:`ProgramLoadError` naming
    ``where``, the field and what was expected when it does not fit)."""
    if not isinstance(state, Mapping):
        raise ProgramLoadError(f"{where}: expected a predictor state object, got {type(state).__name__}")
    for key in _LEGACY_KEYS:
        if key in state:
            raise ProgramLoadError(
                f"{where}: {key!r} is DSPy 2.5's format (DSPy 2.6+ does not load it either); "
                "re-save the program with a recent DSPy"
            )
    unknown = sorted(set(state) - _KNOWN_KEYS)
    if unknown:
        logger.warning("%s: ignoring keys this dspex does not know: %s (a newer DSPy?)", where, unknown)
    lm = _prepared_lm(predictor, state, allow_unsafe_lm_state, where, keep_equal_lm, log or _PREDICT_LOGGER)
    config = _field(state, "config", Mapping, where, "an object of request options", default=None)
    return PreparedPredictor(
        signature=_prepared_signature(
            predictor, _field(state, "signature", Mapping, where, _SIGNATURE_SHAPE), where
        ),
        demos=[_prepared_demo(demo, f"{where}: 'demos'[{i}]") for i, demo in enumerate(_demos(state, where))],
        lm=lm,
        config=None if config is None else dict(config),
        traces=list(_field(state, "traces", list, where, "a list", default=[])),
        train=list(_field(state, "train", list, where, "a list", default=[])),
    )


_REQUIRED: Final = object()


def _field(
    state: Mapping[str, Any], key: str, kind: Any, where: str, expected: str, *, default: Any = _REQUIRED
) -> Any:
    """``state[key]`` checked against ``kind``; a missing key (or null, when the default is None) gives
    ``default``, or a :class:`ProgramLoadError` naming the key and what was expected when required."""
    value = state.get(key)
    if value is None and default is not _REQUIRED and (key not in state or default is None):
        return default
    if key not in state:
        raise ProgramLoadError(f"{where}: {key!r} is missing (expected {expected})")
    if not isinstance(value, kind):
        raise ProgramLoadError(f"{where}: {key!r} is a {type(value).__name__}, expected {expected}")
    return value


def _demos(state: Mapping[str, Any], where: str) -> Sequence[Any]:
    demos: Sequence[Any] = _field(state, "demos", list | tuple, where, "a list of demo objects", default=[])
    return demos


def _prepared_demo(demo: Any, where: str) -> Example:
    if isinstance(demo, Example):
        return demo
    if isinstance(demo, Mapping):
        return Example(dict(demo))
    raise ProgramLoadError(f"{where}: a demo is a {type(demo).__name__}, expected an object of field values")


def _prepared_signature(predictor: Predictor, saved: Mapping[str, Any], where: str) -> type[Signature]:
    instructions = saved.get("instructions")
    fields = saved.get("fields")
    if not isinstance(instructions, str) or not isinstance(fields, list):
        raise ProgramLoadError(f"{where}: 'signature' does not fit, expected {_SIGNATURE_SHAPE}")
    own = list(predictor.signature.fields)
    if len(fields) != len(own):
        raise ProgramLoadError(
            f"{where}: 'signature.fields' has {len(fields)} fields, expected {len(own)} for {own} "
            "(fields are matched by position: was it saved from another program?)"
        )
    for i, item in enumerate(fields):
        if not (
            isinstance(item, Mapping)
            and isinstance(item.get("prefix"), str)
            and isinstance(item.get("description"), str)
        ):
            raise ProgramLoadError(
                f"{where}: 'signature.fields'[{i}] ({own[i]}) does not fit, expected "
                '{"prefix": str, "description": str}'
            )
    try:
        return predictor.signature.load_state(saved)
    except (DspexError, ValueError, TypeError) as exc:
        raise ProgramLoadError(f"{where}: 'signature' could not be applied ({exc})") from exc


def _prepared_lm(
    predictor: Predictor,
    state: Mapping[str, Any],
    allow_unsafe: bool,
    where: str,
    keep_equal: bool,
    log: logging.Logger,
) -> BaseLM | None:
    saved = _field(state, "lm", Mapping, where, "an LM state object or null", default=None)
    if saved is None:
        return None
    own: BaseLM | None = predictor.lm
    if keep_equal and own is not None and _lm_state(own) == dict(saved):
        return own
    sanitized, dropped = _sanitized_lm_state(saved, allow_unsafe)
    if dropped:
        log.warning(
            "Ignoring unsafe LM config key(s) during state load: %s. "
            "Pass allow_unsafe_lm_state=True to preserve these keys for trusted files.",
            dropped,
        )
    for key in _DEFAULTED_LM_KEYS:
        if key in sanitized and sanitized[key] is None:  # DSPy's "provider default": dspex's default
            del sanitized[key]
    try:
        return BaseLM.load_state(sanitized, allow_custom_lm_class=allow_unsafe)
    except (DspexError, ValueError, TypeError, ImportError) as exc:
        if dropped and isinstance(exc, ConfigurationError) and "api_base" in str(exc):
            # Without its endpoint the LM cannot be built (no default for its provider): the predictor
            # falls back to the configured LM, as DSPy's would fall back to the provider's endpoint.
            log.warning(
                "%s: the LM is not loaded without its %s (%s); the predictor uses the configured LM",
                where,
                dropped,
                exc,
            )
            return None
        raise ProgramLoadError(f"{where}: 'lm' could not be loaded: {exc}") from exc


def _sanitized_lm_state(saved: Mapping[str, Any], allow_unsafe: bool) -> tuple[dict[str, Any], list[str]]:
    if allow_unsafe:
        return dict(saved), []
    dropped = sorted(UNSAFE_LM_STATE_KEYS.intersection(saved))
    return {key: value for key, value in saved.items() if key not in UNSAFE_LM_STATE_KEYS}, dropped
