"""The gepa adapter's DSPy-shaped entry points: the batch builder's keywords, empty batches."""

from __future__ import annotations

from typing import Any

import pytest
from gepa_fakes import feedback_metric

from dspex.modules import Predict
from dspex.optimizers import bootstrap_trace
from dspex.optimizers.gepa.adapter import DspyAdapter
from dspex.primitives import Prediction


def make(**kwargs: Any) -> DspyAdapter:
    return DspyAdapter(Predict("question -> answer"), feedback_metric, {}, failure_score=-1.0, **kwargs)


def test_evaluation_batch_from_outputs_and_raw_scores() -> None:
    batch = make()._make_evaluation_batch(
        outputs=["a", None, "c"],
        raw_scores=[Prediction(score=0.9, objective_scores={"speed": 0.3}), None, 0.4],
        trajectories=None,
    )
    assert batch.outputs == ["a", None, "c"]
    assert batch.scores == [0.9, -1.0, 0.4]  # the failed run gets failure_score
    assert batch.objective_scores == [{"speed": 0.3}, {}, {}]
    assert batch.trajectories is None


def test_evaluation_batch_without_objectives_has_none() -> None:
    batch = make()._make_evaluation_batch(outputs=[1, 2], raw_scores=[1.0, 0.0], trajectories=[])
    assert batch.objective_scores is None
    assert batch.trajectories == []


@pytest.mark.parametrize(
    ("minibatch", "expected"),
    [(None, {"metric_key": "eval_full"}), (3, {"disable_logging": True})],
)
def test_an_empty_traced_batch_still_reaches_the_trace_run(
    monkeypatch: pytest.MonkeyPatch, minibatch: int | None, expected: dict[str, Any]
) -> None:
    seen: list[dict[str, Any]] = []

    def recorder(**kwargs: Any) -> list[Any]:
        seen.append(kwargs)
        return []

    monkeypatch.setattr(bootstrap_trace, "bootstrap_trace_data", recorder)
    result = make(reflection_minibatch_size=minibatch).evaluate([], {}, capture_traces=True)
    assert [call["callback_metadata"] for call in seen] == [expected]
    assert [call["display_progress"] for call in seen] == [False]  # no bar per minibatch
    assert result.scores == [] and result.trajectories == []


def test_an_empty_untraced_batch_sends_nothing() -> None:
    class NeverRun:
        remote = False

        async def run(self, program: Any, batch: Any) -> Any:
            raise AssertionError("an empty batch must not reach the executor")

    result = make(executor=NeverRun()).evaluate([], {})  # type: ignore[arg-type]
    assert result.outputs == [] and result.scores == []
