"""``Prediction``: what a module returns, its output fields plus the trace and usage of the call;
``Completions``: the several candidate outputs of one call (DSPy's ``n > 1``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from types import NotImplementedType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from dspex.errors import InputError
from dspex.lm.usage import Usage
from dspex.primitives.example import Example

if TYPE_CHECKING:
    from dspex.primitives.module import TraceStep

__all__ = ["Completions", "Prediction"]

# What Completions is built from: records (dicts, examples), or a dict of one list per field.
_Records = Sequence[Mapping[str, Any] | Example] | Mapping[str, list[Any]]

_R = TypeVar("_R")

_NO_USAGE = Usage()  # frozen: one instance serves every prediction that made no LM call
_set_slot = object.__setattr__


class Prediction(Example):
    """What a module returns: its output fields, plus the trace and usage of the call.

    >>> pred = await qa.acall(question="What is 2 + 3?")
    >>> pred.answer, pred.reasoning, pred.usage.total_tokens, [s.predictor_path for s in pred.trace]

    A prediction with a ``score`` field works as that number (as DSPy's does, for metrics that return
    feedback with the score): ``float(pred)``, ``pred + 1``, ``sum(preds)``, ``pred > 0.5``.
    Equality stays by fields.
    """

    __slots__ = ("_adapter", "_completions", "_lm_usage", "_trace", "_usage")

    _usage: Usage
    _trace: list[TraceStep] | None  # None until read or set: most predictions never get one
    _adapter: str | None
    _completions: Completions | _OneCompletion | None
    _lm_usage: dict[str, Any] | None

    def __init__(self, base: object = None, **fields: Any) -> None:
        """Copy the fields of ``base``, then apply ``fields``; a prediction as ``base`` also passes on
        its usage, trace and adapter."""
        super().__init__(base, **fields)
        if isinstance(base, Prediction):
            _set_slot(self, "_usage", base._usage)
            _set_slot(self, "_trace", list(base._trace) if base._trace else None)
            _set_slot(self, "_adapter", base._adapter)
        else:
            _set_slot(self, "_usage", _NO_USAGE)
            _set_slot(self, "_trace", None)
            _set_slot(self, "_adapter", None)
        _set_slot(self, "_completions", None)
        _set_slot(self, "_lm_usage", None)

    @classmethod
    def from_completions(cls, list_or_dict: _Records, signature: Any = None) -> Self:
        """A prediction holding every completion, its fields those of the first one.

        >>> pred = Prediction.from_completions([{"answer": "4"}, {"answer": "5"}])
        >>> pred.answer, pred.completions.answer, len(pred.completions)
        ('4', ['4', '5'], 2)
        """
        if isinstance(list_or_dict, list) and len(list_or_dict) == 1 and isinstance(list_or_dict[0], dict):
            # One completion (nearly every call): its Completions is built only if someone reads it.
            prediction = cls(list_or_dict[0])
            _set_slot(prediction, "_completions", _OneCompletion(list_or_dict[0], signature))
            return prediction
        completions = Completions(list_or_dict, signature=signature)
        prediction = cls({name: values[0] for name, values in completions.items() if values})
        _set_slot(prediction, "_completions", completions)
        return prediction

    @property
    def completions(self) -> Completions | None:
        """Every completion of the call (see :meth:`from_completions`); None for a prediction that
        was built directly."""
        pending = self._completions
        if isinstance(pending, _OneCompletion):
            built = Completions([pending.fields], signature=pending.signature)
            _set_slot(self, "_completions", built)
            return built
        return pending

    @property
    def usage(self) -> Usage:
        """Tokens, cost and LM calls of the call that produced this prediction."""
        return self._usage

    @property
    def trace(self) -> list[TraceStep]:
        """The predictor calls made by the call that produced this prediction, in order."""
        trace = self._trace
        if trace is None:
            trace = []
            _set_slot(self, "_trace", trace)
        return trace

    @property
    def adapter(self) -> str | None:
        """The adapter that parsed the LM output ("chat" or "json"), for a predictor's output."""
        return self._adapter

    def get_lm_usage(self) -> dict[str, Any] | None:
        """DSPy's per-model usage of the call, ``{"openai/gpt-4o-mini": {"prompt_tokens": ...,
        "total_tokens": ..., "prompt_tokens_details": ...}}``: set on the outermost module call's
        prediction when ``settings.track_usage`` is on (``{}`` when every answer came from the
        cache), None otherwise. :attr:`usage` is dspex's own total, always present.
        """
        return self._lm_usage

    def set_lm_usage(self, value: dict[str, Any] | None) -> None:
        """Set what :meth:`get_lm_usage` returns."""
        _set_slot(self, "_lm_usage", value)

    def __repr__(self) -> str:
        # DSPy's layout, one field a line: predictions are often long texts.
        fields = ",\n    ".join(f"{name}={value!r}" for name, value in self._store.items())
        count = len(self._completions) if isinstance(self._completions, Completions) else 1
        if count == 1:
            return f"Prediction(\n    {fields}\n)"
        omitted = f"({count - 1} completions omitted)"
        return f"Prediction(\n    {fields},\n    completions=Completions(...)\n) {omitted}"

    # -- the score as a number ----------------------------------------------------------------

    def __float__(self) -> float:
        if "score" not in self._store:
            raise InputError(f"this prediction has no 'score' field to use as a number: {self.keys()}")
        return float(self._store["score"])

    def __add__(self, other: object) -> float:
        return _with_score(self, other, lambda a, b: a + b)

    def __radd__(self, other: object) -> float:
        return _with_score(self, other, lambda a, b: b + a)

    def __truediv__(self, other: object) -> float:
        return _with_score(self, other, lambda a, b: a / b)

    def __rtruediv__(self, other: object) -> float:
        return _with_score(self, other, lambda a, b: b / a)

    def __lt__(self, other: object) -> bool:
        return _with_score(self, other, lambda a, b: a < b)

    def __le__(self, other: object) -> bool:
        return _with_score(self, other, lambda a, b: a <= b)

    def __gt__(self, other: object) -> bool:
        return _with_score(self, other, lambda a, b: a > b)

    def __ge__(self, other: object) -> bool:
        return _with_score(self, other, lambda a, b: a >= b)


def _with_score(
    prediction: Prediction, other: object, op: Callable[[float, float], _R]
) -> _R | NotImplementedType:
    # NotImplemented for anything else lets Python try the other operand, then raise TypeError.
    if isinstance(other, Prediction):
        return op(float(prediction), float(other))
    if isinstance(other, int | float):
        return op(float(prediction), other)
    return NotImplemented  # type: ignore[no-any-return]  # typeshed's NotImplementedType derives from Any


class _OneCompletion:
    """A prediction's one completion, as it came (later edits of the prediction's fields do not reach
    it): :attr:`Prediction.completions` builds the ``Completions`` on first read."""

    __slots__ = ("fields", "signature")

    def __init__(self, fields: dict[str, Any], signature: Any) -> None:
        self.fields = fields
        self.signature = signature


class Completions:
    """The candidate outputs of one call, field by field (DSPy's ``Completions``).

    >>> c = Completions([{"answer": "4"}, {"answer": "5"}])
    >>> c.answer, c["answer"], c[1].answer, len(c)
    (['4', '5'], ['4', '5'], '5', 2)

    Built from a list of records (dicts, examples) or a dict of equally long lists.
    """

    __slots__ = ("_completions", "signature")

    _completions: dict[str, list[Any]]
    signature: Any

    def __init__(self, list_or_dict: _Records, signature: Any = None) -> None:
        """Group ``list_or_dict`` by field; every field must have one value per completion."""
        self.signature = signature
        self._completions = _by_field(list_or_dict)

    def items(self) -> Iterator[tuple[str, list[Any]]]:
        """``(field, values)`` pairs, one value per completion."""
        return iter(self._completions.items())

    def __getitem__(self, key: int | str) -> Any:
        """The ``key``-th completion as a :class:`Prediction`, or all values of field ``key``."""
        if isinstance(key, int):
            if not 0 <= key < len(self):  # as DSPy: no negative indexes
                raise IndexError(f"completion index {key} out of range for {len(self)} completions")
            return Prediction({name: values[key] for name, values in self._completions.items()})
        return self._completions[key]

    def __getattr__(self, name: str) -> list[Any]:
        if not name.startswith("_") and name in self._completions:
            return self._completions[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __iter__(self) -> Iterator[Prediction]:
        return (self[index] for index in range(len(self)))

    def __len__(self) -> int:
        return len(next(iter(self._completions.values()), []))

    def __contains__(self, key: object) -> bool:
        return key in self._completions

    def __repr__(self) -> str:
        fields = ",\n    ".join(f"{name}={values!r}" for name, values in self._completions.items())
        return f"Completions(\n    {fields}\n)"

    def __str__(self) -> str:
        return repr(self)


def _by_field(list_or_dict: _Records) -> dict[str, list[Any]]:
    if isinstance(list_or_dict, Mapping):
        by_field = dict(list_or_dict)
    else:
        by_field = {}
        for record in list_or_dict:
            for name, value in record.items():
                by_field.setdefault(name, []).append(value)
    if any(not isinstance(values, list) for values in by_field.values()):
        raise InputError("Completions takes a list of records or a dict of lists (one value per completion)")
    if len({len(values) for values in by_field.values()}) > 1:
        lengths = {name: len(values) for name, values in by_field.items()}
        raise InputError(f"every field of Completions needs one value per completion; got {lengths}")
    return by_field
