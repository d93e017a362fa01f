"""``SIMBA``: minibatch ascent where the program learns from its own best and worst runs.

    optimizer = SIMBA(metric="numeric_equal:answer", bsize=32, num_candidates=6, max_steps=8)
    best = optimizer.compile(program, trainset=train, seed=0)
    best.candidate_programs[0]["score"], optimizer.history.trials

DSPy's procedure, kept: each of ``max_steps`` steps takes the next minibatch of ``bsize`` training
examples (the trainset shuffled with the seed, reshuffled when it runs out). ``num_candidates``
models (rollouts ``0..n-1`` at temperature 1.0; the teacher LM first when ``teacher_settings`` has
one) each run every example with a program drawn from the pool's best ``num_candidates`` (always
with the student) by a softmax over their minibatch scores (``temperature_for_sampling``). The
examples whose runs disagree most come first; for each, a source program is drawn
(``temperature_for_candidates``), some of its demos dropped (about ``demos / max_demos``, at least
one once full), and a strategy applied: *append a demo* (the best run's calls, one demo per
predictor) or *append a rule* (an LM compares the best and worst run and writes a rule per
predictor, appended to its instructions), until ``num_candidates + 1`` new programs. These are
scored on the minibatch; all join the pool and the best is the step's winner. At the end, up to
``num_candidates + 1`` winners, evenly spaced from the student to the last, are scored on the
trainset and the best (the first of equal scores) is returned, with ``candidate_programs`` and
``trial_logs`` attached.

What differs: the ``num_candidates x bsize`` runs of a step are ONE ``executor.run`` call, the rule
requests of a step are sent together, and the new programs are scored in ONE ``evaluate_many``.
A rule answer that cannot be parsed is asked again once (a fresh draw), then skipped, recorded in
the history as a ``kind="proposal"`` trial with ``error`` (DSPy logs and skips any failed strategy).
The rule LM is ``prompt_model``, else the LM in context (a cluster job's LM), else the student's.
A SIMBA step is two run steps (sample and propose; score the new programs) and the final choice a
third, each checkpointed; ``valset`` (dspex's) scores the final choice on other examples than the
trainset. Minibatch trials carry their score in ``note`` (``score`` is None), so that the
history's best is the final, full evaluation's. The randomness is one ``random.Random(seed)``
(DSPy also draws demo-drop counts from numpy), so the draws are not DSPy's, but the same seed gives
the same program, locally, through Kafka, and after a resume.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dspex.errors import ConfigurationError
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.lm.usage import Usage
from dspex.metrics import MetricLike, resolve_metric
from dspex.modules import Predict
from dspex.optimizers._base import (
    Optimizer,
    OptimizerRun,
    StepCost,
    check_examples,
    check_has_predictors,
    check_int,
    check_labels,
    reject_unknown,
)
from dspex.optimizers.bootstrap import check_teacher_settings
from dspex.optimizers.budget import Budget
from dspex.optimizers.checkpoint import SimbaPhase, SimbaState, restore_rng, rng_state
from dspex.optimizers.executor import (
    ROLLOUT_TEMPERATURE,
    Executor,
    LocalExecutor,
    gather_or_cancel,
    rollout_copy,
)
from dspex.optimizers.history import Trial
from dspex.optimizers.proposal import PROPOSAL_ATTEMPTS
from dspex.optimizers.simba_rules import WriteRules, apply_rules, rule_inputs, rule_lm, write_rules
from dspex.optimizers.simba_strategies import (
    DEMO,
    RULE,
    Bucket,
    Member,
    Trajectory,
    Variant,
    append_demo,
    demos_to_drop,
    make_buckets,
    percentile,
    scored_run,
    softmax_choice,
    spaced_positions,
    top_programs,
)
from dspex.primitives import Example, Module, Prediction
from dspex.serialization import candidate_id

__all__ = ["SIMBA"]

logger = logging.getLogger(__name__)

# Rule requests of batch b use rollout ids b * _BATCH_SPACING + bucket position.
_BATCH_SPACING = 10_000


class SIMBA(Optimizer):
    """DSPy's ``SIMBA`` with one executor call per phase, budgets and resumable runs.

    dspex's extras: ``max_lm_calls`` / ``max_cost_usd`` (stop with the best so far), ``concurrency``
    (DSPy's ``num_threads``: bound of the default LocalExecutor), ``max_errors`` (failed runs in one
    step before the optimization fails; DSPy scores them 0 and goes on), ``seed`` (the default of
    ``compile``'s; a cluster job passes its seed here).
    """

    def __init__(
        self,
        metric: MetricLike | None = None,
        *,
        bsize: int = 32,
        num_candidates: int = 6,
        max_steps: int = 8,
        max_demos: int = 4,
        prompt_model: LM | None = None,
        teacher_settings: Mapping[str, Any] | None = None,
        demo_input_field_maxlen: int = 100_000,
        num_threads: int | None = None,
        temperature_for_sampling: float = 0.2,
        temperature_for_candidates: float = 0.2,
        concurrency: int | None = None,
        max_errors: int | None = None,
        seed: int = 0,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("SIMBA", unknown, SIMBA.__init__)
        if metric is None:
            raise ConfigurationError("SIMBA needs a metric, e.g. metric='numeric_equal:answer'")
        if prompt_model is not None and not isinstance(prompt_model, LM):
            raise ConfigurationError(f"prompt_model must be a dspex.LM or None, got {prompt_model!r}")
        self.metric = resolve_metric(metric)
        self.bsize = check_int("bsize", bsize, minimum=1)
        self.num_candidates = check_int("num_candidates", num_candidates, minimum=1)
        self.max_steps = check_int("max_steps", max_steps)
        self.max_demos = check_int("max_demos", max_demos)
        self.prompt_model = prompt_model
        self.teacher_lm = check_teacher_settings(teacher_settings)
        self.demo_input_field_maxlen = check_int("demo_input_field_maxlen", demo_input_field_maxlen)
        self.temperature_for_sampling = _positive("temperature_for_sampling", temperature_for_sampling)
        self.temperature_for_candidates = _positive("temperature_for_candidates", temperature_for_candidates)
        self.concurrency = LocalExecutor(concurrency, num_threads=num_threads).concurrency
        self.max_errors = check_int("max_errors", max_errors, optional=True)
        self.seed = check_int("seed", seed, minimum=-(2**63))
        self._limits = Budget(max_lm_calls, max_cost_usd)
        # DSPy: without demos to keep, only rules
        self.strategies = (DEMO, RULE) if self.max_demos > 0 else (RULE,)

    def start(
        self,
        student: Module,
        *,
        trainset: Sequence[Example],
        seed: int | None = None,
        valset: Sequence[Example] | None = None,
        executor: Executor | None = None,
        state: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> _SimbaRun:
        """The run, checked and ready for its first step (or resumed from ``state``). Its result:
        the best program found (``student`` itself is left unchanged)."""
        reject_unknown("SIMBA.compile", unknown, SIMBA.start)
        check_has_predictors("SIMBA", student)
        why = f"bsize={self.bsize} needs at least {self.bsize}; lower bsize or give more examples"
        train = check_examples("trainset", trainset, minimum=self.bsize, why=why)
        check_labels("trainset", train, self.metric)
        final = train if valset is None else check_examples("valset", valset)
        if valset is not None:
            check_labels("valset", final, self.metric)
        chosen_seed = self.seed if seed is None else check_int("seed", seed, minimum=-(2**63))
        executor = LocalExecutor(self.concurrency) if executor is None else self.executor_or_default(executor)
        run = _SimbaRun(self, student, train, final, chosen_seed, executor)
        if state is not None:
            run.load_state_dict(state)
        return run


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a number > 0 (a softmax temperature), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Plan:
    """A new program in the making: the bucket it learns from, its source and strategy."""

    position: int
    bucket: Bucket
    source: int
    variant: Variant
    dropped: int
    strategy: str


class _SimbaRun(OptimizerRun):
    """Steps: sample + build candidates, score them on the minibatch, x max_steps; then the final choice."""

    state_model = SimbaState

    def __init__(
        self,
        optimizer: SIMBA,
        student: Module,
        trainset: list[Example],
        final_set: list[Example],
        seed: int,
        executor: Executor,
    ) -> None:
        budget = Budget(optimizer._limits.max_lm_calls, optimizer._limits.max_cost_usd)
        super().__init__(name="SIMBA", executor=executor, budget=budget, max_errors=optimizer.max_errors)
        self.opt, self.student = optimizer, student.deepcopy()
        self.trainset, self.final_set = trainset, final_set
        self.paths = [path for path, _ in student.named_predictors()]
        self.calls_per_run = float(len(self.paths))
        self.proposer = Predict(WriteRules)
        self.rng = random.Random(seed)
        self.order = list(range(len(trainset)))
        self.rng.shuffle(self.order)
        self.position = 0
        self.pool = [Member(Variant.of(self.student), [], "student")]
        self.winners = [0]
        self.phase: SimbaPhase = "sample"
        self.batch_index = 0
        self.batch: list[int] = []
        self.pending: list[Member] = []
        self.final: list[tuple[int, float]] = []  # (pool index, trainset score) of the final choice
        self.logs: list[dict[str, Any]] = []

    # -- steps -----------------------------------------------------------------------------------

    async def _step(self) -> StepCost:
        if self.phase == "sample" and self.batch_index >= self.opt.max_steps:
            self.phase = "choose"
        if self.phase == "sample":
            return await self._sample()
        if self.phase == "evaluate":
            return await self._evaluate_candidates()
        return await self._choose()

    async def _sample(self) -> StepCost:
        """Run the pool's programs on the next minibatch, then build the new candidates."""
        rules_lm = rule_lm(self.opt.prompt_model, self.student)
        runs = self.opt.num_candidates * self.opt.bsize
        # room for the rule requests too: each new program may ask twice, each with a JSON fallback
        rules = (self.opt.num_candidates + 1) * PROPOSAL_ATTEMPTS * 2
        if self.budget_runs(runs + rules, self.calls_per_run) < runs + rules:
            self.stop(self.budget.exhausted() or f"budget: no room for the {runs} runs of another step")
            return StepCost()
        self.batch = self._next_batch()
        examples = [self.trainset[i] for i in self.batch]
        runs_by_model, usage = await self._trajectories(examples)
        buckets = make_buckets(examples, [list(column) for column in zip(*runs_by_model, strict=True)])
        scores = [t.score for model in runs_by_model for t in model]
        p10, p90 = percentile(scores, 10), percentile(scores, 90)
        baseline = sum(scores) / len(scores)
        logger.info("SIMBA batch %s: minibatch score %.3f over %s runs", self.batch_index + 1, baseline, runs)
        self.logs.append({"batch": self.batch_index, "baseline_score": baseline})
        self.record(
            Trial(
                step=self.step_index,
                kind="sample",
                label=f"batch {self.batch_index + 1}: {len(runs_by_model)} x {len(examples)} runs",
                num_examples=len(examples),
                note=f"minibatch score {100 * baseline:.1f} over all runs",
            )
        )
        self.pending = await self._build_candidates(buckets, p10, p90, rules_lm)
        self.phase = "evaluate"
        return StepCost(runs=runs, reported=usage)

    async def _evaluate_candidates(self) -> StepCost:
        """Score the new candidates on the minibatch (one evaluation); all join the pool."""
        candidates, examples = self.pending, [self.trainset[i] for i in self.batch]
        runs = len(candidates) * len(examples)
        if runs and self.budget_runs(runs, self.calls_per_run) < runs:
            self.stop(self.budget.exhausted() or f"budget: no room to score {len(candidates)} candidates")
            return StepCost()
        programs = [c.variant.build(self.student) for c in candidates]
        results = await self.executor.evaluate_many(programs, examples, self.opt.metric) if programs else []
        for member, program, result in zip(candidates, programs, results, strict=True):
            member.scores = [record.score for record in result.records]
            self._record_minibatch(member, program, result)
        if candidates:
            best = max(range(len(candidates)), key=lambda i: (candidates[i].average, -i))
            self.winners.append(len(self.pool) + best)
            logger.info("SIMBA batch %s: winner %r", self.batch_index + 1, candidates[best].label)
        self.logs[-1]["candidate_scores"] = [c.average for c in candidates]
        self.pool.extend(candidates)
        self._check_results(results)
        self.pending, self.phase, self.batch_index = [], "sample", self.batch_index + 1
        return StepCost(runs=runs, reported=sum((r.usage for r in results), Usage()))

    async def _choose(self) -> StepCost:
        """Score evenly spaced winners on the trainset (or valset) and keep the best."""
        chosen = self._spaced_winners()
        size = len(self.final_set)
        fit = self.budget_runs(len(chosen) * size, self.calls_per_run) // size
        if fit == 0:
            self.stop(self.budget.exhausted() or "budget: no room for the final evaluation")
            return StepCost()
        chosen = chosen[:fit]
        programs = [self.pool[i].variant.build(self.student) for i in chosen]
        results = await self.executor.evaluate_many(programs, self.final_set, self.opt.metric)
        for index, program, result in zip(chosen, programs, results, strict=True):
            scores = [record.score for record in result.records]
            self.final.append((index, sum(scores) / len(scores) if scores else 0.0))
            self.record(
                Trial(
                    step=self.step_index,
                    kind="full",
                    label=f"winner: {self.pool[index].label}",
                    candidate_id=candidate_id(program),
                    score=result.score,
                    num_examples=result.processed,
                )
            )
        self._check_results(results)
        self.done = True
        return StepCost(runs=len(chosen) * size, reported=sum((r.usage for r in results), Usage()))

    # -- sampling --------------------------------------------------------------------------------

    def _next_batch(self) -> list[int]:
        if self.position + self.opt.bsize > len(self.order):
            self.rng.shuffle(self.order)
            self.position = 0
        batch = self.order[self.position : self.position + self.opt.bsize]
        self.position += self.opt.bsize
        return batch

    async def _trajectories(self, examples: list[Example]) -> tuple[list[list[Trajectory]], Usage]:
        """Every model runs every example with a program drawn from the top of the pool: one call.
        Also the usage the predictions report (what a remote executor's workers spent)."""
        top = self._top_programs()
        picks = [
            [self._draw(top, self.opt.temperature_for_sampling) for _ in examples]
            for _ in range(self.opt.num_candidates)
        ]
        copies: dict[tuple[int, int], Module] = {}
        programs = [
            copies.setdefault((m, p), self._model_copy(self.pool[p].variant.build(self.student), m))
            for m, row in enumerate(picks)
            for p in row
        ]
        preds = await self.executor.run(programs, examples * len(picks))
        n = len(examples)  # run k is model k // n on example k % n
        outcomes = [
            await scored_run(self.opt.metric, examples[k % n], pred, picks[k // n][k % n], k // n)
            for k, pred in enumerate(preds)
        ]
        errors = [error for _, error in outcomes if error is not None]
        if errors:
            self.check_errors(len(errors), errors[-1])
        rows = [t for t, _ in outcomes]
        usage = sum((p.usage for p in preds if isinstance(p, Prediction)), Usage())
        return [rows[m * n : (m + 1) * n] for m in range(len(picks))], usage

    def _model_copy(self, program: Module, model: int) -> Module:
        """The program as model ``model`` runs it: a fresh rollout at 1.0, or the teacher first."""
        rollout = self._first_rollout() + model
        if model == 0 and self.opt.teacher_lm is not None:
            program.set_lm(self.opt.teacher_lm)
            for predictor in program.predictors():
                predictor.config = {**predictor.config, "rollout_id": rollout}
            return program
        return rollout_copy(program, rollout, ROLLOUT_TEMPERATURE)

    def _first_rollout(self) -> int:
        # DSPy starts from the rollout id the program's LM already has (usually none: 0)
        configured = self.student.predictors()[0].config.get("rollout_id")
        return configured if isinstance(configured, int) else 0

    def _top_programs(self) -> list[int]:
        return top_programs([member.average for member in self.pool], self.opt.num_candidates)

    def _draw(self, options: list[int], temperature: float) -> int:
        return softmax_choice(self.rng, options, [self.pool[i].average for i in options], temperature)

    # -- new candidates --------------------------------------------------------------------------

    async def _build_candidates(
        self, buckets: list[Bucket], p10: float, p90: float, rule_lm: LM | None
    ) -> list[Member]:
        """Up to ``num_candidates + 1`` new programs, bucket by bucket. Rule requests go out together;
        a skipped one is replaced by the next bucket's, as DSPy's loop would go on to it."""
        wanted, cursor = self.opt.num_candidates + 1, 0
        made: dict[int, Member] = {}
        skipped: list[tuple[_Plan, str]] = []
        while len(made) < wanted and cursor < len(buckets):
            wave: list[_Plan] = []
            while len(made) + len(wave) < wanted and cursor < len(buckets):
                wave.append(self._plan(cursor, buckets[cursor]))
                cursor += 1
            # one request failing the run (a systemic LM error) cancels the others
            outcomes = await gather_or_cancel([self._apply(plan, p10, p90, rule_lm) for plan in wave])
            for plan, (member, error) in zip(wave, outcomes, strict=True):
                if member is not None:
                    made[plan.position] = member
                else:
                    skipped.append((plan, error or "no rule"))
        for plan, error in sorted(skipped, key=lambda item: item[0].position):
            self.record(Trial(step=self.step_index, kind="proposal", label=self._label(plan), error=error))
        return [made[position] for position in sorted(made)]

    def _plan(self, position: int, bucket: Bucket) -> _Plan:
        source = self._draw(self._top_programs(), self.opt.temperature_for_candidates)
        variant = self.pool[source].variant
        num_demos = max((len(demos) for demos in variant.demos), default=0)
        dropped = demos_to_drop(self.rng, num_demos, self.opt.max_demos)
        strategy = self.rng.choice(self.opt.strategies)
        return _Plan(position, bucket, source, variant.without_demos(dropped), len(dropped), strategy)

    async def _apply(
        self, plan: _Plan, p10: float, p90: float, rule_lm: LM | None
    ) -> tuple[Member | None, str | None]:
        """The plan's program, or None and why it was skipped. A strategy whose bucket tells nothing
        (DSPy's percentile checks) leaves the source with its demos dropped, as in DSPy."""
        good, bad = plan.bucket.runs[0], plan.bucket.runs[-1]
        label = self._label(plan)
        if plan.strategy == DEMO:
            if good.score <= p10:
                return Member(plan.variant, [], f"{label} (skipped: best run at or below p10)"), None
            variant = append_demo(plan.variant, self.paths, good, self.opt.demo_input_field_maxlen)
            return Member(variant, [], label), None
        if good.score <= p10 or bad.score >= p90:
            return Member(plan.variant, [], f"{label} (skipped: runs outside p10..p90)"), None
        inputs = rule_inputs(self.student, good, bad, plan.bucket.example, p90)
        first = self.batch_index * _BATCH_SPACING + plan.position
        rules, error = await write_rules(self.proposer, inputs, self.paths, rollout_id=first, lm=rule_lm)
        if rules is None:
            return None, error
        return Member(apply_rules(plan.variant, self.paths, rules), [], label), None

    def _label(self, plan: _Plan) -> str:
        dropped = f", {plan.dropped} demo(s) dropped" if plan.dropped else ""
        return f"batch {self.batch_index + 1}: {plan.strategy} to program {plan.source}{dropped}"

    # -- results ---------------------------------------------------------------------------------

    def _record_minibatch(self, member: Member, program: Module, result: EvaluationResult) -> None:
        self.record(
            Trial(
                step=self.step_index,
                kind="minibatch",
                label=member.label,
                candidate_id=candidate_id(program),
                num_examples=result.processed,
                note=f"minibatch score {100 * member.average:.1f}",
            )
        )

    def _check_results(self, results: Sequence[EvaluationResult]) -> None:
        worst = max(results, key=lambda r: r.errors, default=None)
        if worst is not None and worst.errors:
            self.check_errors(worst.errors, next(iter(worst.error_messages.values()), "unknown error"))

    def _spaced_winners(self) -> list[int]:
        return [self.winners[p] for p in spaced_positions(len(self.winners), self.opt.num_candidates + 1)]

    def _best_index(self) -> int:
        if self.final:
            return max(self.final, key=lambda entry: entry[1])[0]  # max keeps the first of equals
        # stopped before the final evaluation: the winner with the best minibatch score
        return max(self.winners, key=lambda i: self.pool[i].average)

    def _finish(self) -> None:
        """Nothing to settle: the result is built from the pool when asked for."""

    def result(self) -> Module:
        best = self.pool[self._best_index()].variant.build(self.student)
        ranked = sorted(self.final, key=lambda entry: entry[1], reverse=True)
        # as DSPy attaches them to the program it returns
        best.candidate_programs = [  # type: ignore[attr-defined]
            {"score": score, "program": self.pool[i].variant.build(self.student)} for i, score in ranked
        ]
        best.trial_logs = {entry["batch"]: dict(entry) for entry in self.logs}  # type: ignore[attr-defined]
        return best

    # -- state -----------------------------------------------------------------------------------

    def _state(self) -> SimbaState:
        return SimbaState(
            rng=rng_state(self.rng),
            order=self.order,
            position=self.position,
            pool=self.pool,
            winners=self.winners,
            phase=self.phase,
            batch_index=self.batch_index,
            batch=self.batch,
            pending=self.pending,
            final=self.final,
            logs=self.logs,
        )

    def _load_state(self, state: SimbaState) -> None:
        if any(len(m.variant.instructions) != len(self.paths) for m in state.pool):
            raise ConfigurationError(
                f"this SIMBA state is of a program with other predictors than {self.paths}"
            )
        restore_rng(self.rng, state.rng)
        self.order, self.position = list(state.order), state.position
        self.pool, self.winners = list(state.pool), list(state.winners)
        self.phase, self.batch_index = state.phase, state.batch_index
        self.batch, self.pending = list(state.batch), list(state.pending)
        self.final = list(state.final)
        self.logs = [dict(entry) for entry in state.logs]
