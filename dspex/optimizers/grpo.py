"""``GRPO``: group-relative policy optimization of a program's LM through its provider's
reinforcement-learning job (DSPy 3.4.1's optimizer: its knobs, its data and its steps).

    student.set_lm(lm)   # one LM for every predictor, from a provider with reinforceable = True
    optimizer = GRPO(metric=metric, num_train_steps=50, num_dspy_examples_per_grpo_step=4,
                     num_rollouts_per_grpo_step=8, exclude_demos=True)
    trained = optimizer.compile(student, trainset=train, valset=val)

Each training step takes ``num_dspy_examples_per_grpo_step`` examples of the trainset (a new shuffle
each epoch, padded with the examples used least so far so that every step is full), runs each
teacher (the student by default) ``num_rollouts_per_grpo_step / len(teachers)`` times on each of
them with the LMs' response cache off, and scores every run with the metric. A run whose answer does
not parse gets its format reward instead (between ``format_failure_score`` and ``failure_score``, by
the share of output fields it got right). Each predictor's calls become GRPO groups, one per example
and call position: a rollout per run, holding the adapter's prompt messages (no demos), the LM's
answer and the run's reward. The LM's reinforcement job (``lm.reinforce(train_kwargs)``, with
``num_generations`` set to the group size) says which batches it waits for
(``get_status()["pending_batch_ids"]``); each is sent one group, drawn without replacement from the
step's groups, and never sent again. With a ``valset`` (or ``use_train_as_val``) the student is
evaluated before the loop, every ``num_steps_for_val`` steps and after the last; the scores are also
kept in ``validation_history``. The student's LM is trained in place: the provider's job decides
what it answers with afterwards.

As in DSPy 3.4.1, ``multitask=False``, ``exclude_demos=False``, a student whose predictors use more
than one LM, and teachers without the student among them are refused. A predictor called a varying
number of times per run is grouped by ``variably_invoked_predictor_grouping_mode``: "truncate" to
the fewest calls, "fill" up to the most with a random (``"randint"``) or the last (``"max"``) call
of the same run, or "ragged". What differs: refusals are :class:`~dspex.errors.ConfigurationError`
(a ValueError) raised before anything runs, not assertions (which ``python -O`` drops); in "ragged"
mode a call position that some runs did not reach makes a smaller group (DSPy fails with an
IndexError there); the LMs' caches come back on even when compile fails; the wait for the trainer's
batches looks every ``status_poll_s`` seconds (DSPy: every second).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, cast

from dspex.adapters import ChatAdapter, XMLAdapter
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate
from dspex.lm.finetune.data import GRPOChatData, GRPOGroup, TrainDataFormat
from dspex.metrics import MetricLike, resolve_metric
from dspex.optimizers._base import check_structure
from dspex.optimizers.bootstrap_trace import FailedPrediction, TraceData, bootstrap_trace_data
from dspex.optimizers.finetune import FinetuneTeleprompter, assert_all_predictors_have_lms
from dspex.primitives import Example, Module

__all__ = ["GRPO"]

logger = logging.getLogger(__name__)

GroupingMode = Literal["truncate", "fill", "ragged"]
FillStrategy = Literal["randint", "max"]
_GROUPING_MODES = ("truncate", "fill", "ragged")
_FILL_STRATEGIES = ("randint", "max")

# One predictor call of a run: (predictor, its inputs, its outputs or a FailedPrediction, the run's score)
_Call = tuple[Any, dict[str, Any], Any, float]


class GRPO(FinetuneTeleprompter):
    """DSPy's ``GRPO(metric=None, multitask=True, train_kwargs=None, adapter=None,
    exclude_demos=False, num_threads=6, num_train_steps=100, seed=0,
    num_dspy_examples_per_grpo_step=1, num_rollouts_per_grpo_step=1, use_train_as_val=False,
    num_steps_for_val=5, report_train_scores=False, failure_score=0, format_failure_score=-1,
    variably_invoked_predictor_grouping_mode="truncate", variably_invoked_predictor_fill_strategy=None)``
    (module docs)."""

    def __init__(
        self,
        metric: MetricLike | None = None,
        multitask: bool = True,
        train_kwargs: Mapping[Any, Any] | None = None,
        adapter: Any = None,
        exclude_demos: bool = False,
        num_threads: int | None = 6,
        num_train_steps: int = 100,
        seed: int = 0,
        num_dspy_examples_per_grpo_step: int = 1,
        num_rollouts_per_grpo_step: int = 1,
        use_train_as_val: bool = False,
        num_steps_for_val: int = 5,
        report_train_scores: bool = False,
        failure_score: float = 0,
        format_failure_score: float = -1,
        variably_invoked_predictor_grouping_mode: GroupingMode = "truncate",
        variably_invoked_predictor_fill_strategy: FillStrategy | None = None,
    ) -> None:
        super().__init__(train_kwargs=train_kwargs)
        _check_knobs(
            multitask=multitask,
            exclude_demos=exclude_demos,
            use_train_as_val=use_train_as_val,
            report_train_scores=report_train_scores,
            failure_score=failure_score,
            format_failure_score=format_failure_score,
            grouping_mode=variably_invoked_predictor_grouping_mode,
            fill_strategy=variably_invoked_predictor_fill_strategy,
            counts={
                "num_threads": num_threads,
                "num_dspy_examples_per_grpo_step": num_dspy_examples_per_grpo_step,
                "num_rollouts_per_grpo_step": num_rollouts_per_grpo_step,
                "num_steps_for_val": num_steps_for_val,
            },
        )
        self.metric = metric
        self.multitask = multitask
        self.adapter = self.convert_to_lm_dict(adapter)
        self.exclude_demos = exclude_demos
        self.num_threads = num_threads
        self.num_train_steps = num_train_steps
        self.rng = random.Random(seed)
        self.num_dspy_examples_per_grpo_step = num_dspy_examples_per_grpo_step
        self.num_rollouts_per_grpo_step = num_rollouts_per_grpo_step
        self.use_train_as_val = use_train_as_val
        self.num_steps_for_val = num_steps_for_val
        self.report_train_scores = report_train_scores
        self.failure_score = failure_score
        self.format_failure_score = format_failure_score
        self.variably_invoked_predictor_grouping_mode = variably_invoked_predictor_grouping_mode
        self.variably_invoked_predictor_fill_strategy = variably_invoked_predictor_fill_strategy
        # The trainset's order across steps (see select_training_sample_and_update_shuffled_trainset)
        self.shuffled_trainset_ids: list[int] = []
        self.epoch = -1
        self.id_freqs: Counter[int] = Counter()
        # Batches of the trainer already given a group: never filled twice
        self.fulfilled_batch_ids: list[int] = []
        self.pending_batch_ids: list[int] = []
        self.status_poll_s = 1.0
        self.validation_history: list[dict[str, Any]] = []

    # ---- which examples each step trains on -----------------------------------------------------

    def update_shuffled_trainset(self, original_trainset: Sequence[Any]) -> None:
        """A new epoch's order: the trainset's indices shuffled, then as many of the least-used
        indices as make the order a whole number of steps (a whole step more when it already is)."""
        step = self.num_dspy_examples_per_grpo_step
        order = list(range(len(original_trainset)))
        self.rng.shuffle(order)
        self.id_freqs.update(order)
        for _ in range(step - len(original_trainset) % step):
            least_used = self._least_used_id()
            order.append(least_used)
            self.id_freqs[least_used] += 1
        self.shuffled_trainset_ids = order

    def _least_used_id(self) -> int:
        # The fewest uses; among equals, the index counted first most recently (DSPy's choice).
        counted = list(self.id_freqs.items())
        return min(reversed(counted), key=lambda item: item[1])[0]

    def select_training_sample_and_update_shuffled_trainset(
        self, original_trainset: Sequence[Any], train_step_idx: int
    ) -> list[Any]:
        """The examples of training step ``train_step_idx`` (0-based), reshuffling at each new epoch."""
        start = train_step_idx * self.num_dspy_examples_per_grpo_step
        epoch = 0 if self.epoch == -1 else start // len(self.shuffled_trainset_ids)
        if epoch > self.epoch:
            logger.info("GRPO: shuffling the trainset for epoch %d", epoch)
            self.epoch = epoch
            self.update_shuffled_trainset(original_trainset)
        start %= len(self.shuffled_trainset_ids)
        chosen = self.shuffled_trainset_ids[start : start + self.num_dspy_examples_per_grpo_step]
        return [original_trainset[index] for index in chosen]

    # ---- compile --------------------------------------------------------------------------------

    def compile(  # type: ignore[override]  # DSPy's signature: trainset positional, teacher may be a list
        self,
        student: Module,
        trainset: Sequence[Example],
        teacher: Module | Sequence[Module] | None = None,
        valset: Sequence[Example] | None = None,
        **kwargs: Any,
    ) -> Module:
        """Train the student's LM in place over ``num_train_steps`` steps; the student, marked compiled."""
        train = self._filled_trainset(list(trainset))
        self._check_validation_setup(valset)
        lm = self._student_lm(student)
        teachers = self._teachers(student, teacher)
        samples_per_input = self.num_rollouts_per_grpo_step // len(teachers)
        metric = resolve_metric(self.metric) if self.metric is not None else None
        with _caches_off([student, *teachers]):
            job = lm.reinforce(train_kwargs=self._job_kwargs(lm))
            self.report_validation_metrics(student, train, valset, logger, step_idx=-1)
            queue: deque[list[GRPOChatData]] = deque()
            for step in range(self.num_train_steps):
                logger.info("GRPO training step %d/%d", step + 1, self.num_train_steps)
                examples = self.select_training_sample_and_update_shuffled_trainset(train, step)
                self._wait_for_pending_batches(job)
                runs = self._rollouts(teachers, examples, samples_per_input, metric)
                self._train_step(student, runs, step, job, queue)
                self.report_validation_metrics(student, train, valset, logger, step_idx=step)
            job.terminate()
        student._compiled = True
        return student

    def _train_step(
        self,
        student: Module,
        runs: list[list[list[TraceData]]],
        step: int,
        job: Any,
        queue: deque[list[GRPOChatData]],
    ) -> None:
        groups: list[list[GRPOChatData]] = []
        for index, predictor in enumerate(student.predictors()):
            groups.extend(self._predictor_groups(index, predictor, runs))
        if not groups:
            logger.warning(
                "GRPO step %d: no training data (no run gave a usable call of any predictor; "
                "check that the model follows the adapter's format)",
                step + 1,
            )
            return
        for group in groups:
            _warn_if_uniform(group)
            self._pad(group)
        self._send(job, groups, queue)

    # ---- rollouts and groups -------------------------------------------------------------------

    def _rollouts(
        self,
        teachers: list[Module],
        examples: list[Example],
        samples_per_input: int,
        metric: Callable[..., Any] | None,
    ) -> list[list[list[TraceData]]]:
        """runs[example][teacher]: that teacher's ``samples_per_input`` runs on that example."""
        runs: list[list[list[TraceData]]] = [[[] for _ in teachers] for _ in examples]
        repeated = [example for _ in range(samples_per_input) for example in examples]
        for teacher_index, teacher in enumerate(teachers):
            data = bootstrap_trace_data(
                program=teacher,
                dataset=repeated,
                metric=metric,
                num_threads=self.num_threads,
                raise_on_error=False,
                capture_failed_parses=True,
                failure_score=self.failure_score,
                format_failure_score=self.format_failure_score,
                log_format_failures=True,
            )
            for entry in data:
                example_index = entry["example_ind"] % len(examples)
                entry["example_ind"] = example_index
                runs[example_index][teacher_index].append(entry)
        return runs

    def _predictor_groups(
        self, predictor_index: int, predictor: Any, runs: list[list[list[TraceData]]]
    ) -> list[list[GRPOChatData]]:
        """The GRPO groups of one predictor: per example, one group per call position."""
        signature_hash = hash(predictor.signature)
        groups: list[list[GRPOChatData]] = []
        for example_index, per_teacher in enumerate(runs):
            calls = [_calls_of(run, signature_hash) for teacher_runs in per_teacher for run in teacher_runs]
            if not calls or min(len(run_calls) for run_calls in calls) == 0:
                logger.warning(
                    "GRPO: example %d has a run without a call of predictor %d; left out for it",
                    example_index, predictor_index,
                )  # fmt: skip
                continue
            if len(calls) != self.num_rollouts_per_grpo_step:
                logger.warning(
                    "GRPO: example %d has %d usable runs of the %d rollouts asked",
                    example_index, len(calls), self.num_rollouts_per_grpo_step,
                )  # fmt: skip
            calls = self._even_out(calls)
            for position in range(max(len(run_calls) for run_calls in calls)):
                reached = [run_calls[position] for run_calls in calls if position < len(run_calls)]
                groups.append([self._rollout(call) for call in reached])
        return groups

    def _even_out(self, calls: list[list[_Call]]) -> list[list[_Call]]:
        """Runs that called the predictor a different number of times, made comparable by the mode."""
        mode = self.variably_invoked_predictor_grouping_mode
        if mode == "truncate":
            fewest = min(len(run_calls) for run_calls in calls)
            return [run_calls[:fewest] for run_calls in calls]
        if mode == "fill":
            most = max(len(run_calls) for run_calls in calls)
            return [
                run_calls + [self._filler(run_calls) for _ in range(most - len(run_calls))]
                for run_calls in calls
            ]
        return calls

    def _filler(self, run_calls: list[_Call]) -> _Call:
        if self.variably_invoked_predictor_fill_strategy == "randint":
            return self.rng.choice(run_calls)
        return run_calls[-1]

    def _rollout(self, call: _Call) -> GRPOChatData:
        predictor, inputs, outputs, score = call
        adapter = self.adapter[predictor.lm] or current_settings().adapter or XMLAdapter()
        if not isinstance(adapter, ChatAdapter):
            raise ConfigurationError(
                f"GRPO trains through chat messages; {type(adapter).__name__} is not a ChatAdapter"
            )
        messages = adapter.format(signature=predictor.signature, inputs=inputs, demos=[])
        if isinstance(outputs, FailedPrediction):
            reward = outputs.format_reward or self.format_failure_score
            completion: Any = {"role": "assistant", "content": outputs.completion_text}
        else:
            full = adapter.format_finetune_data(
                signature=predictor.signature, inputs=inputs, outputs=outputs, demos=[]
            )["messages"]
            reward = score
            completion = {"role": full[-1]["role"], "content": full[-1]["content"]}
        rollout: Any = {"messages": list(messages), "completion": completion, "reward": float(reward)}
        return cast(GRPOChatData, rollout)

    def _pad(self, group: list[GRPOChatData]) -> None:
        """A group short of rollouts (runs that failed) repeats its own rollouts up to the size."""
        size = self.num_rollouts_per_grpo_step
        while len(group) < size:
            group.extend(group[: size - len(group)])

    # ---- the trainer ----------------------------------------------------------------------------

    def _wait_for_pending_batches(self, job: Any) -> None:
        while not self._available_batches(job):
            time.sleep(self.status_poll_s)

    def _available_batches(self, job: Any) -> list[int]:
        pending = list(job.get_status().get("pending_batch_ids") or [])
        self.pending_batch_ids = pending
        done = set(self.fulfilled_batch_ids)
        return [batch_id for batch_id in pending if batch_id not in done]

    def _send(self, job: Any, groups: list[list[GRPOChatData]], queue: deque[list[GRPOChatData]]) -> None:
        """One group for each batch the trainer waits for: drawn without replacement from this
        step's groups (shuffled again when they run out), each batch filled once."""
        available = self._available_batches(job)
        if not available:
            return
        while len(queue) < len(available):
            queue.extend(self.rng.sample(groups, k=len(groups)))
        train_data: list[GRPOGroup] = [
            {"batch_id": batch_id, "group": queue.popleft()} for batch_id in available
        ]
        self.fulfilled_batch_ids.extend(available)
        job.step(train_data=train_data, train_data_format=TrainDataFormat.GRPO_CHAT)

    # ---- validation -----------------------------------------------------------------------------

    def report_validation_metrics(
        self,
        student: Module,
        trainset: Sequence[Example],
        valset: Sequence[Example] | None,
        logger: logging.Logger,
        step_idx: int = -1,
    ) -> None:
        """Evaluate the student before training (``step_idx=-1``), every ``num_steps_for_val``
        steps and after the last, on the valset and (``report_train_scores``) the trainset."""
        last = self.num_train_steps - 1
        if step_idx not in (-1, last) and (step_idx + 1) % self.num_steps_for_val != 0:
            return
        if valset is not None:
            extra = list(trainset) if self.report_train_scores else []
            scores = self._evaluate(student, [*valset, *extra])
            report = {"step": step_idx, "valset": _mean(scores[: len(valset)])}
            if extra:
                report["trainset"] = _mean(scores[len(valset) :])
        elif self.report_train_scores:  # use_train_as_val
            report = {"step": step_idx, "trainset": _mean(self._evaluate(student, list(trainset)))}
        else:
            return
        self.validation_history.append(report)
        when = "before training" if step_idx == -1 else f"after step {step_idx + 1}/{self.num_train_steps}"
        for name in ("valset", "trainset"):
            if name in report:
                logger.info("GRPO: the student's %s score %s: %s", name, when, report[name])

    def _evaluate(self, student: Module, devset: list[Example]) -> list[float]:
        evaluate = Evaluate(
            devset=devset,
            num_threads=self.num_threads,
            display_progress=True,
            provide_traceback=False,
            max_errors=len(devset) * 10,
            failure_score=self.failure_score,
        )
        metric = resolve_metric(self.metric) if self.metric is not None else None
        return [float(score) for _, _, score in evaluate(student, metric=metric).results]

    # ---- checks ---------------------------------------------------------------------------------

    def _filled_trainset(self, trainset: list[Example]) -> list[Example]:
        if not trainset:
            raise ConfigurationError("GRPO needs a non-empty trainset")
        step = self.num_dspy_examples_per_grpo_step
        if len(trainset) >= step:
            return trainset
        times = -(-step // len(trainset))
        logger.warning(
            "GRPO: %d training examples for %d per step: the trainset is repeated %d times "
            "(risk of overfitting and unstable training)",
            len(trainset), step, times,
        )  # fmt: skip
        return trainset * times

    def _check_validation_setup(self, valset: Sequence[Example] | None) -> None:
        if valset is not None and self.use_train_as_val:
            raise ConfigurationError("GRPO: use_train_as_val=True takes no valset; drop one of them")

    def _student_lm(self, student: Module) -> Any:
        assert_all_predictors_have_lms(student, role="student")
        lms = {id(predictor.lm): predictor.lm for predictor in student.predictors()}
        if len(lms) != 1:
            raise ConfigurationError(
                f"GRPO trains one LM, but the student's predictors use {len(lms)}; "
                "give them one with student.set_lm(lm)"
            )
        lm = next(iter(lms.values()))
        if not callable(getattr(lm, "reinforce", None)):
            raise ConfigurationError(f"GRPO needs an LM with reinforce(); {type(lm).__name__} has none")
        return lm

    def _teachers(self, student: Module, teacher: Module | Sequence[Module] | None) -> list[Module]:
        if teacher is None or (isinstance(teacher, Sequence) and not teacher):
            teachers = [student]
        else:
            teachers = list(teacher) if isinstance(teacher, Sequence) else [teacher]
        for index, program in enumerate(teachers):
            if program is not student:
                check_structure(student, program)
            assert_all_predictors_have_lms(program, role=f"teacher {index}")
        if not any(program is student for program in teachers):
            raise ConfigurationError(
                "GRPO's teachers must include the student program (or leave teacher=None to use it)"
            )
        if self.num_rollouts_per_grpo_step % len(teachers):
            raise ConfigurationError(
                f"num_rollouts_per_grpo_step={self.num_rollouts_per_grpo_step} is not a multiple of "
                f"the {len(teachers)} teachers: each teacher makes the same number of rollouts"
            )
        return teachers

    def _job_kwargs(self, lm: Any) -> dict[str, Any]:
        given = self.train_kwargs[lm]
        return {**(given or {}), "num_generations": self.num_rollouts_per_grpo_step}


def _check_knobs(
    *,
    multitask: bool,
    exclude_demos: bool,
    use_train_as_val: bool,
    report_train_scores: bool,
    failure_score: float,
    format_failure_score: float,
    grouping_mode: str,
    fill_strategy: str | None,
    counts: Mapping[str, int | None],
) -> None:
    problems = [
        f"{name} must be a positive integer, got {value!r}"
        for name, value in counts.items()
        if value is not None and value < 1  # num_threads=None: Evaluate's default
    ]
    if failure_score <= format_failure_score:
        problems.append(
            f"failure_score ({failure_score}) must be greater than format_failure_score "
            f"({format_failure_score}): the range between them rewards answers by their format"
        )
    if use_train_as_val and not report_train_scores:
        problems.append("use_train_as_val=True needs report_train_scores=True")
    if not exclude_demos:
        problems.append("exclude_demos=False is not supported: set exclude_demos=True")
    if not multitask:
        problems.append(
            "multitask=False (one training job per predictor) is not supported: set multitask=True"
        )
    if grouping_mode not in _GROUPING_MODES:
        problems.append(f"variably_invoked_predictor_grouping_mode must be one of {list(_GROUPING_MODES)}")
    elif grouping_mode == "fill" and fill_strategy not in _FILL_STRATEGIES:
        problems.append(
            f"variably_invoked_predictor_grouping_mode='fill' needs "
            f"variably_invoked_predictor_fill_strategy in {list(_FILL_STRATEGIES)}"
        )
    if problems:
        raise ConfigurationError("GRPO: " + "; ".join(problems))


@contextmanager
def _caches_off(programs: Sequence[Module]) -> Iterator[None]:
    """Every LM of ``programs`` without its response cache (rollouts must be sampled, not replayed),
    each set back as it was on the way out."""
    saved: dict[int, tuple[Any, Any]] = {}
    for program in programs:
        for predictor in program.predictors():
            lm = predictor.lm
            if id(lm) not in saved:
                saved[id(lm)] = (lm, lm.cache)
                lm.cache = False
    try:
        yield
    finally:
        for lm, cache in saved.values():
            lm.cache = cache


def _calls_of(run: TraceData, signature_hash: int) -> list[_Call]:
    """The run's calls of the predictor whose signature hashes to ``signature_hash``, with its score."""
    score = float(run.get("score") or 0.0)
    return [(*entry, score) for entry in run["trace"] if hash(entry[0].signature) == signature_hash]


def _warn_if_uniform(group: list[GRPOChatData]) -> None:
    if len({repr(rollout) for rollout in group}) < 2:
        logger.warning(
            "GRPO: a group's %d rollouts are all the same (temperature too low, too few rollouts, "
            "or answers replayed from a cache), so it teaches nothing",
            len(group),
        )


def _mean(scores: Sequence[float]) -> float:
    return sum(scores) / len(scores) if scores else 0.0
