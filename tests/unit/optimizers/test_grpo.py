"""GRPO with dspex's own LM on the simulated LM (in-process server, real HTTP) and a reinforcement
job of the test's own that records what GRPO sends it (dspex ships no reinforceable provider, as
DSPy 3.4.1 ships none)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError, LMUnsupportedFeatureError
from dspex.lm.finetune import GRPOGroup, GRPOStatus, Provider, ReinforceJob, TrainDataFormat
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = "numeric_equal:answer"
TRAIN = arithmetic_dataset(5, seed=21)
VAL = arithmetic_dataset(4, seed=22)


class RecordingJob(ReinforceJob):
    """Asks for ``batches_per_step`` new batches at a time (after ``quiet_polls`` empty answers)
    and keeps every step's data and whether the LM's cache was on when it came."""

    batches_per_step = 2
    quiet_polls = 0

    def initialize(self) -> None:
        self.steps: list[list[GRPOGroup]] = []
        self.formats: list[Any] = []
        self.cache_at_step: list[bool] = []
        self.next_batch = 0
        self.polls = 0
        self.terminated = False
        STARTED.append(self)

    def get_status(self) -> GRPOStatus:
        self.polls += 1
        if self.polls <= self.quiet_polls:
            return {"job_id": "recording", "pending_batch_ids": []}
        pending = list(range(self.next_batch, self.next_batch + self.batches_per_step))
        return {"job_id": "recording", "pending_batch_ids": pending}

    def step(
        self, train_data: Sequence[GRPOGroup], train_data_format: TrainDataFormat | str | None = None
    ) -> None:
        self.steps.append(list(train_data))
        self.formats.append(train_data_format)
        self.cache_at_step.append(bool(self.lm.cache))
        self.next_batch += self.batches_per_step

    def terminate(self) -> None:
        self.terminated = True


class SlowToAskJob(RecordingJob):
    quiet_polls = 2


STARTED: list[RecordingJob] = []


class RecordingProvider(Provider):
    def __init__(self, job_class: type[RecordingJob] = RecordingJob) -> None:
        super().__init__()
        self.reinforceable = True
        self.ReinforceJob = job_class


@pytest.fixture(autouse=True)
def _forget_jobs() -> None:
    STARTED.clear()


class DraftThenAnswer(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = dspex.Predict("question -> draft")
        self.answer = dspex.Predict("question, draft -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        return self.answer(question=question, draft=self.draft(question=question).draft)


def lm_of(sim: SimulatedLMServer, tmp_path: Path, provider: Provider | None = None) -> dspex.LM:
    return dspex.LM(
        "openai/sim",
        api_base=sim.base_url,
        api_key="sim",
        cache_dir=tmp_path,
        provider=provider or RecordingProvider(),
    )


def student_of(lm: dspex.LM) -> dspex.Predict:
    program = dspex.Predict("question -> answer")
    program.set_lm(lm)
    return program


def grpo(**knobs: Any) -> dspex.GRPO:
    settings: dict[str, Any] = {
        "metric": METRIC,
        "num_train_steps": 3,
        "num_dspy_examples_per_grpo_step": 2,
        "num_rollouts_per_grpo_step": 4,
        "exclude_demos": True,
        "num_threads": 4,
    }
    return dspex.GRPO(**{**settings, **knobs})


def example_asked(rollout: Any) -> dspex.Example:
    """The training example a rollout's prompt asks about."""
    user = rollout["messages"][-1]["content"]
    [example] = [e for e in TRAIN if e.question in user]
    return example


def gold_answer_of(group: list[Any]) -> str:
    return str(example_asked(group[0]).answer)


def answer_in(completion: str) -> str:
    found = re.search(r"<answer>\s*(.*?)\s*</answer>", completion, re.S)
    assert found, completion
    return found.group(1)


# ---- which examples each step trains on -----------------------------------------------------------


@pytest.mark.parametrize(("size", "per_step", "steps"), [(3, 3, 4), (3, 2, 15), (3, 5, 6), (7, 3, 12)])
def test_every_step_is_full_and_the_examples_are_used_evenly(size: int, per_step: int, steps: int) -> None:
    # whole epochs: each reshuffle pads with the least-used examples, so they even out per epoch
    dataset = list(range(size))
    optimizer = dspex.GRPO(num_dspy_examples_per_grpo_step=per_step, exclude_demos=True)
    drawn = [
        optimizer.select_training_sample_and_update_shuffled_trainset(dataset, step) for step in range(steps)
    ]
    assert all(len(chosen) == per_step for chosen in drawn)
    uses = Counter(index for chosen in drawn for index in chosen)
    assert set(uses) == set(dataset)
    assert max(uses.values()) - min(uses.values()) <= 1, uses  # the least-used pad each epoch


def test_a_step_as_large_as_the_trainset_holds_each_example_once() -> None:
    optimizer = dspex.GRPO(num_dspy_examples_per_grpo_step=3, exclude_demos=True)
    for step in range(4):
        assert sorted(optimizer.select_training_sample_and_update_shuffled_trainset([1, 2, 3], step)) == [
            1,
            2,
            3,
        ]


@pytest.mark.parametrize(("size", "per_step", "seed"), [(3, 2, 0), (7, 3, 5), (10, 4, 1), (4, 4, 2)])
def test_the_steps_are_dspys_for_the_same_seed(size: int, per_step: int, seed: int) -> None:
    from dspy.teleprompt.grpo import GRPO as DSPyGRPO

    dataset = list(range(size))
    ours = dspex.GRPO(num_dspy_examples_per_grpo_step=per_step, exclude_demos=True, seed=seed)
    theirs = DSPyGRPO(num_dspy_examples_per_grpo_step=per_step, exclude_demos=True, seed=seed)
    for step in range(20):
        mine = ours.select_training_sample_and_update_shuffled_trainset(dataset, step)
        assert mine == theirs.select_training_sample_and_update_shuffled_trainset(dataset, step), step


def test_the_same_seed_draws_the_same_steps() -> None:
    def draws(seed: int) -> list[list[int]]:
        optimizer = dspex.GRPO(num_dspy_examples_per_grpo_step=2, exclude_demos=True, seed=seed)
        return [
            optimizer.select_training_sample_and_update_shuffled_trainset(list(range(9)), s)
            for s in range(12)
        ]

    assert draws(3) == draws(3) and draws(3) != draws(4)


# ---- knobs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "named"),
    [
        ({"exclude_demos": False}, "exclude_demos=False"),
        ({"exclude_demos": True, "multitask": False}, "multitask=False"),
        ({"exclude_demos": True, "failure_score": -1, "format_failure_score": -1}, "must be greater than"),
        ({"exclude_demos": True, "use_train_as_val": True}, "needs report_train_scores=True"),
        ({"exclude_demos": True, "variably_invoked_predictor_grouping_mode": "fill"}, "fill_strategy in"),
        ({"exclude_demos": True, "variably_invoked_predictor_grouping_mode": "spread"}, "must be one of"),
        ({"exclude_demos": True, "num_rollouts_per_grpo_step": 0}, "num_rollouts_per_grpo_step must be"),
    ],
)
def test_knobs_dspy_refuses_are_refused_at_construction(knobs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        dspex.GRPO(**knobs)


def test_the_default_provider_cannot_reinforce(sim: SimulatedLMServer) -> None:
    lm = dspex.LM("openai/sim", api_base=sim.base_url, api_key="sim")
    with pytest.raises(LMUnsupportedFeatureError, match="reinforcement learning") as refused:
        lm.reinforce({})
    assert refused.value.features == ["reinforce"]
    with pytest.raises(LMUnsupportedFeatureError):
        grpo(num_train_steps=1).compile(student_of(lm), trainset=TRAIN)


def test_programs_grpo_cannot_train_are_refused_before_any_call(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    lm = lm_of(sim, tmp_path)
    two_lms = DraftThenAnswer()
    two_lms.set_lm(lm)
    two_lms.answer.lm = lm.copy(temperature=0.5)
    other = student_of(lm)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"student": two_lms, "trainset": TRAIN}, "use 2"),
        ({"student": student_of(lm), "trainset": TRAIN, "teacher": [other]}, "must include the student"),
        ({"student": student_of(lm), "trainset": []}, "non-empty trainset"),
    ]
    for arguments, named in cases:
        with pytest.raises(ConfigurationError, match=named):
            grpo().compile(**arguments)
    student = student_of(lm)
    with pytest.raises(ConfigurationError, match="not a multiple of the 3 teachers"):
        grpo().compile(student, trainset=TRAIN, teacher=[student, student_of(lm), student_of(lm)])
    with pytest.raises(ConfigurationError, match="use_train_as_val=True takes no valset"):
        grpo(use_train_as_val=True, report_train_scores=True).compile(student, trainset=TRAIN, valset=VAL)
    assert sim.control.stats()["completions_ok"] == 0 and STARTED == []


# ---- training -------------------------------------------------------------------------------------


def test_each_step_sends_one_group_of_rewarded_rollouts_per_batch_asked(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    train_kwargs = {"learning_rate": 1e-5}
    lm = lm_of(sim, tmp_path)
    student = student_of(lm)
    optimizer = grpo(train_kwargs=train_kwargs, num_steps_for_val=2)
    trained = optimizer.compile(student, trainset=TRAIN, valset=VAL)

    [job] = STARTED
    assert trained is student and trained._compiled is True and job.terminated
    assert job.train_kwargs == {"learning_rate": 1e-5, "num_generations": 4}
    assert train_kwargs == {"learning_rate": 1e-5}  # the caller's dict is left alone
    assert job.formats == [TrainDataFormat.GRPO_CHAT] * 3
    assert [[item["batch_id"] for item in step] for step in job.steps] == [[0, 1], [2, 3], [4, 5]]
    assert job.cache_at_step == [False, False, False] and lm.cache is True  # off for rollouts only
    for step in job.steps:
        for item in step:
            group = item["group"]
            assert len(group) == 4
            gold = gold_answer_of(group)
            for rollout in group:
                assert [m["role"] for m in rollout["messages"]] == ["system", "user"]
                assert rollout["completion"]["role"] == "assistant"
                # XMLAdapter formats the data when none is configured (DSPy's choice)
                right = answer_in(rollout["completion"]["content"]) == gold
                assert rollout["reward"] == (1.0 if right else 0.0)
    # the rollouts ran with the cache off: 3 steps x 2 examples x 4 runs, plus 3 validations of 4
    assert sim.control.stats()["completions_ok"] == 3 * 2 * 4 + 3 * len(VAL)
    assert [report["step"] for report in optimizer.validation_history] == [-1, 1, 2]
    assert all(0.0 <= report["valset"] <= 100.0 for report in optimizer.validation_history)


def test_steps_wait_until_the_trainer_asks_for_batches(sim: SimulatedLMServer, tmp_path: Path) -> None:
    optimizer = grpo(num_train_steps=1)
    optimizer.status_poll_s = 0.01
    optimizer.compile(student_of(lm_of(sim, tmp_path, RecordingProvider(SlowToAskJob))), trainset=TRAIN)
    [job] = STARTED
    assert job.polls >= 3 and len(job.steps) == 1  # two empty answers, then the step


def test_unparsable_answers_train_with_their_format_reward(sim: SimulatedLMServer, tmp_path: Path) -> None:
    sim.control.configure(garble=1.0)
    lm = lm_of(sim, tmp_path)
    grpo(num_train_steps=1).compile(student_of(lm), trainset=TRAIN)
    [job] = STARTED
    rollouts = [rollout for item in job.steps[0] for rollout in item["group"]]
    assert rollouts and all(-1.0 <= rollout["reward"] < 0.0 for rollout in rollouts)
    assert all("[[ ## answer ## ]]" not in rollout["completion"]["content"] for rollout in rollouts)
    assert lm.cache is True


def test_the_cache_comes_back_when_compile_fails(sim: SimulatedLMServer, tmp_path: Path) -> None:
    class FailingJob(RecordingJob):
        def step(self, train_data: Sequence[GRPOGroup], train_data_format: Any = None) -> None:
            raise RuntimeError("trainer gone")

    lm = lm_of(sim, tmp_path, RecordingProvider(FailingJob))
    with pytest.raises(RuntimeError, match="trainer gone"):
        grpo(num_train_steps=1).compile(student_of(lm), trainset=TRAIN)
    assert lm.cache is True


def test_an_lm_cache_can_be_turned_off_and_on(tmp_path: Path) -> None:
    lm = dspex.LM("openai/sim", api_base="http://127.0.0.1:9", cache_dir=tmp_path)
    assert lm.cache is True and lm._response_cache() is not None
    lm.cache = False
    assert lm.cache is False and lm._response_cache() is None and lm.dump_state()["cache"] is False
    lm.cache = True
    assert lm._response_cache() is not None


def test_each_predictor_of_the_student_gets_its_own_groups(sim: SimulatedLMServer, tmp_path: Path) -> None:
    class FourBatches(RecordingJob):
        batches_per_step = 4  # two examples x two predictors: every group of the step is sent

    student = DraftThenAnswer()
    student.set_lm(lm_of(sim, tmp_path, RecordingProvider(FourBatches)))
    grpo(num_train_steps=1).compile(student, trainset=TRAIN)
    [job] = STARTED
    [step] = job.steps
    assert len(step) == 4 and all(len(item["group"]) == 4 for item in step)
    systems = Counter(item["group"][0]["messages"][0]["content"] for item in step)
    assert len(systems) == 2 and set(systems.values()) == {2}  # per predictor, one group per example
    for item in step:  # a group holds one predictor's calls on one example
        assert len({rollout["messages"][0]["content"] for rollout in item["group"]}) == 1
        assert len({example_asked(rollout).question for rollout in item["group"]}) == 1
