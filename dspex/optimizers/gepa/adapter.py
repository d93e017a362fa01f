"""gepa's adapter over dspex programs: evaluate candidates, build reflective datasets, propose texts.

gepa (the ``gepa`` package) owns the search: Pareto selection, minibatch acceptance, merges. It
asks this adapter for four things, each called from the thread gepa's engine runs in:

- ``evaluate(batch, candidate, capture_traces)``: the program with the candidate's instructions on
  a batch. Without traces the runs go through the optimizer's :class:`~dspex.optimizers.Executor`
  (asyncio in this process, bounded; the cluster with a KafkaExecutor); with traces, through
  ``bootstrap_trace_data`` (asyncio, bounded by ``num_threads``), which keeps each predictor step;
- ``batch_evaluate(items)``: several (candidate, batch) pairs at once, the ``num_threads`` bound
  shared between them, so gepa's several proposals per iteration are evaluated together;
- ``make_reflective_dataset``: for each predictor to update, one record per run of its inputs,
  outputs and the metric's feedback for that predictor (``pred_name``, ``pred_trace``);
- ``propose_new_texts``: the instruction proposer, with the reflection LM as the current LM.

Sync code in gepa's thread reaches dspex's event loop through :func:`dspex._sync.run_sync`, so
LM calls use the same clients, caches, usage trackers and budgets as everything else.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from gepa.core.adapter import EvaluationBatch

from dspex._sync import run_sync
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.types.base_type import Type
from dspex.adapters.types.history import History
from dspex.configuration import context, current_settings
from dspex.errors import ConfigurationError, DspexError
from dspex.lm.usage import Usage
from dspex.optimizers import bootstrap_trace as bootstrap_trace_module
from dspex.optimizers.bootstrap_trace import FailedPrediction, TraceData
from dspex.optimizers.executor import Executor, LocalExecutor
from dspex.optimizers.gepa import _threads
from dspex.optimizers.gepa.budgets import SpendStopper
from dspex.optimizers.gepa.feedback import (
    FeedbackMetricError,
    PredictorFeedbackFn,
    checked_score,
    make_feedback_fn,
    split_score,
)
from dspex.optimizers.gepa.proposer import InstructionProposer, ReflectiveExample
from dspex.primitives import Example, Module

__all__ = [
    "BudgetStop",
    "DspyAdapter",
    "GepaBatch",
    "ProposalMemo",
    "ReflectiveDatasetError",
    "RunMemo",
    "RunRecord",
    "bootstrap_trace_module",
    "evaluate_with_trace",
    "split_bound",
    "trace_runs",
]

logger = logging.getLogger(__name__)

GepaBatch = EvaluationBatch[TraceData, Any]
"""gepa's batch of one candidate's runs: our trajectories; outputs are predictions (None: failed)."""


class BudgetStop(DspexError):
    """The LM-call / USD budget is spent: no new evaluation starts (GEPA returns the best so far)."""


class ReflectiveDatasetError(DspexError, ValueError):
    """No run of the minibatch gave a record for any predictor to update (gepa skips the proposal)."""


class DspyAdapter:
    """gepa's ``GEPAAdapter`` for a dspex program whose components are its predictors' instructions.

    ``executor`` (dspex's): where evaluations without traces run (default: a LocalExecutor bounded
    by ``num_threads``). ``stopper``: the LM-call / USD budget, checked before each evaluation.
    ``memo``: runs made earlier in the compile, reused (see :class:`RunMemo`; None: every run is made).
    ``proposals``: reflections made ahead for predicted iterations (see :class:`ProposalMemo`).
    """

    def __init__(
        self,
        student_module: Module,
        metric_fn: Callable[..., Any],
        feedback_map: Mapping[str, PredictorFeedbackFn],
        failure_score: float = 0.0,
        num_threads: int | None = None,
        add_format_failure_as_feedback: bool = False,
        rng: random.Random | None = None,
        reflection_lm: Any = None,
        custom_instruction_proposer: Any = None,
        warn_on_score_mismatch: bool = True,
        reflection_minibatch_size: int | None = None,
        *,
        executor: Executor | None = None,
        stopper: SpendStopper | None = None,
        memo: RunMemo | None = None,
        proposals: ProposalMemo | None = None,
    ) -> None:
        self.student = student_module
        self.metric_fn = metric_fn
        self.feedback_map = dict(feedback_map)
        self.failure_score = failure_score
        self.num_threads = num_threads
        self.add_format_failure_as_feedback = add_format_failure_as_feedback
        self.rng = rng or random.Random(0)
        self.reflection_lm = reflection_lm
        self.custom_instruction_proposer = custom_instruction_proposer
        self.proposer = custom_instruction_proposer or InstructionProposer()
        self.warn_on_score_mismatch = warn_on_score_mismatch
        self.reflection_minibatch_size = reflection_minibatch_size
        self.executor = executor
        self.stopper = stopper
        self.memo = memo
        self.proposals = proposals

    # -- programs --------------------------------------------------------------------------------

    def build_program(self, candidate: Mapping[str, str]) -> Module:
        """A copy of the student with each named predictor's instructions from ``candidate``."""
        program = self.student.deepcopy()
        for name, predictor in program.named_predictors():
            if name in candidate:
                predictor.signature = predictor.signature.with_instructions(candidate[name])
        return program

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(
        self,
        batch: Sequence[Example],
        candidate: Mapping[str, str],
        capture_traces: bool = False,
        num_threads: int | None = None,
    ) -> GepaBatch:
        """Scores (and traces when asked) of the candidate's program on ``batch``, in batch order.

        With ``memo``, a run of this candidate on an example made earlier in the compile is reused
        (gepa still counts it as a metric call: the budget is DSPy's); only the others run.
        """
        self._check_budget()
        known = self.memo.lookup(candidate, batch, capture_traces) if self.memo is not None else {}
        missing = [index for index in range(len(batch)) if index not in known]
        # An empty batch still goes through the evaluation (DSPy's does): callbacks see it.
        if missing or not batch:
            fresh = self._run_batch([batch[i] for i in missing], candidate, capture_traces, num_threads)
            # An evaluation that reached the cap is left unfinished (runs not yet started were
            # refused): it is dropped, and the run ends with the state of its last finished iteration.
            self._check_budget()
            for index, run in zip(missing, fresh, strict=True):
                known[index] = run
                if self.memo is not None:
                    self.memo.store(candidate, batch[index], run)
        return self._batch_of_runs([known[index] for index in range(len(batch))], capture_traces)

    def _run_batch(
        self,
        batch: Sequence[Example],
        candidate: Mapping[str, str],
        capture_traces: bool,
        num_threads: int | None,
    ) -> list[RunRecord]:
        program = self._gated(self.build_program(candidate))
        threads = self.num_threads if num_threads is None else num_threads
        if capture_traces:
            return trace_runs(
                program,
                batch,
                metric_fn=self.metric_fn,
                num_threads=threads,
                failure_score=self.failure_score,
                callback_metadata=self._callback_metadata(batch),
            )
        return self._runs_on_executor(program, batch, threads)

    def batch_evaluate(
        self,
        items: Sequence[tuple[Mapping[str, str], Sequence[Example]]],
        *,
        capture_traces: bool = True,
        num_threads: int | None = None,
    ) -> list[GepaBatch]:
        """Every (candidate, batch) pair at once; the ``num_threads`` bound (the adapter's unless
        given) is split between them by the runs each still has to make (:func:`split_bound`)."""
        total = num_threads or self.num_threads or current_settings().num_threads
        shares = split_bound(
            total, [self._runs_to_make(candidate, batch, capture_traces) for candidate, batch in items]
        )

        calls = [
            functools.partial(
                self.evaluate, batch, candidate, capture_traces=capture_traces, num_threads=share
            )
            for (candidate, batch), share in zip(items, shares, strict=True)
        ]
        if len(calls) == 1:
            return [calls[0]()]  # (no thread: most batches are one candidate's)
        # Each pair waits in a helper thread (gepa's engine is sync); the runs themselves happen on
        # dspex's event loop. Each thread gets the caller's context: LM, settings, usage trackers.
        return _threads.run_all(calls, at_once=total)  # (more pairs than the bound: 1 run each)

    def _runs_to_make(
        self, candidate: Mapping[str, str], batch: Sequence[Example], capture_traces: bool
    ) -> int:
        """How many of the batch's runs :meth:`evaluate` would make (the others are in the memo)."""
        if self.memo is None:
            return len(batch)
        return len(batch) - len(self.memo.lookup(candidate, batch, capture_traces))

    def _runs_on_executor(
        self, program: Module, batch: Sequence[Example], threads: int | None
    ) -> list[RunRecord]:
        if not batch:
            return []  # nothing to send (a remote executor would start an empty job)
        executor = self.executor or LocalExecutor(threads or current_settings().num_threads)
        runs = run_sync(executor.run(program, list(batch)))
        if getattr(executor, "remote", False) and self.stopper is not None:
            # the workers' LM calls count against the cap too (they come back with the results)
            for run in runs:
                usage = getattr(run, "usage", None)
                if isinstance(usage, Usage):
                    self.stopper.add_remote(usage)
        records: list[RunRecord] = []
        for example, run in zip(batch, runs, strict=True):
            if isinstance(run, Exception):
                logger.debug("a run failed; it scores failure_score: %s", run)
                records.append(RunRecord(None, None, None))
                continue
            raw = score_run(self.metric_fn, example, run, None, self.failure_score)
            records.append(RunRecord(run, raw, None))
        return records

    def _batch_of_runs(self, runs: Sequence[RunRecord], capture_traces: bool) -> GepaBatch:
        """gepa's EvaluationBatch from the runs (a None score: failed, ``failure_score``)."""
        trajectories: list[TraceData] | None = None
        if capture_traces:
            # each trajectory names its place in this batch (the memo may have it from another)
            trajectories = [
                {**run.trajectory, "example_ind": index}
                for index, run in enumerate(runs)
                if run.trajectory is not None
            ]
        return self._make_evaluation_batch(
            outputs=[run.output for run in runs],
            raw_scores=[run.raw_score for run in runs],
            trajectories=trajectories,
        )

    def _make_evaluation_batch(
        self,
        outputs: Sequence[Any],
        raw_scores: Sequence[Any],
        trajectories: Sequence[TraceData] | None,
    ) -> GepaBatch:
        """gepa's EvaluationBatch from outputs and what the metric returned for each (DSPy 3.4.1's
        signature). A None score is a failed run (``failure_score``); a Prediction's
        ``objective_scores`` are forwarded, ``{}`` for runs without them, None when no run has any."""
        parts = [split_score(raw) for raw in raw_scores]
        objectives = [objective for _, objective in parts]
        return EvaluationBatch(
            outputs=list(outputs),
            scores=[self.failure_score if score is None else score for score, _ in parts],
            trajectories=None if trajectories is None else list(trajectories),
            objective_scores=objectives if any(objectives) else None,
        )

    def _callback_metadata(self, batch: Sequence[Example]) -> dict[str, Any]:
        # Minibatch evaluations are many and small: callbacks that log evaluations skip them.
        size = self.reflection_minibatch_size
        if size is None or len(batch) > size:
            return {"metric_key": "eval_full"}
        return {"disable_logging": True}

    def _gated(self, program: Module) -> Module:
        """``program``, refusing to start a run once the budget is spent (in-process runs only: a
        remote executor's workers run the program itself)."""
        if self.stopper is None or not self.stopper.capped or getattr(self.executor, "remote", False):
            return program
        return _SpendGate(program, self.stopper)

    def _check_budget(self) -> None:
        reason = self.stopper.exhausted() if self.stopper is not None else None
        if reason is not None:
            raise BudgetStop(reason)

    # -- checkpoint state ------------------------------------------------------------------------

    def get_adapter_state(self) -> dict[str, Any]:
        """What gepa saves with its state: the RNG that picks trace steps for reflection."""
        return {"rng_state": self.rng.getstate()}

    def set_adapter_state(self, state: Mapping[str, Any]) -> None:
        if "rng_state" in state:
            self.rng.setstate(_as_rng_state(state["rng_state"]))

    # -- reflection ------------------------------------------------------------------------------

    def make_reflective_dataset(
        self, candidate: Mapping[str, str], eval_batch: GepaBatch, components_to_update: list[str]
    ) -> dict[str, list[ReflectiveExample]]:
        """For each predictor to update, one record per usable run: inputs, outputs and feedback."""
        predictors = dict(self.build_program(candidate).named_predictors())
        dataset: dict[str, list[ReflectiveExample]] = {}
        for name in components_to_update:
            if name not in predictors:
                raise ConfigurationError(
                    f"GEPA was asked to update {name!r}, which is not a predictor of the program"
                )
            records = [
                record
                for trajectory in eval_batch.trajectories or []
                if (record := self._record(name, predictors[name], trajectory)) is not None
            ]
            if records:
                dataset[name] = records
            else:
                logger.warning("no usable run of predictor %s in this minibatch to reflect on", name)
        if not dataset:
            raise ReflectiveDatasetError("No valid predictions found for any module.")
        return dataset

    def _record(self, name: str, predictor: Any, trajectory: Mapping[str, Any]) -> ReflectiveExample | None:
        step = self._step_to_show(predictor, trajectory)
        if step is None:
            return None
        _, inputs, outputs = step
        record: dict[str, Any] = {
            "Inputs": self._shown_inputs(inputs),
            "Generated Outputs": _shown_outputs(outputs, as_text=not self._structured),
        }
        if isinstance(outputs, FailedPrediction):
            record["Feedback"] = _format_feedback(predictor)
        else:
            record["Feedback"] = self._feedback(name, predictor, step, trajectory)
        return record  # type: ignore[return-value]  # the three keys of a ReflectiveExample

    def _step_to_show(self, predictor: Any, trajectory: Mapping[str, Any]) -> Any:
        """The predictor's step to reflect on: a failed parse first, else one picked by the seeded RNG."""
        steps = [step for step in trajectory["trace"] if step[0].signature.equals(predictor.signature)]
        if not self.add_format_failure_as_feedback:
            steps = [step for step in steps if not isinstance(step[2], FailedPrediction)]
        failed = next((step for step in steps if isinstance(step[2], FailedPrediction)), None)
        if failed is not None:
            return failed
        if not steps or isinstance(trajectory["prediction"], FailedPrediction):
            return None
        return self.rng.choice(steps)

    @property
    def _structured(self) -> bool:
        """The default proposer asks through an adapter, which renders values itself (DSPy 3.4.1:
        History, images and typed outputs reach it as they are); other proposers get text."""
        proposer = self.proposer
        return isinstance(proposer, InstructionProposer) and proposer.prompt_template is None

    def _shown_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        structured = self._structured
        shown: dict[str, Any] = {}
        for key, value in inputs.items():
            if isinstance(value, History):
                shown["Context"] = value if structured else _history_text(value)
            elif structured or isinstance(value, Type):
                shown[key] = value  # images stay images for every proposer
            else:
                shown[key] = str(value)
        return shown

    def _feedback(self, name: str, predictor: Any, step: Any, trajectory: Mapping[str, Any]) -> str:
        feedback_fn = self.feedback_map.get(name) or make_feedback_fn(self.metric_fn, name, predictor)
        result = feedback_fn(
            predictor_output=step[2],
            predictor_inputs=step[1],
            module_inputs=trajectory["example"],
            module_outputs=trajectory["prediction"],
            captured_trace=trajectory["trace"],
        )
        run_score, _ = split_score(trajectory.get("score"))
        if result["score"] != run_score and self.warn_on_score_mismatch:
            logger.warning(
                "the metric's score for predictor %s (%s) differs from its score for the run (%s): GEPA "
                "uses the run's score and only the predictor's feedback text (a non-deterministic metric "
                "does this too; warn_on_score_mismatch=False silences this)",
                name,
                result["score"],
                run_score,
            )
            self.warn_on_score_mismatch = False
        return str(result["feedback"])

    # -- proposals -------------------------------------------------------------------------------

    def propose_new_texts(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        """New instruction texts from the proposer, with the reflection LM as the current LM."""
        if self.stopper is not None and self.stopper.exhausted() is not None:
            return {}  # no proposal: gepa skips the child, and its stop condition ends the run
        if self.proposals is not None:
            made = self.proposals.take(candidate, reflective_dataset, components_to_update)
            if made is not None:
                return made
        return self.reflect(candidate, reflective_dataset, components_to_update)

    def reflect(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        """The proposer's new texts, asked now (no memo)."""
        lm = self.reflection_lm or current_settings().lm
        with context(lm=lm):
            proposals = self.proposer(
                candidate=candidate,
                reflective_dataset=reflective_dataset,
                components_to_update=components_to_update,
            )
        return dict(proposals)


def split_bound(total: int, demands: Sequence[int]) -> list[int]:
    """Runs in flight for each of several evaluations made together, ``total`` at most in all:
    each its own runs when they fit, else the smaller ones theirs and the larger ones even shares
    of the rest; what no one needs is spread evenly (a share only bounds). An even split would
    make a valset evaluation beside a few minibatches (26 runs against a share of 21 of 64) wait a
    second round trip for its last runs, and gepa's next step waits for it. Every share is at
    least 1 (with more evaluations than ``total``, the caller runs ``total`` of them at a time)."""
    count = len(demands)
    if count >= total:
        return [1] * count
    shares = [0] * count
    left = total
    by_need = sorted(range(count), key=lambda index: demands[index])
    for served, index in enumerate(by_need):
        shares[index] = max(1, min(demands[index], left // (count - served)))
        left -= shares[index]
    for spare in range(left):
        shares[by_need[-1 - spare % count]] += 1
    return shares


class _SpendGate(Module):
    """Runs the program unless the LM-call / USD budget is spent: spend past the cap is then at most
    the runs already in flight (``num_threads``), not a whole evaluation."""

    def __init__(self, program: Module, stopper: SpendStopper) -> None:
        super().__init__()
        self.program = program
        self._stopper = stopper

    async def aforward(self, **inputs: Any) -> Any:
        reason = self._stopper.exhausted()
        if reason is not None:
            raise BudgetStop(reason)
        return await self.program.acall(**inputs)


# --------------------------------------------------------------------------- scoring


def score_run(
    metric: Callable[..., Any], example: Example, prediction: Any, trace: Any, failure_score: float
) -> Any:
    """What the metric returned for one run (checked), or None when the metric raised."""
    try:
        return checked_score(metric(example, prediction, trace, None, None), metric)
    except FeedbackMetricError:
        raise  # a metric that returns no score would fail every run: stop at its first call
    except Exception as exc:  # the user's metric failing on one run scores that run as a failure
        logger.warning(
            "the metric raised on a run; it scores failure_score=%s: %s: %s",
            failure_score,
            type(exc).__name__,
            exc,
        )
        return None


class RunRecord(NamedTuple):
    """One run of a candidate on one example: its output (None: failed), what the metric returned
    (None: failed or the metric raised) and its trajectory (None: not captured, or failed)."""

    output: Any
    raw_score: Any
    trajectory: TraceData | None


class RunMemo:
    """The runs of this compile, by candidate and example: a later evaluation of the same candidate
    on the same example reuses the run (its output, score and trace) instead of calling the LM again.

    What an LM cache does for DSPy's GEPA at its defaults (the parent's minibatch is mostly runs made
    before), whatever the LM's cache setting. Failed runs are not kept (a rate limit may pass); a
    run kept without its trace does not serve an evaluation that needs traces.
    """

    def __init__(self) -> None:
        # example objects are held with their runs, so their ids stay theirs for the compile
        self._runs: dict[tuple[tuple[tuple[str, str], ...], int], tuple[Example, RunRecord]] = {}

    def lookup(
        self, candidate: Mapping[str, str], batch: Sequence[Example], need_trace: bool
    ) -> dict[int, RunRecord]:
        """The runs known for ``batch``, by position."""
        key = _candidate_key(candidate)
        found: dict[int, RunRecord] = {}
        for index, example in enumerate(batch):
            entry = self._runs.get((key, id(example)))
            if entry is not None and (entry[1].trajectory is not None or not need_trace):
                found[index] = entry[1]
        return found

    def store(self, candidate: Mapping[str, str], example: Example, run: RunRecord) -> None:
        if run.output is None:
            return
        key = (_candidate_key(candidate), id(example))
        kept = self._runs.get(key)
        if kept is None or kept[1].trajectory is None:
            self._runs[key] = (example, run)

    def __len__(self) -> int:
        return len(self._runs)


class ProposalMemo:
    """Reflections asked ahead of the iterations predicted to need them (:mod:`.prefetch`), each
    handed out once to the iteration that asks with the same parent, reflective dataset and
    components: the answer it would have waited for, asked earlier. Thread-safe (the reflections of
    one iteration are asked from several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[str, list[dict[str, str]]] = {}
        self.made = 0  # reflections asked ahead
        self.used = 0  # of those, taken by an iteration
        self.waited = 0  # reflections an iteration asked itself (none was made ahead for it)

    @staticmethod
    def key(
        candidate: Mapping[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components: Sequence[str],
    ) -> str:
        # the dataset is what the reflection prompt is made of: equal datasets, equal prompts
        text = json.dumps([candidate, list(components), reflective_dataset], sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def put(self, key: str, texts: dict[str, str]) -> None:
        with self._lock:
            self._made.setdefault(key, []).append(dict(texts))
            self.made += 1

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._made

    def peek(self, key: str) -> dict[str, str] | None:
        """The texts the next :meth:`take` of this key hands out (None: none), left in place."""
        with self._lock:
            waiting = self._made.get(key)
            return dict(waiting[0]) if waiting else None

    def take(
        self,
        candidate: Mapping[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components: Sequence[str],
    ) -> dict[str, str] | None:
        """The texts asked ahead for this reflection (removed: used once), None when none were."""
        key = self.key(candidate, reflective_dataset, components)
        with self._lock:
            waiting = self._made.get(key)
            if not waiting:
                self.waited += 1
                return None
            texts = waiting.pop(0)
            if not waiting:
                del self._made[key]
            self.used += 1
            return texts


def _candidate_key(candidate: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(candidate.items()))


def trace_runs(
    program: Module,
    batch: Sequence[Example],
    *,
    metric_fn: Callable[..., Any],
    num_threads: int | None,
    failure_score: float,
    callback_metadata: Mapping[str, Any] | None,
) -> list[RunRecord]:
    """Run ``program`` on ``batch`` keeping each run's trace, and score each run with the metric.

    Runs that failed (dropped by ``bootstrap_trace_data``) have no output and no score; a failed
    parse keeps its trajectory with no score (both score ``failure_score``). Each kept trajectory
    gets the metric's result as ``score`` (for the reflective dataset).
    """
    trajectories = bootstrap_trace_module.bootstrap_trace_data(
        program=program,
        dataset=list(batch),
        metric=None,  # scored just below, with the feedback metric's checks
        num_threads=num_threads,
        raise_on_error=False,
        capture_failed_parses=True,
        failure_score=failure_score,
        format_failure_score=failure_score,
        callback_metadata=dict(callback_metadata or {}),
        # a bar per minibatch, several at once from gepa's threads: more CPU than the runs' own
        # bookkeeping, and unreadable (gepa logs its progress a line per iteration)
        display_progress=False,
    )
    runs = [RunRecord(None, None, None)] * len(batch)
    for trajectory in trajectories:
        index, prediction = trajectory["example_ind"], trajectory["prediction"]
        raw = None
        if not isinstance(prediction, FailedPrediction):
            raw = score_run(metric_fn, trajectory["example"], prediction, trajectory["trace"], failure_score)
        trajectory["score"] = raw
        runs[index] = RunRecord(prediction, raw, trajectory)
    return runs


def evaluate_with_trace(
    program: Module,
    batch: Sequence[Example],
    *,
    metric_fn: Callable[..., Any],
    num_threads: int | None,
    failure_score: float,
    callback_metadata: Mapping[str, Any] | None,
    capture_traces: bool,
) -> GepaBatch:
    """:func:`trace_runs` as gepa's EvaluationBatch (trajectories only when ``capture_traces``)."""
    runs = trace_runs(
        program,
        batch,
        metric_fn=metric_fn,
        num_threads=num_threads,
        failure_score=failure_score,
        callback_metadata=callback_metadata,
    )
    parts = [split_score(run.raw_score) for run in runs]
    objectives = [objective for _, objective in parts]
    return EvaluationBatch(
        outputs=[run.output for run in runs],
        scores=[failure_score if score is None else score for score, _ in parts],
        trajectories=[run.trajectory for run in runs if run.trajectory is not None]
        if capture_traces
        else None,
        objective_scores=objectives if any(objectives) else None,
    )


# --------------------------------------------------------------------------- rendering


def _history_text(history: History) -> str:
    lines = "".join(f"  {i}: {message}\n" for i, message in enumerate(history.messages))
    return f"```json\n{lines}```"


def _shown_outputs(outputs: Any, *, as_text: bool = True) -> dict[str, Any] | str:
    if isinstance(outputs, FailedPrediction):
        return (
            "The answer could not be read in the format the signature asks for. What the model wrote:\n"
            f"```\n{outputs.completion_text}\n```\n\n"
        )
    return {key: str(value) if as_text else value for key, value in outputs.items()}


def _format_feedback(predictor: Any) -> str:
    """For a failed parse: the message structure the predictor's answer had to follow."""
    messages = ChatAdapter().format(predictor.signature, [], {})
    structure = "".join(f"{message['role']}: {message['content']}\n" for message in messages)
    return "The answer was not in the expected format and could not be read. Answer like this:\n" + structure


def _as_rng_state(state: Any) -> Any:
    # A state read back from JSON has lists where random.Random wants tuples.
    if isinstance(state, list):
        return tuple(_as_rng_state(item) if isinstance(item, list) else item for item in state)
    return state
