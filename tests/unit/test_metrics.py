"""Built-in metrics, score normalization and metric lookup by name, spec and import path."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from dspex import metrics
from dspex.errors import MetricError, SecurityPolicyError
from dspex.metrics import MetricResult, parse_number, score_of


def pair(label: object, answer: object) -> tuple[dict[str, object], SimpleNamespace]:
    return {"answer": label}, SimpleNamespace(answer=answer)


# --------------------------------------------------------------------------- normalization / parsing


def test_normalize_text_matches_dspy() -> None:
    from dspy.evaluate.metrics import normalize_text as dspy_normalize

    for text in ["The,  Eiffel  Tower!", "An apple a day", "  ÉCOLE  normale ", "5.0", "-5", "x\ty\nz"]:
        assert metrics.normalize_text(text) == dspy_normalize(text)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("5", 5.0),
        (" 5 ", 5.0),
        ("5.0", 5.0),
        ("+5", 5.0),
        ("-5", -5.0),
        ("\u22127", -7.0),
        ("1,234", 1234.0),
        ("1e3", 1000.0),
        ("-.5", -0.5),
        ("The answer is 5.", 5.0),
        ("5 apples and 3 pears", 3.0),
        ("2 - 3 = -1", -1.0),
        ("10-5", 5.0),
        (7, 7.0),
        (2.5, 2.5),
    ],
)
def test_parse_number(text: object, number: float) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize("value", ["", "five", "v2", None, True, [1]])
def test_parse_number_none(value: object) -> None:
    assert parse_number(value) is None


# --------------------------------------------------------------------------- built-ins


def test_exact_match_normalizes() -> None:
    em = metrics.exact_match("answer")
    assert em(*pair("Eiffel Tower", "the eiffel tower!")) is True
    assert em(*pair("Paris", "Paris, France")) is False
    assert em(*pair(5, " 5 ")) is True  # non-text values compare by their text


def test_exact_match_accepts_list_of_answers() -> None:
    em = metrics.exact_match("answer")
    assert em(*pair(["Louvre", "Eiffel Tower"], "The Eiffel Tower")) is True
    assert em(*pair(["Louvre", "Orsay"], "Eiffel Tower")) is False


def test_exact_match_agrees_with_dspy() -> None:
    import dspy
    from dspy.evaluate import answer_exact_match

    em = metrics.exact_match("answer")
    for label, answer in [("Paris", "paris."), ("5", "5.0"), ("a cat", "cat"), ("x y", "y x")]:
        expected = answer_exact_match(dspy.Example(answer=label), dspy.Prediction(answer=answer))
        assert em(*pair(label, answer)) == expected


def test_f1_scores() -> None:
    score = metrics.f1("answer")
    assert score(*pair("Paris", "Eiffel Tower is in Paris")) == pytest.approx(1 / 3)
    assert score(*pair("Eiffel Tower", "the Eiffel Tower")) == 1.0
    assert score(*pair("Paris", "London")) == 0.0
    assert score(*pair(["London", "Paris"], "Paris")) == 1.0


def test_f1_empty_answers_follow_squad() -> None:
    score = metrics.f1("answer")
    assert score(*pair("", "the")) == 1.0  # both normalize to nothing
    assert score(*pair("Paris", "")) == 0.0


def test_contains_whole_words() -> None:
    has = metrics.contains("answer")
    assert has(*pair("15", "The answer is 15.")) is True
    assert has(*pair("5", "The answer is 15.")) is False
    assert has(*pair("new york", "It is New York City")) is True
    assert has(*pair("", "anything")) is False


def test_numeric_equal() -> None:
    eq = metrics.numeric_equal("answer")
    assert eq(*pair("5", "The answer is 5.0")) is True
    assert eq(*pair("5", "6")) is False
    assert eq(*pair(5, "five")) is False  # no number in the prediction: just wrong
    assert eq(*pair("-3", "-3")) is True
    assert eq(*pair("-3", "3")) is False


def test_numeric_equal_tolerance() -> None:
    assert metrics.numeric_equal("answer")(*pair("0.1", "0.1000001")) is False
    assert metrics.numeric_equal("answer", abs_tol=1e-3)(*pair("0.1", "0.1000001")) is True


def test_numeric_equal_label_not_a_number() -> None:
    with pytest.raises(MetricError, match="label 'five' is not a number"):
        metrics.numeric_equal("answer")(*pair("five", "5"))


def test_missing_field_names_the_side_and_fields() -> None:
    with pytest.raises(MetricError, match=r"prediction has no field 'answer'"):
        metrics.exact_match("answer")({"answer": "5"}, SimpleNamespace(reply="5"))
    with pytest.raises(MetricError, match=r"example has no field 'answer' \(it has: question\)"):
        metrics.exact_match("answer")({"question": "q"}, SimpleNamespace(answer="5"))


def test_bad_field_or_tolerance() -> None:
    with pytest.raises(MetricError, match="field must be a field name"):
        metrics.exact_match("not a field")
    with pytest.raises(MetricError, match="tolerances must be >= 0"):
        metrics.numeric_equal("answer", rel_tol=-1)


def test_names_specs_and_round_trip() -> None:
    built = [
        metrics.exact_match("answer"),
        metrics.f1("answer"),
        metrics.contains("text"),
        metrics.numeric_equal("answer", abs_tol=0.5),
    ]
    assert [m.name for m in built] == [
        "exact_match:answer",
        "f1:answer",
        "contains:text",
        "numeric_equal:answer",
    ]
    assert built[3].spec() == {"metric": "numeric_equal:answer", "rel_tol": 1e-9, "abs_tol": 0.5}
    for metric in built:
        assert metrics.metric_from_spec(metric.spec()) == metric
        assert metrics.resolve_metric(metric.spec()) == metric
    assert repr(built[3]) == "numeric_equal('answer', rel_tol=1e-09, abs_tol=0.5)"


# --------------------------------------------------------------------------- score_of


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, (1.0, None)),
        (False, (0.0, None)),
        (0.25, (0.25, None)),
        (1, (1.0, None)),
        (MetricResult(0.5, "half right"), (0.5, "half right")),
        ((1, "ok"), (1.0, "ok")),
        ((False, None), (0.0, None)),
        (SimpleNamespace(score=0.75, feedback="close"), (0.75, "close")),
        (SimpleNamespace(score=True), (1.0, None)),
    ],
)
def test_score_of(value: object, expected: tuple[float, str | None]) -> None:
    assert score_of(value) == expected


@pytest.mark.parametrize("value", [None, math.nan, math.inf, "1", (1, "a", "b"), ("x", "feedback")])
def test_score_of_rejects(value: object) -> None:
    with pytest.raises(MetricError):
        score_of(value)


def test_metric_result_is_a_float() -> None:
    assert float(MetricResult(0.5)) == 0.5


# --------------------------------------------------------------------------- lookup


def test_metric_from_name() -> None:
    assert metrics.metric_from_name("f1:answer") == metrics.f1("answer")


@pytest.mark.parametrize("name", ["nope:answer", "exact_match", "exact_match:"])
def test_metric_from_name_unknown_lists_known(name: str) -> None:
    with pytest.raises(MetricError, match="known metrics: contains:FIELD, exact_match:FIELD, f1:FIELD"):
        metrics.metric_from_name(name)


def test_metric_from_spec_bad_options() -> None:
    with pytest.raises(MetricError, match="does not take options"):
        metrics.metric_from_spec({"metric": "exact_match:answer", "rel_tol": 1})
    with pytest.raises(MetricError, match="needs a 'metric' name"):
        metrics.metric_from_spec({"rel_tol": 1})


@pytest.fixture
def user_module() -> Iterator[str]:
    name = "dspex_test_user_metrics"
    module = types.ModuleType(name)

    def judge(example: object, prediction: object, trace: object = None) -> float:
        return 0.5

    module.judge = judge  # type: ignore[attr-defined]
    module.NOT_CALLABLE = 3  # type: ignore[attr-defined]
    sys.modules[name] = module
    yield name
    del sys.modules[name]


def test_resolve_metric_objects_and_names(user_module: str) -> None:
    def mine(example: object, prediction: object, trace: object = None) -> bool:
        return True

    assert metrics.resolve_metric(mine) is mine
    assert metrics.resolve_metric("contains:answer") == metrics.contains("answer")
    judge = metrics.resolve_metric(f"{user_module}:judge")
    assert judge({}, {}) == 0.5
    assert metrics.metric_name(judge) == "judge"
    assert metrics.resolve_metric(f"{user_module}:judge", allow_modules=[user_module]) is judge


def test_resolve_metric_allow_list(user_module: str) -> None:
    with pytest.raises(SecurityPolicyError, match="not in the allowed modules \\(other\\)"):
        metrics.resolve_metric(f"{user_module}:judge", allow_modules=["other"])
    # a prefix of the name is not a parent package
    with pytest.raises(SecurityPolicyError):
        metrics.resolve_metric(f"{user_module}:judge", allow_modules=["dspex_test"])
    with pytest.raises(SecurityPolicyError):
        metrics.resolve_metric("os:system", allow_modules=[])


def test_resolve_metric_allow_list_takes_subpackages() -> None:
    fn = metrics.resolve_metric("dspex.metrics:score_of", allow_modules=["dspex"])
    assert fn is score_of


def test_resolve_metric_import_failures(user_module: str) -> None:
    with pytest.raises(MetricError, match=r"unknown metric 'exatc_match:answer'.*cannot be imported"):
        metrics.resolve_metric("exatc_match:answer")
    with pytest.raises(MetricError, match="'missing' not found"):
        metrics.resolve_metric(f"{user_module}:missing")
    with pytest.raises(MetricError, match="is not callable"):
        metrics.resolve_metric(f"{user_module}:NOT_CALLABLE")
    with pytest.raises(MetricError, match="must be callable"):
        metrics.resolve_metric(42)


def test_metric_name() -> None:
    def my_metric(example: object, prediction: object, trace: object = None) -> bool:
        return True

    class Judge:
        def __call__(self, example: object, prediction: object, trace: object = None) -> bool:
            return True

    assert metrics.metric_name(metrics.f1("answer")) == "f1:answer"
    assert metrics.metric_name(my_metric) == "my_metric"
    assert metrics.metric_name(Judge()) == "Judge"
    assert isinstance(Judge(), metrics.Metric)
