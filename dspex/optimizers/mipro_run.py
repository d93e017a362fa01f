"""The steps of a MIPROv2 run: bootstrap waves, grounding, proposals, the default program, the search.

Steps, each one round of concurrent work: (1) the first bootstrap wave, the proposer's first
grounding round and the student on the valset (trial 0), none of which needs another; (2) the
second grounding round with the next wave; (3) any further waves; (4) every instruction proposal;
(5) the search, a step per batch of trials (see :func:`~dspex.optimizers.mipro_settings.search_steps`:
by default the trials TPE draws at random go in batches, each with the full evaluation due before
it, every later trial is a step of its own, and the last full evaluation joins the trial before
it, both combinations it may choose being evaluated; with ``trials_per_step=1`` every trial,
full evaluations included, is a step of its own).

Everything between steps is JSON (:meth:`MiproRun._state`): the bootstrap tasks, the proposed
instructions, every trial told to the search, the best so far, and the state of the run's
``random.Random``, which draws what DSPy's ``self.rng`` draws (the validation subset, the demo
sets' shuffles and sizes, the tips and proposal rollouts, each minibatch) in the same order.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from dspex.configuration import context
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.lm.usage import Usage
from dspex.optimizers._base import OptimizerRun, StepCost
from dspex.optimizers.bootstrap import BootstrapEngine, BootstrapSettings, BootstrapTask, make_teacher
from dspex.optimizers.budget import Budget
from dspex.optimizers.checkpoint import (
    BestTrial,
    EvaluatedTrial,
    MiproPhase,
    MiproState,
    restore_rng,
    rng_state,
)
from dspex.optimizers.executor import Executor
from dspex.optimizers.grounded import (
    GroundedProposer,
    Grounding,
    InstructionRequest,
    ProposerSwitches,
    draw_tip,
)
from dspex.optimizers.history import Trial
from dspex.optimizers.labeled import labeled_program
from dspex.optimizers.mipro_search import TPE_STARTUP_TRIALS, Params, SearchRecord, ask_batch, combo_key
from dspex.optimizers.mipro_settings import RunPlan, ScheduledTrial, search_steps, trial_schedule
from dspex.optimizers.random_search import CandidatePlan
from dspex.primitives import Example, Module
from dspex.serialization import candidate_id

__all__ = ["MiproRun", "MiproSetup", "demo_set_plans"]

logger = logging.getLogger(__name__)

# DSPy's demo counts when the optimization is zero-shot: demos are still bootstrapped, to show the
# proposer worked examples, and then dropped.
ZERO_SHOT_BOOTSTRAPPED = 3
ROLLOUT_RANGE = 10**9


def demo_set_plans(
    num_sets: int, train_size: int, max_bootstrapped: int, max_labeled: int, rng: random.Random
) -> list[CandidatePlan]:
    """DSPy's demo sets for seeds -3..num_sets-4: zero-shot, labeled, unshuffled bootstrap, then
    bootstraps on the trainset shuffled by ``rng`` with ``rng.randint(1, max_bootstrapped)`` demos.

    As in DSPy, seed -2 is a shuffled bootstrap too when ``max_labeled`` is 0.
    """
    plans: list[CandidatePlan] = []
    unshuffled = tuple(range(train_size))
    for seed in range(-3, num_sets - 3):
        if seed == -3:
            plans.append(CandidatePlan(seed, "zero-shot", unshuffled, 0))
        elif seed == -2 and max_labeled > 0:
            plans.append(CandidatePlan(seed, "labeled", unshuffled, 0))
        elif seed == -1:
            plans.append(CandidatePlan(seed, "bootstrap", unshuffled, max_bootstrapped))
        else:
            order = list(unshuffled)
            rng.shuffle(order)
            plans.append(CandidatePlan(seed, "bootstrap", tuple(order), rng.randint(1, max_bootstrapped)))
    return plans


@dataclass(frozen=True)
class MiproSetup:
    """Everything a run is made from, checked (see MIPROv2.start)."""

    name: str
    student: Module
    teacher: Module | None
    trainset: list[Example]
    valset: list[Example]  # the validation subset the run uses
    plan: RunPlan
    demo_plans: list[CandidatePlan]
    settings: BootstrapSettings
    zero_shot: bool
    seed: int
    minibatch_size: int
    full_eval_steps: int
    trials_per_step: int | None  # sampled trials per search step; None: full_eval_steps
    view_data_batch_size: int
    switches: ProposerSwitches
    prompt_model: LM | None
    task_model: LM | None
    init_temperature: float
    track_stats: bool
    limits: Budget
    max_errors: int | None


class MiproRun(OptimizerRun):
    """Phases: ``bootstrap`` (waves; the first one together with the proposer's grounding requests
    and the student's evaluation on the valset, none of which needs demos), ``propose`` (every
    instruction proposal in one step), ``search`` (a step per batch of sampled trials, and one per
    full evaluation)."""

    state_model = MiproState

    def __init__(self, setup: MiproSetup, executor: Executor, rng: random.Random) -> None:
        budget = Budget(setup.limits.max_lm_calls, setup.limits.max_cost_usd)
        super().__init__(name=setup.name, executor=executor, budget=budget, max_errors=setup.max_errors)
        self.setup, self.rng = setup, rng
        self.base = setup.student.deepcopy()
        self.paths = [path for path, _ in self.base.named_predictors()]
        self.tasks = {p.seed: self._task(p) for p in setup.demo_plans if p.kind == "bootstrap"}
        self.engine = BootstrapEngine(setup.settings, list(self.tasks.values()), self.paths, executor)
        self.schedule = search_steps(
            trial_schedule(
                setup.plan.num_trials, minibatch=setup.plan.minibatch, full_eval_steps=setup.full_eval_steps
            ),
            full_eval_steps=setup.full_eval_steps,
            trials_per_step=setup.trials_per_step,
            modelled_from=TPE_STARTUP_TRIALS,
        )
        self.phase: MiproPhase = "bootstrap"
        self.position = 0  # next batch of self.schedule
        self.instructions: list[list[str]] = []
        self.grounding_seed = 0
        self.observed: Grounding | None = None  # the grounding's first round
        self.grounding: Grounding | None = None
        self.default_score: float | None = None
        self.search: SearchRecord | None = None
        self.best: tuple[float, Params] | None = None
        self.evaluated: list[EvaluatedTrial] = []  # in trial order
        self._demo_sets: list[list[list[Example]]] | None = None

    @property
    def num_trials(self) -> int:
        """Trials of the search, the default program's included (DSPy's ``adjusted_num_trials``)."""
        return 1 + sum(len(batch) for batch in self.schedule)

    def _task(self, plan: CandidatePlan) -> BootstrapTask:
        examples = [self.setup.trainset[i] for i in plan.order]
        settings = self.setup.settings
        teacher = make_teacher(self.base, self.setup.teacher, examples, settings.max_labeled_demos)
        return BootstrapTask(examples, teacher, plan.size, settings.max_rounds)

    # -- steps -----------------------------------------------------------------------------------

    async def _step(self) -> StepCost:
        task_lm = self.setup.task_model
        with context(lm=task_lm) if task_lm is not None else nullcontext():
            if self.observed is None:
                return await self._first_step()
            if self.grounding is None:
                return await self._second_step()
            if self.phase == "bootstrap" and not self.engine.done:
                return await self._wave()
            if self.phase == "bootstrap":
                self.phase = "propose"
            if self.phase == "propose":
                return await self._propose()
            return await self._search_step()

    def _proposer(self) -> GroundedProposer:
        setup = self.setup
        return GroundedProposer(
            self.base,
            setup.trainset,
            lm=setup.prompt_model,
            temperature=setup.init_temperature,
            view_data_batch_size=setup.view_data_batch_size,
            switches=setup.switches,
        )

    async def _first_step(self) -> StepCost:
        """The first bootstrap wave, the grounding's first round and the default program, at once."""
        # not from self.rng: DSPy's proposer draws nothing there, and later draws must stay its own
        self.grounding_seed = zlib.crc32(f"mipro-grounding:{self.setup.seed}".encode())
        wave, observed, default = await asyncio.gather(
            self._wave(),
            self._proposer().observe(self.grounding_seed),
            self._evaluate([(self.base, self.setup.valset)]),
        )
        self.observed = observed
        if default is None:
            return wave
        self.default_score = default[0].score
        self._note(0, {}, self.default_score, "default program", full=True)
        cost = self._cost(default)
        return StepCost(runs=wave.runs + cost.runs, reported=wave.reported + cost.reported)

    async def _second_step(self) -> StepCost:
        """The grounding's second round, with the next bootstrap wave if there is one."""
        observed = self.observed or Grounding()
        bootstrapping = self.phase == "bootstrap" and not self.engine.done and not self.done
        wave, grounding = await asyncio.gather(
            self._wave() if bootstrapping else _no_cost(),
            self._proposer().ground(observed, self.grounding_seed),
        )
        self.grounding = grounding
        return wave

    async def _wave(self) -> StepCost:
        cost = await self.engine.wave(self)
        if cost.runs == 0 and not self.engine.done:
            self.stop(self.budget.exhausted() or "budget: no room for another bootstrap run")
        return cost

    async def _propose(self) -> StepCost:
        setup = self.setup
        num_sets = len(setup.demo_plans)
        per_predictor = min(setup.plan.num_instruct_candidates, max(num_sets, 1))
        drawn = [
            InstructionRequest(
                p, k, k, draw_tip(self.rng, setup.switches.tip_aware), self.rng.randint(0, ROLLOUT_RANGE)
            )
            for p in range(len(self.paths))
            for k in range(per_predictor)
        ]
        # Candidate 0 is the predictor's own instruction. DSPy proposes one there too and overwrites
        # it: its tip and rollout are drawn and dropped, so the draws after them are DSPy's.
        requests = [request for request in drawn if request.candidate > 0]
        demo_sets = {p: [demos[p] for demos in self.demo_sets()] for p in range(len(self.paths))}
        found = await self._proposer().propose(requests, self.grounding or Grounding(), demo_sets)
        self.instructions = [[p.signature.instructions] for p in self.base.predictors()]
        for request, proposal in zip(requests, found, strict=True):
            label = f"instruction {request.candidate} for {self.paths[request.predictor]}"
            if proposal.text is None:
                self.record(Trial(step=self.step_index, kind="proposal", label=label, error=proposal.error))
            else:
                self.instructions[request.predictor].append(proposal.text)
        counts = ", ".join(str(len(found)) for found in self.instructions)
        logger.info(
            "MIPROv2 proposals: %s instruction candidates per predictor, %s demo sets", counts, num_sets
        )
        note = f"instruction candidates per predictor: {counts}; demo sets: {num_sets}"
        self.record(Trial(step=self.step_index, kind="proposal", label="grounded proposals", note=note))
        self._start_search()
        return StepCost()

    def _start_search(self) -> None:
        """The search space is known now: the default program becomes trial 0 of the study."""
        search = self._new_search()
        params = search.default_params()
        score = self.default_score if self.default_score is not None else 0.0
        search.tell(0, params, score)
        if self.evaluated:
            self.evaluated[0]["params"] = params  # the default program's entry, made before the space was
        self.best = (score, params)
        self.phase = "search"
        self._done_if_last()

    def _new_search(self) -> SearchRecord:
        sets = None if self.setup.zero_shot else [len(self.setup.demo_plans)] * len(self.paths)
        self.search = SearchRecord([len(found) for found in self.instructions], sets)
        return self.search

    async def _search_step(self) -> StepCost:
        """One batch: a full evaluation (of a combination chosen from earlier minibatches) and/or
        sampled trials, evaluated together; then each told to the search, in trial order. A batch
        that ends with the last full evaluation evaluates both combinations it may choose."""
        batch = self.schedule[self.position]
        opening = batch[0] if batch[0].full else None
        closing = batch[-1] if len(batch) > 1 and batch[-1].full else None
        sampled = [trial for trial in batch if not trial.full]
        search = self._searching()
        target = search.best_untried() if opening is not None else None
        chosen = ask_batch(search, self.setup.seed, [t.number for t in sampled]) if sampled else []
        options = self._closing_options(chosen[-1]) if closing is not None and chosen else []
        work: list[tuple[Module, Sequence[Example]]] = []
        if target is not None:
            work.append((self.program(target[1]), self.setup.valset))
        work += self._trial_work(chosen)
        work += [(self.program(params), self.setup.valset) for _, params in options]
        results = await self._evaluate(work) if work else []
        if results is None:
            return StepCost()
        first = 1 if target is not None else 0
        if opening is not None:
            self._told_full(opening, target, results[0] if target is not None else None)
        self._told_sampled(sampled, chosen, results[first : first + len(chosen)])
        if closing is not None:
            self._told_closing(closing, options, results[first + len(chosen) :])
        self.position += 1
        self._done_if_last()
        return self._cost(results)

    def _closing_options(self, last: Params) -> list[tuple[str, Params]]:
        """What a full evaluation right after the trial ``last`` may choose: that trial's
        combination (unless fully evaluated already) or else the best untried one before it."""
        search = self._searching()
        key = combo_key(last)
        options = [] if key in search.fully_evaluated else [(key, last)]
        other = search.best_untried(passing_over=key)
        return options + ([] if other is None else [(other[0], other[1])])

    def _told_closing(
        self,
        scheduled: ScheduledTrial,
        options: Sequence[tuple[str, Params]],
        results: Sequence[EvaluationResult],
    ) -> None:
        """The full evaluation of the combination chosen now that the trial before it is told: one
        of the options, since the other combinations' means did not change (the other option's
        evaluation is spent: DSPy never makes it)."""
        target = self._searching().best_untried()
        found = {key: result for (key, _), result in zip(options, results, strict=True)}
        self._told_full(scheduled, target, found.get(target[0]) if target is not None else None)

    def _trial_work(self, chosen: Sequence[Params]) -> list[tuple[Module, Sequence[Example]]]:
        """Each sampled trial's program and examples: a fresh random minibatch per trial, drawn in
        trial order (or the whole valset without minibatches)."""
        valset = self.setup.valset
        programs = [self.program(params) for params in chosen]
        if not self.setup.plan.minibatch:
            return [(program, valset) for program in programs]
        size = min(self.setup.minibatch_size, len(valset))
        return [
            (program, [valset[i] for i in self.rng.sample(range(len(valset)), size)]) for program in programs
        ]

    def _told_sampled(
        self, batch: Sequence[ScheduledTrial], chosen: Sequence[Params], results: Sequence[EvaluationResult]
    ) -> None:
        search = self._searching()
        full = not self.setup.plan.minibatch
        for trial, params, result in zip(batch, chosen, results, strict=True):
            search.tell(trial.number, params, result.score)
            search.add_minibatch(params, result.score)
            label = f"trial {trial.number}"
            self._note(trial.number, params, result.score, label, full=full, size=len(result.results))
            if full:
                self._maybe_best(result.score, params)

    def _told_full(
        self,
        scheduled: ScheduledTrial,
        target: tuple[str, Params, float] | None,
        result: EvaluationResult | None,
    ) -> None:
        if target is None or result is None:  # every combination tried was fully evaluated already
            label, note = f"trial {scheduled.number}", "skipped: no untried combination"
            self.record(Trial(step=self.step_index, kind="full", label=label, note=note))
            return
        key, params, mean = target
        self._searching().tell(scheduled.number, params, result.score)
        self._searching().fully_evaluated[key] = result.score
        label = f"trial {scheduled.number}: full evaluation (minibatch mean {mean:.2f})"
        logger.info(
            "MIPROv2 trial %s: full evaluation of %s scored %.2f", scheduled.number, key, result.score
        )
        self._note(scheduled.number, params, result.score, label, full=True)
        self._maybe_best(result.score, params)

    # -- evaluation and bookkeeping --------------------------------------------------------------

    async def _evaluate(
        self, work: Sequence[tuple[Module, Sequence[Example]]]
    ) -> list[EvaluationResult] | None:
        """Each program on its examples. Programs sharing the same examples go in one
        ``evaluate_many``; minibatches differ per trial, so their evaluations run side by side."""
        runs = sum(len(examples) for _, examples in work)
        if self.budget_runs(runs, float(len(self.paths))) < runs:
            self.stop(self.budget.exhausted() or f"budget: no room for the next {runs} program runs")
            return None
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (_, examples) in enumerate(work):
            groups.setdefault(tuple(id(e) for e in examples), []).append(index)
        metric = self.setup.settings.metric
        outcomes = await asyncio.gather(
            *(
                self.executor.evaluate_many([work[i][0] for i in members], work[members[0]][1], metric)
                for members in groups.values()
            )
        )
        results: list[EvaluationResult | None] = [None] * len(work)
        for members, group_results in zip(groups.values(), outcomes, strict=True):
            for index, result in zip(members, group_results, strict=True):
                results[index] = result
        done = [result for result in results if result is not None]
        worst = max(done, key=lambda r: r.errors)
        if worst.errors:
            self.check_errors(worst.errors, next(iter(worst.error_messages.values()), "unknown error"))
        return done

    def _cost(self, results: Sequence[EvaluationResult]) -> StepCost:
        runs = sum(result.processed for result in results)
        return StepCost(runs=runs, reported=sum((r.usage for r in results), Usage()))

    def _note(
        self, number: int, params: Params, score: float, label: str, *, full: bool, size: int = 0
    ) -> None:
        program = self.program(params)
        self.evaluated.append(EvaluatedTrial(number=number, params=params, score=score, full=full))
        choice = combo_key(params)
        if full:
            trial = Trial(
                step=self.step_index,
                kind="full",
                label=label,
                candidate_id=candidate_id(program),
                score=score,
                num_examples=len(self.setup.valset),
                note=choice,
            )
        else:  # a minibatch score is not comparable with full ones: it never becomes the best
            note = f"{choice}; minibatch score {score:.2f}"
            trial = Trial(
                step=self.step_index,
                kind="minibatch",
                label=label,
                candidate_id=candidate_id(program),
                num_examples=size,
                note=note,
            )
        self.record(trial)

    def _maybe_best(self, score: float, params: Params) -> None:
        if self.best is None or score > self.best[0]:
            self.best = (score, params)

    def _searching(self) -> SearchRecord:
        return self.search if self.search is not None else self._new_search()

    def _done_if_last(self) -> None:
        if self.position >= len(self.schedule):
            self._finish()
            self.done = True

    # -- programs --------------------------------------------------------------------------------

    def demo_sets(self) -> list[list[list[Example]]]:
        """Per demo set, per predictor, its demos (built once the bootstrap is done)."""
        if self._demo_sets is None:
            sets = []
            for plan in self.setup.demo_plans:
                program = self._demo_program(plan)
                sets.append([list(p.demos) for p in program.predictors()])
            self._demo_sets = sets
        return self._demo_sets

    def _demo_program(self, plan: CandidatePlan) -> Module:
        if plan.kind == "zero-shot":
            return self.base.reset_copy()
        if plan.kind == "labeled":
            return labeled_program(self.base, self.setup.trainset, self.setup.settings.max_labeled_demos)
        return self.tasks[plan.seed].student(self.base, self.setup.settings)

    def program(self, params: Mapping[str, int]) -> Module:
        """The student with the chosen instruction (and demo set) for each predictor."""
        program = self.base.deepcopy()
        for index, predictor in enumerate(program.predictors()):
            if f"{index}_predictor_instruction" in params:
                chosen = self.instructions[index][params[f"{index}_predictor_instruction"]]
                predictor.signature = predictor.signature.with_instructions(chosen)
            if not self.setup.zero_shot and f"{index}_predictor_demos" in params:
                predictor.demos = list(self.demo_sets()[params[f"{index}_predictor_demos"]][index])
        return program

    def _finish(self) -> None:
        for task in self.tasks.values():
            if not task.done:
                task.settle()

    def result(self) -> Module:
        if self.best is None or not self.instructions:
            return self.base.deepcopy()  # stopped before the default program was scored
        score, params = self.best
        best = self.program(params)
        if self.setup.track_stats:
            ranked = sorted(self.evaluated, key=lambda entry: entry["score"], reverse=True)
            best.score = score  # type: ignore[attr-defined]  # as DSPy attaches them
            best.candidate_programs = [self._entry(e) for e in ranked if e["full"]]  # type: ignore[attr-defined]
            best.mb_candidate_programs = [self._entry(e) for e in ranked if not e["full"]]  # type: ignore[attr-defined]
            best.total_calls = self.budget.calls  # type: ignore[attr-defined]
        return best

    def _entry(self, entry: EvaluatedTrial) -> dict[str, Any]:
        return {"score": entry["score"], "program": self.program(entry["params"]), "full_eval": entry["full"]}

    # -- state -----------------------------------------------------------------------------------

    def _state(self) -> MiproState:
        return MiproState(
            phase=self.phase,
            position=self.position,
            rng=rng_state(self.rng),
            tasks=self.engine.state(),
            instructions=self.instructions,
            grounding_seed=self.grounding_seed,
            observed=self.observed,
            grounding=self.grounding,
            default_score=self.default_score,
            search=None if self.search is None else self.search.state(),
            best=None if self.best is None else BestTrial(score=self.best[0], params=self.best[1]),
            evaluated=self.evaluated,
        )

    def _load_state(self, state: MiproState) -> None:
        self.phase, self.position = state.phase, state.position
        restore_rng(self.rng, state.rng)
        self.engine.load(state.tasks)
        self.instructions = [list(found) for found in state.instructions]
        self.grounding_seed = state.grounding_seed
        self.observed, self.grounding = state.observed, state.grounding
        self.default_score = state.default_score
        self.search = None
        if state.search is not None:
            self._new_search().load(state.search)
        self.best = None if state.best is None else (state.best.score, dict(state.best.params))
        self.evaluated = [EvaluatedTrial(**entry) for entry in state.evaluated]
        self._demo_sets = None


async def _no_cost() -> StepCost:
    return StepCost()
