"""The gepa adapter alone: evaluation (executor and traced), batch evaluation, reflective datasets."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

from gepa import EvaluationBatch
from gepa_fakes import MAGIC, ScriptedLM, dataset, feedback_metric

from dspex.configuration import context, current_settings
from dspex.modules import Predict
from dspex.optimizers.gepa.adapter import DspyAdapter, RunMemo, RunRecord, split_bound
from dspex.primitives import Prediction


def adapter(**kwargs: Any) -> DspyAdapter:
    return DspyAdapter(Predict("question -> answer"), feedback_metric, {}, **kwargs)


def test_build_program_sets_instructions_on_a_copy() -> None:
    a = adapter()
    program = a.build_program({"self": f"Say {MAGIC}."})
    assert program.signature.instructions == f"Say {MAGIC}."
    assert a.student.signature.instructions != program.signature.instructions


def test_evaluate_scores_in_batch_order_with_and_without_traces() -> None:
    a = adapter(num_threads=4)
    batch = dataset(5)
    with context(lm=ScriptedLM()):
        plain = a.evaluate(batch, {"self": f"Say {MAGIC}."})
        traced = a.evaluate(batch, {"self": "No word."}, capture_traces=True)
    assert plain.scores == [1.0] * 5 and plain.trajectories is None
    assert [o.answer for o in plain.outputs] == [str(i + 1) for i in range(5)]
    assert traced.scores == [0.0] * 5 and traced.trajectories is not None
    assert [t["example_ind"] for t in traced.trajectories] == list(range(5))
    assert all(t["score"]["score"] == 0.0 for t in traced.trajectories)


def test_reflective_dataset_carries_the_predictor_feedback() -> None:
    a = adapter()
    with context(lm=ScriptedLM()):
        traced = a.evaluate(dataset(2), {"self": "No word."}, capture_traces=True)
    records = a.make_reflective_dataset({"self": "No word."}, traced, ["self"])["self"]
    assert records[0]["Inputs"] == {"question": "What is 0 + 1?"}
    assert records[0]["Generated Outputs"] == {"answer": "0"}
    assert f"the magic word is {MAGIC}" in records[0]["Feedback"]


def test_batch_evaluate_runs_pairs_together_and_splits_the_bound() -> None:
    a = adapter(num_threads=5)
    barrier = threading.Barrier(2)
    calls: list[tuple[int | None, bool]] = []
    lm = ScriptedLM()

    def evaluate(
        batch: Any, candidate: Any, capture_traces: bool = False, num_threads: int | None = None
    ) -> Any:
        barrier.wait(timeout=5)  # both pairs are in flight at once
        calls.append((num_threads, capture_traces))
        return EvaluationBatch(outputs=[current_settings().lm], scores=[1.0])

    a.evaluate = evaluate  # type: ignore[method-assign]
    with context(lm=lm):
        results = a.batch_evaluate([({"self": "a"}, []), ({"self": "b"}, [])])
    assert [r.outputs[0] for r in results] == [lm, lm]  # the caller's context reached each thread
    assert sorted(calls) == [(2, True), (3, True)]


def test_batch_evaluate_gives_each_pair_the_runs_it_makes_when_they_fit() -> None:
    # an even split (4 and 4 of 8) would run the 6-example batch in two round trips
    a = adapter(num_threads=8)
    calls: list[tuple[int, int | None]] = []

    def evaluate(
        batch: Any, candidate: Any, capture_traces: bool = False, num_threads: int | None = None
    ) -> Any:
        calls.append((len(batch), num_threads))
        return EvaluationBatch(outputs=[None] * len(batch), scores=[1.0] * len(batch))

    a.evaluate = evaluate  # type: ignore[method-assign]
    a.batch_evaluate([({"self": "a"}, dataset(6)), ({"self": "b"}, dataset(1))])
    assert sorted(calls) == [(1, 1), (6, 7)]


def test_split_bound_serves_small_demands_and_shares_the_rest() -> None:
    assert split_bound(64, [26, 3, 3])[0] >= 26  # a valset beside two minibatches: one round trip
    assert split_bound(10, [100, 1]) == [9, 1]
    assert split_bound(9, [20, 20, 2]) == [3, 4, 2] or split_bound(9, [20, 20, 2]) == [4, 3, 2]
    assert split_bound(3, [5, 5, 5, 5]) == [1, 1, 1, 1]  # more pairs than the bound: one run each
    for total, demands in [(64, [26, 3, 3]), (5, [0, 0]), (44, [24, 24, 3]), (7, [1, 2, 30])]:
        shares = split_bound(total, demands)
        assert sum(shares) == total and min(shares) >= 1


def test_runs_in_the_memo_are_not_counted_in_a_pairs_share() -> None:
    memo = RunMemo()
    a = adapter(num_threads=4, memo=memo)
    batch = dataset(3)
    for example in batch[:2]:
        memo.store({"self": "a"}, example, RunRecord("out", 1.0, None))
    assert a._runs_to_make({"self": "a"}, batch, False) == 1
    assert a._runs_to_make({"self": "a"}, batch, True) == 3  # kept without traces: made again


def test_adapter_state_survives_json() -> None:
    a = adapter(rng=random.Random(7))
    state = json.loads(json.dumps(a.get_adapter_state()))
    expected = a.rng.random()
    a.rng.random()
    a.set_adapter_state(state)
    assert a.rng.random() == expected


def test_objective_scores_are_forwarded_only_when_present() -> None:
    a = adapter()
    runs = [
        RunRecord(None, Prediction(score=0.5, objective_scores={"x": 1.0}), None),
        RunRecord(None, 0.25, None),
    ]
    batch = a._batch_of_runs(runs, False)
    assert batch.scores == [0.5, 0.25] and batch.objective_scores == [{"x": 1.0}, {}]
    assert a._batch_of_runs([RunRecord(None, None, None)], False).scores == [0.0]
    assert a._batch_of_runs([RunRecord(None, 1.0, None)], False).objective_scores is None
