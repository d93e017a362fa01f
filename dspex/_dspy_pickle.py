"""Reading DSPy's pickles without running them: a restricted, inert unpickler.

DSPy pickles with cloudpickle: ``program.save("p.pkl")`` pickles the state (plain data and
``dspy.Example`` demos), ``program.save(dir, save_program=True)`` the whole program, where every
signature class is pickled *by value* (cloudpickle rebuilds the class, with pydantic's validators
and functions built from code objects). Loading either with :mod:`pickle` runs whatever the file
says. dspex never does:

- a state pickle may name only a fixed list of plain types (dates, sets...) and DSPy's data classes
  (``Example``, ``Prediction``); anything else, functions and code objects included, is refused;
- a program pickle is read *inertly*: every name it references other than the plain types becomes
  a stand-in (:class:`Inert`) that only records the arguments and state it is given. No class is
  built, no function made, no code object created, nothing imported. dspex then reads the
  stand-ins: DSPy's ``Predict``/``ChainOfThought``/``ReAct`` and the fields, prefixes,
  descriptions and instructions of their signature classes, and rebuilds dspex's own modules.
  Anything it does not know there (a custom module's code, a tool pickled by value) is refused.
"""

from __future__ import annotations

import datetime
import decimal
import io
import pickle
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from dspex.errors import ProgramLoadError

if TYPE_CHECKING:
    from dspex.primitives import Module

__all__ = ["Inert", "load_restricted", "program_from_dspy", "state_from_dspy_program"]

# Types a pickle may build for real: plain values whose construction runs no user code.
_PLAIN_TYPES: Final[Mapping[tuple[str, str], Any]] = {
    ("builtins", "str"): str,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("collections", "OrderedDict"): OrderedDict,
    ("datetime", "date"): datetime.date,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("uuid", "UUID"): uuid.UUID,
}
# DSPy's data classes a state pickle may hold (as stand-ins, converted to dspex's after loading).
_DSPY_DATA: Final = frozenset(
    {
        ("dspy.primitives.example", "Example"),
        ("dspy.primitives.prediction", "Prediction"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
    }
)
# cloudpickle's helpers that lay a recorded state onto a class or function it rebuilt.
_STATE_SETTERS: Final = frozenset({"_class_setstate", "_function_setstate"})


class Inert:
    """A stand-in for what a pickle names: it records what the pickle gives it and does nothing."""

    pickle_name: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        obj.items = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: ``__new__`` recorded the arguments."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: list[Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Inert:
        # The result of calling a stand-in (e.g. a class rebuilt from another call) is one too.
        return _inert_class(f"{self.pickle_name}()")(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<inert {self.pickle_name}>"


def _inert_class(name: str) -> type[Inert]:
    return type(name, (Inert,), {"pickle_name": name, "__module__": __name__})


def _record_state(target: Any, state: Any) -> Any:
    if isinstance(target, Inert):
        target.state = state
    return target


class _Unpickler(pickle.Unpickler):
    """``find_class`` answers plain types for real, everything else with stand-ins (``inert``) or
    a refusal: no name in the pickle is ever imported."""

    def __init__(self, file: Any, *, inert: bool, source: str) -> None:
        super().__init__(file)
        self._inert = inert
        self._source = source
        self._classes: dict[str, type[Inert]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_TYPES:
            return _PLAIN_TYPES[(module, name)]
        if module.startswith("cloudpickle") and name in _STATE_SETTERS and self._inert:
            return _record_state
        if self._inert or (module, name) in _DSPY_DATA:
            key = f"{module}:{name}"
            if key not in self._classes:
                self._classes[key] = _inert_class(key)
            return self._classes[key]
        raise ProgramLoadError(
            f"{self._source}: the pickle names {module}.{name}, which dspex does not load from a state "
            "pickle (only plain values and dspy.Example demos); save the state as JSON instead"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise ProgramLoadError(f"{self._source}: the pickle uses persistent ids, which dspex does not load")


def load_restricted(path: Path, *, program: bool) -> Any:
    """The data in a pickle file: a state pickle's plain data (``program=False``), or a program
    pickle's objects as :class:`Inert` stand-ins. dspex's own pickles hold plain data either way."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProgramLoadError(f"{source}: cannot read the pickle ({exc})") from exc
    try:
        data = _Unpickler(io.BytesIO(raw), inert=program, source=source).load()
    except ProgramLoadError:
        raise
    except Exception as exc:  # a corrupt pickle raises many kinds; none of it ran user code
        raise ProgramLoadError(
            f"{source}: corrupt or unsupported pickle ({type(exc).__name__}: {exc})"
        ) from exc
    return plain(data)


def plain(value: Any) -> Any:
    """``value`` with DSPy's pickled ``Example``/``Prediction`` turned into dspex ``Example``s."""
    if isinstance(value, Inert):
        example = _example_of(value)
        return value if example is None else example
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain(item) for item in value)
    return value


def _example_of(obj: Inert) -> Any:
    name = _class_name(obj)
    if name not in ("dspy.primitives.example:Example", "dspy.primitives.prediction:Prediction"):
        return None
    from dspex.primitives import Example

    state = obj.state if isinstance(obj.state, dict) else {}
    store = state.get("_store")
    if not isinstance(store, dict):
        return None
    example = Example({key: plain(value) for key, value in store.items()})
    input_keys = state.get("_input_keys")
    if isinstance(input_keys, set | frozenset | list | tuple) and input_keys:
        example = example.with_inputs(*input_keys)
    return example


def _class_name(obj: Inert) -> str:
    """The pickled class of a stand-in object (copyreg's ``_reconstructor(cls, base, state)`` included)."""
    name = type(obj).pickle_name
    if name == "copyreg:_reconstructor" and obj.args and isinstance(obj.args[0], type):
        return getattr(obj.args[0], "pickle_name", "?")
    return name


# -- DSPy programs ----------------------------------------------------------------------------------

_PREDICT: Final = "dspy.predict.predict:Predict"
_CHAIN_OF_THOUGHT: Final = "dspy.predict.chain_of_thought:ChainOfThought"
_REACT: Final = "dspy.predict.react:ReAct"
_SIGNATURE_META: Final = "dspy.signatures.signature:SignatureMeta"
_FIELD_ROLES: Final = {"input", "output"}


def _attributes(obj: Inert) -> dict[str, Any]:
    """A pickled object's attributes (its ``__dict__`` state, or the dict part of ``(dict, slots)``)."""
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | type(None)):
        state = state[0]
    if isinstance(state, dict) and isinstance(state.get("__dict__"), dict):
        state = state["__dict__"]  # a pydantic model's pickled state (dspy.Tool)
    return dict(state) if isinstance(state, dict) else {}


def state_from_dspy_program(obj: Any, *, source: str) -> dict[str, Any]:
    """DSPy's state (as ``program.dump_state()`` gives it) of a pickled DSPy program: each predictor's
    signature text, demos and LM, found by DSPy's parameter names. The program's own classes are
    never built, so a custom module's state can be read into a dspex program of the same shape."""
    if not isinstance(obj, Inert):
        raise ProgramLoadError(
            f"{source}: program.pkl does not hold a DSPy module (found {type(obj).__name__})"
        )
    if _class_name(obj) == _PREDICT:  # a Predict's state is its own, flat (as DSPy saves one)
        return _predictor_state(obj, source)
    return {
        name: _predictor_state(predict, f"{source}: {name!r}") for name, predict in _parameters(obj, "self")
    }


def _parameters(obj: Inert, path: str) -> list[tuple[str, Inert]]:
    """DSPy's ``named_parameters()`` over stand-ins: predictors by attribute path."""
    if _class_name(obj) == _PREDICT:
        return [(path, obj)]
    found: list[tuple[str, Inert]] = []
    for name, value in _attributes(obj).items():
        found += _parameters_in(value, name if path == "self" else f"{path}.{name}")
    return found


def _parameters_in(value: Any, path: str) -> list[tuple[str, Inert]]:
    if isinstance(value, Inert) and _is_module(value):
        return _parameters(value, path)
    if isinstance(value, list | tuple):
        return [
            found for i, item in enumerate(value) for found in _parameters_in(item, f"{path}[{i}]") if item
        ]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _parameters_in(item, f"{path}['{key}']")]
    return []


def _is_module(obj: Inert) -> bool:
    attributes = _attributes(obj)
    return _class_name(obj) == _PREDICT or "_compiled" in attributes or "callbacks" in attributes


def _predictor_state(predict: Inert, where: str) -> dict[str, Any]:
    attributes = _attributes(predict)
    signature = _signature_spec(attributes.get("signature"), where, types=False)
    return {
        "traces": [],
        "train": [],
        "demos": [_demo_dict(plain(demo), where) for demo in attributes.get("demos") or []],
        "signature": {
            "instructions": signature["instructions"],
            "fields": [{"prefix": f["prefix"], "description": f["desc"]} for f in signature["fields"]],
        },
        "lm": _lm_state(attributes.get("lm"), where),
        **({"config": dict(attributes["config"])} if isinstance(attributes.get("config"), dict) else {}),
    }


def _demo_dict(demo: Any, where: str) -> dict[str, Any]:
    if isinstance(demo, dict):
        return demo
    if hasattr(demo, "to_dict") and not isinstance(demo, Inert):
        return dict(demo.to_dict())
    raise ProgramLoadError(f"{where}: a demo is a {demo!r}, expected a dspy.Example or a dict")


def _lm_state(lm: Any, where: str) -> dict[str, Any] | None:
    """DSPy's LM state of a pickled ``dspy.LM``: its model, model_type and request kwargs."""
    if lm is None:
        return None
    if not isinstance(lm, Inert):
        raise ProgramLoadError(f"{where}: 'lm' is a {type(lm).__name__}, expected a pickled dspy.LM")
    attributes = _attributes(lm)
    if _class_name(lm) != "dspy.clients.lm:LM" or not isinstance(attributes.get("model"), str):
        raise ProgramLoadError(
            f"{where}: the LM is a {_class_name(lm)}, which dspex does not rebuild from a pickle; "
            "set the LM in code (program.set_lm(lm))"
        )
    kwargs = attributes.get("kwargs")
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    state: dict[str, Any] = {
        "_dspy_lm_class": "dspy.clients.lm.LM",
        "model": attributes["model"],
        "model_type": attributes.get("model_type", "chat"),
        "cache": attributes.get("cache", True),
        "num_retries": attributes.get("num_retries", 3),
    }
    state.update({key: value for key, value in kwargs.items() if _is_plain(value)})
    return state


def _is_plain(value: Any) -> bool:
    if isinstance(value, str | int | float | bool | type(None)):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


def _signature_spec(signature: Any, where: str, *, types: bool = True) -> dict[str, Any]:
    """Instructions and fields (name, role, type, prefix, desc) of a pickled DSPy signature class."""
    if not isinstance(signature, Inert) or not signature.args:
        raise ProgramLoadError(f"{where}: 'signature' is not a pickled DSPy signature class")
    meta = signature.args[0]
    if getattr(meta, "pickle_name", None) != _SIGNATURE_META:
        raise ProgramLoadError(
            f"{where}: 'signature' is a {getattr(meta, 'pickle_name', meta)!r}, expected a DSPy Signature"
        )
    class_dict = signature.state[0] if isinstance(signature.state, tuple) and signature.state else {}
    fields = class_dict.get("__pydantic_fields__") if isinstance(class_dict, dict) else None
    instructions = class_dict.get("__doc__") if isinstance(class_dict, dict) else None
    if not isinstance(fields, dict) or not isinstance(instructions, str):
        raise ProgramLoadError(
            f"{where}: the pickled signature class has no fields or instructions (a DSPy version dspex does "
            "not know?); save the program's state as JSON with DSPy (program.save('p.json')) instead"
        )
    return {
        "instructions": instructions,
        "fields": [_field_spec(n, f, where, types) for n, f in fields.items()],
    }


def _field_spec(name: str, field: Any, where: str, types: bool) -> dict[str, Any]:
    info = _attributes(field) if isinstance(field, Inert) else {}
    if not info and isinstance(field, Inert) and isinstance(field.state, tuple) and len(field.state) == 2:
        info = field.state[1] if isinstance(field.state[1], dict) else {}
    extra = info.get("json_schema_extra")
    if not isinstance(extra, dict) or extra.get("__dspy_field_type") not in _FIELD_ROLES:
        raise ProgramLoadError(f"{where}: signature field {name!r} is not a DSPy InputField/OutputField")
    return {
        "name": name,
        "role": extra["__dspy_field_type"],
        "type": _type_text(info.get("annotation"), name, where) if types else "str",
        "prefix": str(extra.get("prefix", "")),
        "desc": str(extra.get("desc", "")),
    }


def _type_text(annotation: Any, name: str, where: str) -> str:
    text = _annotation_text(annotation)
    if text is None:
        raise ProgramLoadError(
            f"{where}: signature field {name!r} has a type dspex cannot read from a pickle "
            f"({getattr(annotation, 'pickle_name', annotation)!r}); save the state as JSON with DSPy "
            "(program.save('p.json')) and load it into a dspex program built in code"
        )
    return text


def _annotation_text(annotation: Any) -> str | None:
    """The type text of a pickled annotation: builtins, ``list[...]``/``dict[...]``, ``Literal[...]``,
    ``Optional[...]``; None for anything else (a user's class, pickled by value or reference)."""
    if annotation in (str, int, float, bool, bytes, list, dict, tuple, set):
        return str(annotation.__name__)
    if isinstance(annotation, type) and issubclass(annotation, Inert):
        return _TYPING_NAMES.get(annotation.pickle_name)
    if not isinstance(annotation, Inert) or len(annotation.args) != 2:
        return None
    kind = _class_name(annotation)
    origin, params = annotation.args
    if kind not in ("_operator:getitem", "types:GenericAlias"):
        return None
    head = _annotation_text(origin)
    items = params if isinstance(params, tuple) else (params,)
    if head == "Literal":
        if not all(isinstance(item, str | int | bool) for item in items):
            return None
        return f"Literal[{', '.join(repr(item) for item in items)}]"
    inner = [_annotation_text(item) for item in items]
    if head is None or any(text is None for text in inner):
        return None
    return f"{head}[{', '.join(t for t in inner if t is not None)}]"


_TYPING_NAMES: Final = {
    "typing:Literal": "Literal",
    "typing:Optional": "Optional",
    "typing:Union": "Union",
    "typing:List": "list",
    "typing:Dict": "dict",
    "typing:Any": "Any",
}


def program_from_dspy(obj: Any, *, source: str, allow_modules: Collection[str] | None = None) -> Module:
    """A dspex program rebuilt from a pickled DSPy ``Predict``, ``ChainOfThought`` or ``ReAct``."""
    if not isinstance(obj, Inert):
        raise ProgramLoadError(
            f"{source}: program.pkl does not hold a DSPy module (found {type(obj).__name__})"
        )
    name = _class_name(obj)
    build = _BUILDERS.get(name)
    if build is None:
        raise ProgramLoadError(
            f"{source}: the pickled program is a {name}; dspex rebuilds only DSPy's "
            f"{sorted(_BUILDERS)} from a pickle (a custom module's code is never loaded). Build the "
            "program in dspex and load the state into it: program.load(path, allow_pickle=True)"
        )
    program = build(obj, source, allow_modules)
    from dspex._dspy_state import load_module_state

    load_module_state(program, state_from_dspy_program(obj, source=source), source=source)
    return program


def _signature_of(spec: Mapping[str, Any], *, skip: Collection[str] = ()) -> Any:
    from dspex.signatures import Signature

    fields = [{**field, "constraints": {}} for field in spec["fields"] if field["name"] not in skip]
    return Signature.from_dump({"instructions": spec["instructions"], "fields": fields})


def _build_predict(obj: Inert, source: str, allow_modules: Collection[str] | None) -> Module:
    from dspex.modules import Predict

    spec = _signature_spec(_attributes(obj).get("signature"), f"{source}: 'self'")
    return Predict(_signature_of(spec))


def _build_chain_of_thought(obj: Inert, source: str, allow_modules: Collection[str] | None) -> Module:
    from dspex.modules import ChainOfThought

    inner = _attributes(obj).get("predict")
    if not isinstance(inner, Inert):
        raise ProgramLoadError(f"{source}: the pickled ChainOfThought has no 'predict'")
    spec = _signature_spec(_attributes(inner).get("signature"), f"{source}: 'predict'")
    return ChainOfThought(_signature_of(spec, skip=("reasoning",)))


def _build_react(obj: Inert, source: str, allow_modules: Collection[str] | None) -> Module:
    from dspex.modules import ReAct
    from dspex.serialization import import_object

    attributes = _attributes(obj)
    spec = _signature_spec(attributes.get("signature"), f"{source}: 'signature'")
    tools = []
    for tool_name, tool in (attributes.get("tools") or {}).items():
        if tool_name == "finish":
            continue
        func = _attributes(tool).get("func") if isinstance(tool, Inert) else None
        if not (isinstance(func, type) and issubclass(func, Inert) and ":" in func.pickle_name):
            # By reference, cloudpickle names a module-level function (a stand-in class here);
            # anything else is its code, pickled by value.
            raise ProgramLoadError(
                f"{source}: ReAct tool {tool_name!r} was pickled by value (its code), which dspex never "
                "loads; define it in an importable module, or build the ReAct in dspex and load the state "
                "into it: program.load(path, allow_pickle=True)"
            )
        tools.append(
            import_object(func.pickle_name, allow_modules=allow_modules, what=f"ReAct tool {tool_name!r}")
        )
    max_iters = attributes.get("max_iters", 10)
    return ReAct(_signature_of(spec), tools=tools, max_iters=max_iters if isinstance(max_iters, int) else 10)


_BUILDERS: Final[dict[str, Callable[[Inert, str, Collection[str] | None], Module]]] = {
    _PREDICT: _build_predict,
    _CHAIN_OF_THOUGHT: _build_chain_of_thought,
    _REACT: _build_react,
}
