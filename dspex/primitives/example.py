"""``Example``: one record of named fields, some of them marked as inputs (DSPy's ``Example``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

from pydantic import BaseModel

from dspex.errors import InputError

__all__ = ["Example"]

# Fields whose names start with this are DSPy's bookkeeping (e.g. ``dspy_uuid``, ``dspy_split``):
# kept and compared, but left out of len(), keys(), values(), items() and the repr, as DSPy does.
_HIDDEN_PREFIX = "dspy_"

# Values that to_dict() returns as they are, checked first because they are nearly every value.
_SCALARS = (str, int, float, bool, type(None))

# Bound once: __init__ and the copy helpers set the slots without going through __setattr__.
_set_slot = object.__setattr__


class Example:
    """One record of named fields, some of them marked as inputs (DSPy's ``Example``).

    >>> ex = Example(question="What is 2 + 3?", answer="5").with_inputs("question")
    >>> ex.question, ex["answer"], ex.inputs().toDict(), ex.labels().toDict()
    ('What is 2 + 3?', '5', {'question': 'What is 2 + 3?'}, {'answer': '5'})
    >>> Example(base={"question": "q"}, answer="a")
    Example({'question': 'q', 'answer': 'a'}) (input_keys=None)

    Fields are read as attributes or items; two examples are equal (and hash alike) when their fields
    are. Fields named ``dspy_*`` are hidden from ``len``, ``keys``/``values``/``items`` (unless
    ``include_dspy=True``) and the repr, but are still stored, compared and found by ``in``.
    """

    # Examples are built by the thousand per Kafka task: slots keep each one to two references.
    __slots__ = ("_input_keys", "_store")

    _store: dict[str, Any]
    _input_keys: frozenset[str] | None

    def __init__(self, base: object = None, **fields: Any) -> None:
        """Copy the fields of ``base`` (an example or a mapping), then apply ``fields`` over them.

        An example given as ``base`` also passes on its input marking. ``base`` is typed ``object``
        so that ``Example(**row)`` type-checks for any row; anything but an example, a mapping or
        None is refused (DSPy would silently drop it, e.g. a field that happens to be named "base").
        """
        input_keys = None
        if base is None:  # the common case, Example(**row): the keywords dict is ours to keep
            store = fields
        else:
            if isinstance(base, Example):
                store = dict(base._store)
                input_keys = base._input_keys
            else:
                store = _fields_of(base)
            store.update(fields)
        _set_slot(self, "_store", store)
        _set_slot(self, "_input_keys", input_keys)

    # -- field access -------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails. Private and dunder names are never fields, which also
        # keeps copy/pickle from recursing before the `_store` slot is filled.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._store[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            _set_slot(self, name, value)
        elif hasattr(type(self), name):
            # Shadowing a method (ex.keys = ...) would break the object; a field of that name is fine.
            raise AttributeError(
                f"{name!r} is a {type(self).__name__} attribute; set the field as ex[{name!r}]"
            )
        else:
            self._store[name] = value

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __iter__(self) -> Iterator[str]:
        # Every field name, hidden ones too (as DSPy does), over a snapshot so the loop may edit fields.
        return iter(list(self._store))

    def __len__(self) -> int:
        return sum(1 for name in self._store if not name.startswith(_HIDDEN_PREFIX))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and self._store == other._store

    def __hash__(self) -> int:
        # By content, as DSPy does, so examples can be deduplicated in sets; a TypeError names the
        # field value that cannot be hashed (a list, a dict). Do not mutate an example held in a set.
        return hash(frozenset(self._store.items()))

    def __repr__(self) -> str:
        shown = {name: value for name, value in self._store.items() if not name.startswith(_HIDDEN_PREFIX)}
        return f"{type(self).__name__}({shown!r}) (input_keys={_keys_repr(self._input_keys)})"

    def __str__(self) -> str:
        return repr(self)

    def keys(self, include_dspy: bool = False) -> list[str]:
        """The field names, in insertion order (``dspy_*`` ones only with ``include_dspy=True``)."""
        return [name for name in self._store if include_dspy or not name.startswith(_HIDDEN_PREFIX)]

    def values(self, include_dspy: bool = False) -> list[Any]:
        """The field values, in insertion order (``dspy_*`` ones only with ``include_dspy=True``)."""
        return [
            value
            for name, value in self._store.items()
            if include_dspy or not name.startswith(_HIDDEN_PREFIX)
        ]

    def items(self, include_dspy: bool = False) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs, in insertion order (``dspy_*`` ones only with ``include_dspy=True``)."""
        return [
            item for item in self._store.items() if include_dspy or not item[0].startswith(_HIDDEN_PREFIX)
        ]

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field ``key``, or ``default``."""
        return self._store.get(key, default)

    # -- inputs and labels --------------------------------------------------------------------

    @property
    def input_keys(self) -> frozenset[str] | None:
        """The names marked as inputs by :meth:`with_inputs`, or None if never marked."""
        return self._input_keys

    def with_inputs(self, *names: str) -> Self:
        """A copy with ``names`` marked as the inputs; the other fields are labels."""
        copied = self.copy()
        _set_slot(copied, "_input_keys", frozenset(names))
        return copied

    def inputs(self) -> Self:
        """A copy holding only the input fields, still marked with the same inputs.

        Raises :class:`~dspex.errors.InputError` (a ``ValueError``) if no inputs were marked.
        """
        keys = self._marked_inputs()
        return self._subset(lambda name: name in keys, keys)

    def labels(self) -> Self:
        """A copy holding only the fields that are not inputs, with no input marking (as DSPy's).

        Raises :class:`~dspex.errors.InputError` (a ``ValueError``) if no inputs were marked.
        """
        keys = self._marked_inputs()
        return self._subset(lambda name: name not in keys, None)

    def _marked_inputs(self) -> frozenset[str]:
        if self._input_keys is None:
            raise InputError(
                f"no input fields are marked on {self!r}; call example.with_inputs('question', ...) first"
            )
        return self._input_keys

    def _subset(self, keep: Callable[[str], bool], input_keys: frozenset[str] | None) -> Self:
        subset = type(self)({name: value for name, value in self._store.items() if keep(name)})
        _set_slot(subset, "_input_keys", input_keys)
        return subset

    # -- copies -------------------------------------------------------------------------------

    def copy(self, **changes: Any) -> Self:
        """A shallow copy, with ``changes`` applied to its fields."""
        return type(self)(self, **changes)

    def without(self, *names: str) -> Self:
        """A copy without the fields ``names`` (KeyError for a field it does not have)."""
        copied = self.copy()
        for name in names:
            del copied[name]
        return copied

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, nested examples and pydantic models converted too."""
        return {name: _plain(value) for name, value in self._store.items()}

    def toDict(self) -> dict[str, Any]:
        """DSPy's spelling of :meth:`to_dict`."""
        return self.to_dict()


def _fields_of(base: object) -> dict[str, Any]:
    if isinstance(base, Mapping):
        return dict(base)
    raise InputError(
        f"Example(base=...) takes an Example or a mapping, got {type(base).__name__}; "
        "a field named 'base' must be given in the mapping: Example({'base': ...})"
    )


def _keys_repr(keys: frozenset[str] | None) -> str:
    # DSPy prints its set of input keys; sorted here so the repr is the same in every process.
    if keys is None:
        return "None"
    return "{" + ", ".join(repr(key) for key in sorted(keys)) + "}" if keys else "set()"


def _plain(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Example):
        return value.to_dict()
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if type(value) is tuple:  # a plain tuple stays one (named tuples are left as they are)
        return tuple(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    to_dict = getattr(value, "toDict", None)  # other DSPy-style records convert themselves
    return to_dict() if callable(to_dict) else value
