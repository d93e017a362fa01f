"""Evaluation results through Kafka hold outputs of the signature's declared types, as local
``Evaluate``'s do (issue 19): numbers, lists, literals and pydantic models (here
``dspex.History``: the shared predictors import types from ``dspex`` only) travel as JSON in the
prediction records and ``Client.evaluate`` rebuilds them.

The simulated LM (a simulation, not a model) answers the arithmetic task and gives every other
output a plausible value of its declared type, deterministically in the request: the same
values locally and in the predictors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from e2e_pipeline import Pipeline, devset, local_evaluate, per_example, sim_lm

from dspex.adapters.types import History
from dspex.modules import Predict
from dspex.signatures import InputField, OutputField, Signature
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 16


class TypedAnswer(Signature):
    """Answer the arithmetic question with a number."""

    question: str = InputField()
    answer: int = OutputField()
    confidence: float = OutputField()
    notes: list[str] = OutputField()
    kind: Literal["exact", "rounded"] = OutputField()
    working: History = OutputField()


def test_cluster_results_carry_the_declared_output_types_as_local_ones_do(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    lm = sim_lm(sim_factory(), cache_dir)
    program = Predict(TypedAnswer)
    examples = devset(EXAMPLES, seed=23)
    [remote] = shared_pipeline.evaluate([program], examples, lm, name="typed-outputs")
    local = local_evaluate(program, examples, lm)

    assert (remote.errors, local.errors) == (0, 0), (remote.error_messages, local.error_messages)
    assert per_example(remote) == per_example(local)
    for remote_record, local_record in zip(remote.records, local.records, strict=True):
        assert remote_record.prediction is not None and local_record.prediction is not None
        mine, theirs = dict(remote_record.prediction.items()), dict(local_record.prediction.items())
        assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in theirs.items()}
        assert isinstance(mine["working"], History) and isinstance(mine["notes"], list)
        assert isinstance(mine["answer"], int) and isinstance(mine["confidence"], float)
