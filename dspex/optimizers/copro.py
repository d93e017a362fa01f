"""``COPRO``: an LM writes instructions (and output prefixes) for each predictor; the best scoring is kept.

    optimizer = COPRO(metric="numeric_equal:answer", breadth=6, depth=3, max_lm_calls=5_000)
    best = optimizer.compile(program, trainset=train)
    [(trial.label, trial.score, trial.note) for trial in optimizer.history.trials]

DSPy's procedure, kept: for every predictor the prompt model proposes ``breadth - 1`` instructions
(each with a prefix for the last output field) from the predictor's own instruction, at
``init_temperature``; the original is a candidate too. Then ``depth`` rounds: every candidate is
scored on the trainset with the metric, each predictor is set to its best so far, and (but after the
last round) the prompt model sees up to ``breadth`` of that predictor's best attempts with their
scores, in increasing order, and proposes ``breadth`` more. A single-predictor program evaluates only
the newest candidates each round; a program with several predictors re-evaluates all of them (the
other predictors changed). The result is the best evaluated program (of equal scores the first, in
predictor then candidate order); ``candidate_programs`` and ``total_calls`` are attached to it, and
``results_best`` / ``results_latest`` with ``track_stats=True`` (keyed by predictor path; "latest"
summarises each predictor's own newest candidates).

What differs: DSPy asks for the proposals with one ``n=breadth`` request and evaluates candidates one
after another. Here every proposal is its own request (its own ``rollout_id``, at
``init_temperature``), all of a round at once; a proposal that cannot be parsed is retried once, then
skipped and recorded in the history (``kind="proposal"`` with ``error``). Then ALL candidates of the
round, of every predictor, are evaluated in one ``executor.evaluate_many``. For several predictors,
DSPy scores predictor ``k``'s candidates with predictors before ``k`` already set to this round's
best; here every predictor's candidates are scored with the others at the previous round's best, so
the round is one evaluation. A program already scored (the same instructions proposed again) is not
evaluated again. ``valset`` (dspex's) scores the candidates on other examples than the trainset.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.configuration import current_settings
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
from dspex.optimizers.budget import Budget
from dspex.optimizers.checkpoint import CoproPhase, CoproState
from dspex.optimizers.copro_proposer import (
    INSTRUCTION_FIELD,
    PREFIX_FIELD,
    STAT_KEYS,
    TOP_STATS,
    FirstProposal,
    ProposalFromAttempts,
    Scored,
    Setting,
    attempts_text,
    current_setting,
    describe,
    proposal_rollout_id,
    summary,
)
from dspex.optimizers.executor import Executor, LocalExecutor, gather_or_cancel
from dspex.optimizers.history import Trial
from dspex.optimizers.proposal import Proposal, propose_text
from dspex.primitives import Example, Module
from dspex.serialization import candidate_id
from dspex.signatures import Signature

__all__ = ["COPRO"]

# What DSPy's Evaluate takes that means something here; the display ones are accepted and ignored.
_EVAL_KWARGS = frozenset(
    {"num_threads", "failure_score", "max_errors", "display_progress", "display_table", "provide_traceback"}
)


class COPRO(Optimizer):
    """DSPy's ``COPRO`` with concurrent proposals, one evaluation per round, budgets and resumable runs.

    dspex's extras: ``max_lm_calls`` / ``max_cost_usd`` (stop with the best so far), ``num_threads`` /
    ``concurrency`` (bound of the default LocalExecutor), ``max_errors`` (failed runs before the
    optimization fails), ``seed`` (other proposals for the same inputs).
    """

    prompt_model: LM | None
    metric: Any
    breadth: int
    depth: int
    init_temperature: float
    track_stats: bool
    concurrency: int
    max_errors: int | None
    seed: int
    _limits: Budget

    def __init__(
        self,
        prompt_model: LM | None = None,
        metric: MetricLike | None = None,
        breadth: int = 10,
        depth: int = 3,
        init_temperature: float = 1.4,
        track_stats: bool = False,
        *,
        num_threads: int | None = None,
        concurrency: int | None = None,
        max_errors: int | None = None,
        seed: int = 0,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("COPRO", unknown, COPRO.__init__)
        if prompt_model is not None and not isinstance(prompt_model, LM):
            raise ConfigurationError(f"prompt_model must be a dspex.LM or None, got {prompt_model!r}")
        if metric is None:
            raise ConfigurationError("COPRO needs a metric, e.g. metric='numeric_equal:answer'")
        if check_int("breadth", breadth) <= 1:
            raise ConfigurationError(
                f"breadth must be greater than 1 (the original is one of them), got {breadth}"
            )
        temperature = init_temperature
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature >= 0:
            raise ConfigurationError(f"init_temperature must be a number >= 0, got {init_temperature!r}")
        self.prompt_model = prompt_model
        self.metric = resolve_metric(metric)
        self.breadth = breadth
        self.depth = check_int("depth", depth, minimum=1)
        self.init_temperature = float(temperature)
        self.track_stats = bool(track_stats)
        self.concurrency = LocalExecutor(concurrency, num_threads=num_threads).concurrency
        self.max_errors = check_int("max_errors", max_errors, optional=True)
        self.seed = check_int("seed", seed, minimum=-(2**63))
        self._limits = Budget(max_lm_calls, max_cost_usd)

    def start(
        self,
        student: Module,
        *,
        trainset: Sequence[Example],
        eval_kwargs: Mapping[str, Any] | None = None,
        valset: Sequence[Example] | None = None,
        executor: Executor | None = None,
        state: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> _COPRORun:
        """The run, checked and ready for its first step (or resumed from ``state``). Its result:
        the best program found (``student`` itself is left unchanged)."""
        reject_unknown("COPRO.compile", unknown, COPRO.start)
        check_has_predictors("COPRO", student)
        options = _eval_options(eval_kwargs)
        train = check_examples("trainset", trainset)
        scored_on = train if valset is None else check_examples("valset", valset)
        check_labels("valset" if valset is not None else "trainset", scored_on, self.metric)
        if executor is None:
            executor = LocalExecutor(options.pop("num_threads", None) or self.concurrency)
        else:
            options.pop("num_threads", None)
            executor = self.executor_or_default(executor)
        run = _COPRORun(self, student, scored_on, executor, options)
        if state is not None:
            run.load_state_dict(state)
        return run


def _eval_options(eval_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """DSPy's ``eval_kwargs`` (keywords of Evaluate) as the executor's: failure_score, max_errors."""
    options = dict(eval_kwargs or {})
    unknown = sorted(set(options) - _EVAL_KWARGS)
    if unknown:
        raise ConfigurationError(f"eval_kwargs: unknown key(s) {unknown}; accepted: {sorted(_EVAL_KWARGS)}")
    for name in ("display_progress", "display_table", "provide_traceback"):
        options.pop(name, None)
    if options.get("num_threads") is not None:
        check_int("eval_kwargs['num_threads']", options["num_threads"], minimum=1)
    return options


class _COPRORun(OptimizerRun):
    """Steps: propose (every predictor's proposals at once), evaluate (every candidate at once), x depth."""

    state_model = CoproState

    def __init__(
        self,
        optimizer: COPRO,
        student: Module,
        examples: list[Example],
        executor: Executor,
        eval_options: dict[str, Any],
    ) -> None:
        budget = Budget(optimizer._limits.max_lm_calls, optimizer._limits.max_cost_usd)
        super().__init__(name="COPRO", executor=executor, budget=budget, max_errors=optimizer.max_errors)
        self.optimizer, self.student, self.examples = optimizer, student, examples
        self.eval_options = eval_options
        self.paths = [path for path, _ in student.named_predictors()]
        self.original: list[Setting] = [current_setting(p) for _, p in student.named_predictors()]
        self.round = 0
        self.phase: CoproPhase = "propose"
        self.current: list[Setting] = list(self.original)  # each predictor's best so far
        self.latest: list[list[Setting]] = [[] for _ in self.paths]  # proposed for the next evaluation
        self.proposed: list[list[Setting]] = [[] for _ in self.paths]  # everything proposed so far
        self.evaluated: list[list[Scored]] = [[] for _ in self.paths]
        self.known: dict[str, float] = {}  # candidate id -> score: a program is evaluated once
        self.stats: dict[str, dict[str, dict[str, list[float]]]] = {"best": {}, "latest": {}}
        self.total_calls = 0  # DSPy's count of candidate evaluations (repeats included)
        self._result: Module | None = None

    # -- steps -----------------------------------------------------------------------------------

    async def _step(self) -> StepCost:
        if self.phase == "propose":
            await self._propose()
            self.phase = "evaluate"
            return StepCost()  # proposals are not program runs: the per-run estimate stays the eval's
        cost = await self._evaluate()
        if not self.done:
            if self.round == self.optimizer.depth - 1:
                self._finish()
                self.done = True
            else:
                self.round, self.phase = self.round + 1, "propose"
        return cost

    async def _propose(self) -> None:
        """This round's proposals for every predictor, all requested at once."""
        if self.optimizer.prompt_model is None and current_settings().lm is None:
            raise ConfigurationError(
                "COPRO needs an LM for its proposals: give prompt_model=, or configure one "
                "(dspex.configure(lm=...) or `with dspex.context(lm=...)`)"
            )
        wanted = self.optimizer.breadth - 1 if self.round == 0 else self.optimizer.breadth
        jobs = [(i, k) for i in range(len(self.paths)) for k in range(wanted)]
        jobs = jobs[: self._affordable_proposals(len(jobs))]
        inputs = [self._proposer_inputs(i) for i in range(len(self.paths))]
        # the first error that is not the proposal's fault (the LM down) cancels the others
        proposals = await gather_or_cancel([self._proposal(i, k, inputs[i]) for i, k in jobs])
        for i in range(len(self.paths)):
            self.latest[i] = []
        for (i, k), proposal in zip(jobs, proposals, strict=True):
            self._take(i, k, proposal)
        if self.round == 0:
            for i, setting in enumerate(self.original):
                self.latest[i].append(setting)  # the original instruction is a candidate too (last)
                self.proposed[i].append(setting)

    def _affordable_proposals(self, wanted: int) -> int:
        limit = self.budget.max_lm_calls
        fit = wanted if limit is None else max(0, min(wanted, limit - self.budget.calls))
        if fit < wanted:
            self.history.stopped = f"budget: {fit} of {wanted} proposals of round {self.round + 1} made"
        return fit

    def _proposer_inputs(self, index: int) -> tuple[type[Signature], dict[str, str]]:
        if self.round == 0:
            return FirstProposal, {"basic_instruction": self.original[index][0]}
        return ProposalFromAttempts, {
            "attempted_instructions": attempts_text(self.evaluated[index], self.optimizer.breadth)
        }

    async def _proposal(self, index: int, k: int, inputs: tuple[type[Signature], dict[str, str]]) -> Proposal:
        signature, values = inputs
        return await propose_text(
            Predict(signature),
            values,
            field=INSTRUCTION_FIELD,
            also=(PREFIX_FIELD,),
            rollout_id=proposal_rollout_id(self.optimizer.seed, self.round, index, k),
            lm=self.optimizer.prompt_model,
            temperature=self.optimizer.init_temperature,
        )

    def _take(self, index: int, k: int, proposal: Proposal) -> None:
        label = f"round {self.round + 1}/{self.optimizer.depth}, {self.paths[index]}: proposal {k + 1}"
        if proposal.text is None:
            self.record(Trial(step=self.step_index, kind="proposal", label=label, error=proposal.error))
            return
        setting = (proposal.text, proposal.extras.get(PREFIX_FIELD) or self.original[index][1])
        self.latest[index].append(setting)
        self.proposed[index].append(setting)
        self.record(Trial(step=self.step_index, kind="proposal", label=label, note=describe(setting)))

    async def _evaluate(self) -> StepCost:
        """Every candidate of the round, of every predictor, in one evaluate_many."""
        jobs = self._round_candidates()
        programs = {cid: program for _, _, cid, program in jobs if cid not in self.known}
        pending = list(programs)
        size = len(self.examples)
        fit = self.budget_runs(len(pending) * size, float(len(self.paths))) // size
        results: list[EvaluationResult] = []
        if pending and fit > 0:
            chosen = [programs[cid] for cid in pending[:fit]]
            results = await self.executor.evaluate_many(
                chosen, self.examples, self.optimizer.metric, **self.eval_options
            )
        fresh = dict(zip(pending, results, strict=False))
        self.known.update((cid, result.score) for cid, result in fresh.items())
        self._record_round(jobs, fresh)
        self._check_failures(results)
        if fit < len(pending):
            self.stop(self.budget.exhausted() or f"budget: evaluated {fit} of {len(pending)} new candidates")
        return StepCost(runs=len(results) * size, reported=sum((r.usage for r in results), Usage()))

    def _round_candidates(self) -> list[tuple[int, Setting, str, Module]]:
        """(predictor, setting, candidate id, program) of the round, in predictor then candidate order."""
        several = len(self.paths) > 1  # then every proposal is re-scored: the other predictors changed
        jobs = []
        for i in range(len(self.paths)):
            for setting in self.proposed[i] if several else self.latest[i]:
                program = self._program(self._with(i, setting))
                jobs.append((i, setting, candidate_id(program), program))
        return jobs

    def _record_round(
        self, jobs: list[tuple[int, Setting, str, Module]], fresh: Mapping[str, EvaluationResult]
    ) -> None:
        for i in range(len(self.paths)):
            mine = [(setting, cid) for p, setting, cid, _ in jobs if p == i]
            latest = [self._record(i, n, len(mine), s, cid, fresh) for n, (s, cid) in enumerate(mine)]
            self._note_stats(i, [s for s in latest[-self.optimizer.breadth :] if s is not None])
        # Only now: every candidate of the round was scored with the others at the previous best.
        for i, pool in enumerate(self.evaluated):
            if pool:
                self.current[i] = max(pool, key=lambda e: e.score).setting

    def _record(
        self, i: int, n: int, count: int, setting: Setting, cid: str, fresh: Mapping[str, EvaluationResult]
    ) -> float | None:
        """One candidate's trial (in candidate order) and its entry; its score, or None if not scored."""
        label = f"round {self.round + 1}/{self.optimizer.depth}, {self.paths[i]}: candidate {n + 1}/{count}"
        score = self.known.get(cid)
        if score is None:
            return None  # not evaluated: the budget ran out first
        self.total_calls += 1
        result = fresh.get(cid)
        reused = "" if result is not None else " (the same program was scored before: score reused)"
        failed = result is not None and _failed(result)
        self.record(
            Trial(
                step=self.step_index,
                kind="full",
                label=label,
                candidate_id=cid,
                score=score,
                num_examples=len(self.examples) if result is not None else 0,
                note=describe(setting) + reused,
                error=f"every example failed: {_first_error(result)}" if result and failed else None,
            )
        )
        self._keep(i, setting, score)
        return score

    def _keep(self, i: int, setting: Setting, score: float) -> None:
        """DSPy's rule: one entry per (instruction, prefix); a later, strictly higher score replaces it."""
        entry = Scored(i, setting, self._with(i, setting), score, self.round)
        for position, old in enumerate(self.evaluated[i]):
            if old.setting == setting:
                if score > old.score:
                    self.evaluated[i][position] = entry
                return
        self.evaluated[i].append(entry)

    def _check_failures(self, results: list[EvaluationResult]) -> None:
        if not results:
            return
        worst = max(results, key=lambda r: r.errors)
        if worst.errors:
            self.check_errors(worst.errors, _first_error(worst))

    def _note_stats(self, i: int, latest: list[float]) -> None:
        if not self.optimizer.track_stats:
            return
        best = sorted((e.score for e in self.evaluated[i]), reverse=True)[:TOP_STATS]
        for kind, scores in (("latest", latest), ("best", best)):
            if scores:
                table = self.stats[kind].setdefault(self.paths[i], {k: [] for k in STAT_KEYS})
                for key, value in summary(self.round, scores).items():
                    table[key].append(value)

    # -- programs --------------------------------------------------------------------------------

    def _with(self, index: int, setting: Setting) -> tuple[Setting, ...]:
        return tuple(setting if i == index else s for i, s in enumerate(self.current))

    def _program(self, settings: Sequence[Setting]) -> Module:
        program = self.student.deepcopy()
        for predictor, (instruction, prefix) in zip(program.predictors(), settings, strict=True):
            last = list(predictor.signature.output_fields)[-1]
            signature = predictor.signature.with_instructions(instruction)
            predictor.signature = signature.with_updated_field(last, prefix=prefix)
        return program

    def _ranked(self) -> list[Scored]:
        """Every evaluated candidate, best first (stable: predictor, then candidate order), no repeats."""
        entries = sorted((e for pool in self.evaluated for e in pool), key=lambda e: e.score, reverse=True)
        seen: set[tuple[Setting, ...]] = set()
        unique = []
        for entry in entries:
            if entry.program not in seen:
                seen.add(entry.program)
                unique.append(entry)
        return unique

    def _finish(self) -> None:
        self._result = self._best()

    def result(self) -> Module:
        return self._result if self._result is not None else self._best()

    def _best(self) -> Module:
        ranked = self._ranked()
        if not ranked:
            return self.student.deepcopy()  # stopped before any evaluation
        programs = [self._program(e.program) for e in ranked]
        best = programs[0]
        candidates = [
            {
                "score": e.score,
                "program": p,
                "instruction": e.setting[0],
                "prefix": e.setting[1],
                "depth": e.depth,
            }
            for e, p in zip(ranked, programs, strict=True)
        ]
        extras: dict[str, Any] = {"candidate_programs": candidates, "total_calls": self.total_calls}
        if self.optimizer.track_stats:
            extras |= {"results_best": self.stats["best"], "results_latest": self.stats["latest"]}
        for name, value in extras.items():
            setattr(best, name, value)  # as DSPy attaches them to the program it returns
        return best

    # -- state -----------------------------------------------------------------------------------

    def _state(self) -> CoproState:
        return CoproState(
            round=self.round,
            phase=self.phase,
            current=self.current,
            latest=self.latest,
            proposed=self.proposed,
            evaluated=self.evaluated,
            known=self.known,
            stats=self.stats,
            total_calls=self.total_calls,
        )

    def _load_state(self, state: CoproState) -> None:
        if len(state.current) != len(self.paths):
            raise ConfigurationError("this COPRO state is of a program with other predictors")
        self.round, self.phase = state.round, state.phase
        self.current = list(state.current)
        self.latest = [list(pool) for pool in state.latest]
        self.proposed = [list(pool) for pool in state.proposed]
        self.evaluated = [list(pool) for pool in state.evaluated]
        self.known = dict(state.known)
        self.stats = state.stats
        self.total_calls = state.total_calls
        self._result = None


def _failed(result: EvaluationResult) -> bool:
    return result.processed > 0 and result.errors == result.processed


def _first_error(result: EvaluationResult) -> str:
    return next(iter(result.error_messages.values()), "unknown error")
