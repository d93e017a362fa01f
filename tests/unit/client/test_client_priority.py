"""A job's priority: checked at submit time, carried by the job and each of its tasks."""

from __future__ import annotations

import pytest

import dspex
from dspex.client._submit import Limits, Policy, build_submission, check_priority
from dspex.errors import ConfigurationError
from dspex.schemas import PRIORITIES

DEVSET = [dspex.Example(question=f"{n}+1?", answer=str(n + 1)).with_inputs("question") for n in range(3)]


def _submission(priority: str | None) -> object:
    program = dspex.Predict("question -> answer")
    limits = Limits(priority=priority)
    return build_submission([program], DEVSET, "exact_match:answer", policy=Policy(), limits=limits)


@pytest.mark.parametrize("priority", [*PRIORITIES, None])
def test_the_job_and_every_task_carry_the_priority(priority: str | None) -> None:
    submission = _submission(priority)
    assert submission.job.priority == priority  # type: ignore[attr-defined]
    assert {task.priority for task in submission.tasks()} == {priority}  # type: ignore[attr-defined]


def test_an_unknown_priority_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(
        ConfigurationError, match="unknown priority 'urgent': use one of interactive, normal, bulk"
    ):
        _submission("urgent")
    with pytest.raises(ValueError, match="unknown priority"):  # what a DSPy user would catch
        check_priority("Interactive")


def test_evaluate_refuses_an_unknown_priority_before_reaching_kafka() -> None:
    client = dspex.Client("127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="use one of interactive, normal, bulk"):
        client.evaluate(dspex.Predict("question -> answer"), DEVSET, "exact_match:answer", priority="urgent")
