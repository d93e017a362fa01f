"""Metrics: ``metric(example, prediction, trace=None)`` returning a bool, a number or a MetricResult.

A metric is any callable with that signature. It may return

- a ``bool`` (``True`` counts 1.0) or a real number (usually in [0, 1]);
- a :class:`MetricResult` ``(score, feedback)``, or a plain ``(score, feedback)`` tuple, for optimizers
  that learn from textual feedback (DSPy's GEPA style); ``feedback`` may be ``None``;
- any object with a ``score`` attribute (and optionally ``feedback``), such as a prediction.

:func:`score_of` turns any of those into ``(float, feedback)``; ``None``, NaN and infinities are errors.

The built-in metrics compare one field of the prediction with the same field of the example. The
label may also be a list of acceptable answers (any match counts, as in DSPy). Each has a ``name``
(``"exact_match:answer"``) and a JSON-able :meth:`~FieldMetric.spec` so that a job can carry it to a
worker, where :func:`resolve_metric` / :func:`metric_from_spec` rebuild it::

    from dspex import metrics
    m = metrics.exact_match("answer")
    m(example, prediction)                      # True / False
    metrics.resolve_metric("f1:answer")         # by name
    metrics.resolve_metric("mypkg.metrics:judge", allow_modules=["mypkg"])   # by import path

Text normalization (exact_match, f1, contains) is DSPy's ``normalize_text``: Unicode NFD, lower case,
punctuation removed, the articles "a", "an", "the" removed, whitespace collapsed. Scores therefore match
DSPy's ``answer_exact_match``; note that punctuation removal makes "-5" equal "5" and "5.0" equal "50" —
use :func:`numeric_equal` for numbers.
"""

from __future__ import annotations

import importlib
import math
import numbers
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, runtime_checkable

from dspex.errors import MetricError, SecurityPolicyError

if TYPE_CHECKING:
    from dspex.primitives import Example, Prediction

__all__ = [
    "F1",
    "Contains",
    "ExactMatch",
    "FieldMetric",
    "Metric",
    "MetricLike",
    "MetricResult",
    "MetricValue",
    "NumericEqual",
    "TraceMetric",
    "contains",
    "exact_match",
    "f1",
    "metric_from_name",
    "metric_from_spec",
    "metric_name",
    "normalize_text",
    "numeric_equal",
    "parse_number",
    "resolve_metric",
    "score_of",
]


@dataclass(frozen=True, slots=True)
class MetricResult:
    """A score with optional textual feedback (what was wrong, for feedback-driven optimizers)."""

    score: float
    feedback: str | None = None

    def __float__(self) -> float:
        return float(self.score)


MetricValue: TypeAlias = bool | float | MetricResult | tuple[float, str | None]


@runtime_checkable
class Metric(Protocol):
    """A metric as Evaluate and the scorer call it: ``metric(example, prediction)``.

    Any function ``def metric(example, pred, trace=None)`` is one (parameter names are free; an
    ``async def`` too, and a Module such as ``SemanticF1``). It returns a bool, a number, a
    :class:`MetricResult`, a ``(score, feedback)`` pair or a Prediction with a ``score``.
    """

    def __call__(
        self, example: Example, prediction: Prediction, /
    ) -> MetricValue | Prediction | Awaitable[MetricValue | Prediction]: ...


@runtime_checkable
class TraceMetric(Protocol):
    """A metric as the bootstrapping optimizers call it: ``metric(example, prediction, trace)``, where
    ``trace`` holds the run's predictor steps when demos are bootstrapped (a metric may be stricter
    then), and ``metric(example, prediction)`` when they evaluate. ``def metric(example, pred,
    trace=None)`` is one; a two-parameter function is only a :class:`Metric`."""

    def __call__(
        self, example: Example, prediction: Prediction, trace: Any = None, /
    ) -> MetricValue | Prediction | Awaitable[MetricValue | Prediction]: ...


MetricLike: TypeAlias = Metric | str | Mapping[str, Any]
"""What :func:`resolve_metric` takes: a metric, a built-in's name or an import path, or a built-in's spec."""


# --------------------------------------------------------------------------- scores


def score_of(result: Any) -> tuple[float, str | None]:
    """Normalize what a metric returned into ``(score, feedback)``.

    >>> score_of(True), score_of(0.5), score_of((1, "ok")), score_of(MetricResult(0.0, "wrong"))
    ((1.0, None), (0.5, None), (1.0, 'ok'), (0.0, 'wrong'))
    """
    if isinstance(result, MetricResult):
        return _finite(result.score), result.feedback
    if isinstance(result, tuple | list):
        return _score_and_feedback_pair(result)
    if isinstance(result, bool | numbers.Real):
        return _finite(result), None
    if result is not None and hasattr(result, "score"):
        feedback = getattr(result, "feedback", None)
        return _finite(result.score), None if feedback is None else str(feedback)
    raise MetricError(
        f"a metric returned {result!r} ({type(result).__name__}); return a bool, a number, "
        "a MetricResult(score, feedback) or a (score, feedback) tuple"
    )


def _score_and_feedback_pair(result: tuple[Any, ...] | list[Any]) -> tuple[float, str | None]:
    if len(result) != 2:
        raise MetricError(f"a metric returned a sequence of {len(result)} items; expected (score, feedback)")
    score, feedback = result
    return _finite(score), None if feedback is None else str(feedback)


def _finite(value: Any) -> float:
    if not isinstance(value, bool | numbers.Real):
        raise MetricError(f"a metric score must be a bool or a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise MetricError(f"a metric score must be finite, got {number!r}")
    return number


def metric_name(metric: Any) -> str:
    """A display name: the metric's ``name``, else its function or class name."""
    name = getattr(metric, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(getattr(metric, "__name__", None) or type(metric).__name__)


# --------------------------------------------------------------------------- text helpers


def normalize_text(text: str) -> str:
    """DSPy's normalization: NFD, lower case, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFD", text).lower()
    text = text.translate(_NO_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# A number not glued to a preceding word or digit ("10-5" reads as 10 and 5, not 10 and -5);
# thousands separators ("1,234"), decimals and exponents allowed.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(value: Any) -> float | None:
    """The number a value means: numbers as is; in text, the LAST number written.

    "5", " 5 ", "5.0", "+5", "1,234" and "The answer is 5." all parse; "5 apples and 3 pears" gives 3
    (answers usually end with the result); text with no number gives ``None``. Booleans are not numbers.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if not isinstance(value, str):
        return None
    found = _NUMBER.findall(value.replace("\u2212", "-"))
    if not found:
        return None
    return float(found[-1].replace(",", ""))


def _token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize_text(prediction).split(), normalize_text(reference).split()
    if not predicted or not expected:
        # SQuAD v2's rule: two empty answers agree; one empty answer agrees with nothing.
        return float(predicted == expected)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- built-in metrics


class FieldMetric:
    """Base of the built-ins: compares ``prediction.<field>`` with ``example.<field>``."""

    kind: ClassVar[str]

    def __init__(self, field: str) -> None:
        if not isinstance(field, str) or not field.isidentifier():
            raise MetricError(f"{self.kind}: field must be a field name, got {field!r}")
        self.field = field

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.field}"

    def spec(self) -> dict[str, Any]:
        """A JSON-able description a worker rebuilds the metric from (:func:`metric_from_spec`)."""
        return {"metric": self.name, **self._options()}

    def _options(self) -> dict[str, Any]:
        return {}

    def __call__(self, example: Any, prediction: Any, trace: Any = None) -> bool | float:
        references = _references(_field_value(example, self.field, "example", self.name))
        predicted = _field_value(prediction, self.field, "prediction", self.name)
        return max(self.compare(predicted, reference) for reference in references)

    def compare(self, predicted: Any, reference: Any) -> bool | float:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.spec() == self.spec()

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self._options().items())
        return f"{self.kind}({self.field!r}{options})"


class ExactMatch(FieldMetric):
    """True when the normalized texts are equal (DSPy's ``answer_exact_match``)."""

    kind = "exact_match"

    def compare(self, predicted: Any, reference: Any) -> bool:
        return normalize_text(_text(predicted)) == normalize_text(_text(reference))


class F1(FieldMetric):
    """SQuAD-style token F1 over normalized text, in [0, 1]."""

    kind = "f1"

    def compare(self, predicted: Any, reference: Any) -> float:
        return _token_f1(_text(predicted), _text(reference))


class Contains(FieldMetric):
    """True when the normalized reference appears in the normalized prediction as whole words.

    "The answer is 15" contains "15" but not "5"; an empty reference is contained only in an empty answer.
    """

    kind = "contains"

    def compare(self, predicted: Any, reference: Any) -> bool:
        haystack, needle = normalize_text(_text(predicted)), normalize_text(_text(reference))
        if not needle:
            return not haystack
        return f" {needle} " in f" {haystack} "


class NumericEqual(FieldMetric):
    """True when the numbers are equal within tolerance (``math.isclose``); see :func:`parse_number`.

    A prediction with no number scores False; a label with no number is a :class:`MetricError`.
    """

    kind = "numeric_equal"

    def __init__(self, field: str, *, rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> None:
        super().__init__(field)
        if not (rel_tol >= 0 and abs_tol >= 0):
            raise MetricError(
                f"{self.kind}: tolerances must be >= 0, got rel_tol={rel_tol}, abs_tol={abs_tol}"
            )
        self.rel_tol, self.abs_tol = float(rel_tol), float(abs_tol)

    def _options(self) -> dict[str, Any]:
        return {"rel_tol": self.rel_tol, "abs_tol": self.abs_tol}

    def compare(self, predicted: Any, reference: Any) -> bool:
        expected = parse_number(reference)
        if expected is None:
            raise MetricError(f"{self.name}: the example's label {reference!r} is not a number")
        got = parse_number(predicted)
        return got is not None and math.isclose(got, expected, rel_tol=self.rel_tol, abs_tol=self.abs_tol)


def exact_match(field: str) -> ExactMatch:
    """Normalized exact match on ``field``: ``exact_match("answer")``."""
    return ExactMatch(field)


def f1(field: str) -> F1:
    """Normalized-text token F1 on ``field``."""
    return F1(field)


def contains(field: str) -> Contains:
    """Whole-word containment of the label in the prediction's ``field``."""
    return Contains(field)


def numeric_equal(field: str, *, rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> NumericEqual:
    """Numeric equality on ``field`` within ``math.isclose`` tolerances."""
    return NumericEqual(field, rel_tol=rel_tol, abs_tol=abs_tol)


_BUILTINS: dict[str, type[FieldMetric]] = {cls.kind: cls for cls in (ExactMatch, F1, Contains, NumericEqual)}


def _field_value(obj: Any, field: str, side: str, metric: str) -> Any:
    if isinstance(obj, Mapping):
        if field in obj:
            return obj[field]
    else:
        value = getattr(obj, field, _MISSING)
        if value is not _MISSING:
            return value
    raise MetricError(f"{metric}: the {side} has no field {field!r} (it has: {_field_names(obj)})")


_MISSING = object()


def _field_names(obj: Any) -> str:
    keys = getattr(obj, "keys", None)
    names = list(keys()) if callable(keys) else []
    return ", ".join(map(str, names)) or "no fields"


def _references(label: Any) -> list[Any]:
    if isinstance(label, list | tuple):
        if not label:
            raise MetricError("an example's label is an empty list of acceptable answers")
        return list(label)
    return [label]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# --------------------------------------------------------------------------- lookup


def _known_names() -> str:
    return ", ".join(f"{kind}:FIELD" for kind in sorted(_BUILTINS))


def metric_from_name(name: str) -> FieldMetric:
    """Build a built-in metric from its name, ``"KIND:FIELD"`` (e.g. ``"exact_match:answer"``)."""
    kind, sep, field = name.partition(":") if isinstance(name, str) else ("", "", "")
    if not sep or not field:
        raise MetricError(f"metric name {name!r} must look like KIND:FIELD; known metrics: {_known_names()}")
    cls = _BUILTINS.get(kind)
    if cls is None:
        raise MetricError(f"unknown metric {name!r}; known metrics: {_known_names()}")
    return cls(field)


def metric_from_spec(spec: str | Mapping[str, Any]) -> FieldMetric:
    """Rebuild a built-in metric from :meth:`FieldMetric.spec` (or from its name)."""
    if isinstance(spec, str):
        return metric_from_name(spec)
    options = dict(spec)
    name = options.pop("metric", None)
    if not isinstance(name, str):
        raise MetricError(f"a metric spec needs a 'metric' name, got {spec!r}")
    metric = metric_from_name(name)
    if not options:
        return metric
    try:
        return type(metric)(metric.field, **options)
    except TypeError as exc:
        raise MetricError(f"metric {name!r} does not take options {sorted(options)}") from exc


def resolve_metric(metric: MetricLike, *, allow_modules: Collection[str] | None = None) -> Callable[..., Any]:
    """A callable metric from a metric object, a spec, a built-in name or an import path.

    ``"exact_match:answer"`` names a built-in; ``"pkg.mod:func"`` (any name whose left part is not a
    built-in kind) is imported. With ``allow_modules`` given, only modules equal to or inside one of them
    may be imported (:class:`SecurityPolicyError` otherwise); ``None`` means no restriction.
    """
    if isinstance(metric, Mapping):
        return metric_from_spec(metric)
    if not isinstance(metric, str):
        if not callable(metric):
            raise MetricError(f"a metric must be callable, a name or an import path, got {metric!r}")
        checked: Callable[..., Any] = metric
        return checked
    module, sep, attribute = metric.partition(":")
    if module in _BUILTINS or not sep:
        return metric_from_name(metric)
    return _import_metric(metric, module, attribute, allow_modules)


def _import_metric(
    spec: str, module_name: str, attribute: str, allow_modules: Collection[str] | None
) -> Callable[..., Any]:
    if allow_modules is not None and not _module_allowed(module_name, allow_modules):
        raise SecurityPolicyError(
            f"metric {spec!r} is not a built-in ({_known_names()}) and module {module_name!r} is not "
            f"in the allowed modules ({', '.join(sorted(allow_modules)) or 'none'})"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MetricError(
            f"unknown metric {spec!r}: not a built-in ({_known_names()}) and module "
            f"{module_name!r} cannot be imported ({exc})"
        ) from exc
    target = _walk_attributes(target, attribute, spec)
    if not callable(target):
        raise MetricError(f"metric {spec!r} is not callable ({type(target).__name__})")
    function: Callable[..., Any] = target
    return function


def _walk_attributes(target: Any, dotted: str, spec: str) -> Any:
    for part in dotted.split("."):
        if not part.isidentifier():
            raise MetricError(f"metric import path {spec!r} must look like pkg.module:function")
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise MetricError(f"metric {spec!r}: {part!r} not found") from exc
    return target


def _module_allowed(module_name: str, allowed: Iterable[str]) -> bool:
    return any(module_name == root or module_name.startswith(root + ".") for root in allowed)
