"""The next few iterations' parent runs, reflections and child runs, made together ahead of them.

Each gepa iteration starts by running the parent it selects on a minibatch of the trainset; most
iterations end there (the parent was perfect on it) or with a rejected child, and neither changes
gepa's state. So while no candidate is added, the next iterations select their parents and draw
their minibatches exactly as a copy of the candidate selector and batch sampler (with their shared
random generator) predicts from the same state. :func:`prefetch_parents` runs those predicted
(parent, minibatch) pairs in one batch when the current iteration's parent minibatch is not in the
adapter's :class:`~dspex.optimizers.gepa.adapter.RunMemo` yet; the iterations then take their
parents' runs from the memo instead of each waiting for its own round trip.

Nothing of gepa's decisions changes: the copies draw from copied generators, the real iterations
still select, sample, count their metric calls and apply their acceptance rule themselves, and a
memo hit is the run those iterations would have made (see ``reuse_runs`` in :mod:`.gepa`). What a
prediction costs when a candidate is added in between: the predicted runs of parents that are not
selected after all, made for nothing (at most :data:`LOOKAHEAD` minibatches' worth per added
candidate, counted in the run's LM usage and USD cap like any call).

:func:`speculate_children` goes one step further for the same predicted iterations: from the
parents' runs it builds each iteration's reflective dataset as the iteration will (same component
selection, on a copy of the round-robin counters), asks the reflection LM for all of them at once,
keeps the answers in the adapter's :class:`~dspex.optimizers.gepa.adapter.ProposalMemo` and runs
the children on their minibatches (into the run memo). An iteration then finds its reflection and
its child's runs made: a run of rejected proposals (most of a GEPA run) costs three round trips
per :data:`LOOKAHEAD` iterations instead of two or three per iteration. gepa still makes every
decision, with the same inputs; an answer is handed out only to the iteration whose reflection
prompt it answers. The price: when a candidate is added, the reflections and child runs made for
the iterations after it are not used (at most :data:`LOOKAHEAD` of each, bounded by the
metric-call budget left; ``ProposalMemo.made`` and ``used`` count them). A run with an LM-call or
USD cap (``max_lm_calls``, ``max_cost_usd``) makes nothing ahead: there, what is spent is what the
search can still try, and the cap's bound (the calls in flight when it is reached) stays small.

:func:`hedge_parents` covers the round trips an added candidate costs: while gepa scores new
candidates on the valset (and while it scores the seed), the parents the next iterations may select,
the new candidates included, run on the minibatches those iterations will draw, and the reflections
of the parents whose runs there are already known are asked. The first speculated child also runs
on the minibatch of the iteration after its own and on the valset, together with its own minibatch:
if it is added, its valset evaluation waits for nothing and the next iteration, which may select it,
finds its runs made; the hedge made beside those runs leaves them out (its parents include that
child: it would make them again). The next speculated child (:data:`FOLLOWERS`) runs on the
minibatch of the iteration after its own too: if it is added instead, the hedge of its valset
evaluation finds those runs and asks its reflection as a parent meanwhile. Which of these the
iterations take depends on the valset scores; the others are spent for nothing (counted like any
call).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from contextvars import copy_context
from typing import Any, cast

from gepa.gepa_utils import select_program_candidate_from_pareto_front
from gepa.strategies.batch_sampler import EpochShuffledBatchSampler
from gepa.strategies.candidate_selector import (
    CurrentBestCandidateSelector,
    EpsilonGreedyCandidateSelector,
    ParetoCandidateSelector,
    TopKParetoCandidateSelector,
)

from dspex.optimizers.gepa import _threads
from dspex.optimizers.gepa.adapter import ProposalMemo
from dspex.optimizers.gepa.feedback import split_score

__all__ = [
    "HEDGE",
    "LOOKAHEAD",
    "hedge_parents",
    "predicted_proposal_tasks",
    "predicted_tasks",
    "prefetch_parents",
    "speculate_children",
]

logger = logging.getLogger(__name__)

# Iterations whose parents' minibatches are run together (the current one included).
LOOKAHEAD = 8
# Iterations after a candidate's valset evaluation whose possible parents are run meanwhile.
HEDGE = LOOKAHEAD
# Iterations after the first predicted child's whose possible parents run with its valset runs
# (:func:`_lead_runs`). Measured (seeds 0-2 of bench/gepa_vs_dspy.py, 0.1 s): 8 saves 4-5 of
# about 34 round trips over 0 and 3, for about 200 more runs.
LEAD_HEDGE = HEDGE
# Predicted children run on the valset with their minibatches, in order (when the first is
# rejected the second is the likeliest to be added), each also in the hedge's new candidates.
# Measured (seeds 0-2 of bench/gepa_vs_dspy.py, 0.1 s, session 13): 2 leads took 24 / 18 / 25
# round trips and 1,130 / 829 / 974 LM calls against 27 / 19 / 28 and 926 / 658 / 864 with 1; on
# a small budget (tests/unit/optimizers/test_gepa_reuse.py) 2 spend more LM calls than no reuse.
LEADS = 1
# Predicted children after the leads that also run on the minibatch of the iteration after theirs
# (:func:`_next_minibatch_runs`). Measured (seeds 0-2 of bench/gepa_vs_dspy.py, 0.1 s, session 14):
# 26 / 18 / 28 round trips with 1, 2 or 8 against 27 / 19 / 28 with 0, for 939 / 664 / 872 LM calls
# with 1 (941 / 668 / 878 with 2, 954 / 687 / 890 with 8) against 926 / 658 / 864.
FOLLOWERS = 1


class _StateAt:
    """gepa's state as a later iteration would read it when no candidate was added before it."""

    def __init__(self, state: Any, iteration: int) -> None:
        self._state = state
        self.i = iteration

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


def predicted_proposal_tasks(proposer: Any, state: Any, rounds: int) -> list[list[Any]]:
    """gepa's proposal tasks (parent index and candidate, minibatch) of this iteration and the next
    ``rounds - 1``, one list per iteration, as they will be drawn if no candidate is added meanwhile
    (from copies: nothing real is drawn)."""
    selector, sampler = _copies(proposer.candidate_selector, proposer.batch_sampler)
    return [
        list(
            proposer.sampling_strategy.sample_tasks(
                _StateAt(state, state.i + ahead), selector, sampler, proposer.trainset
            )
        )
        for ahead in range(rounds)
    ]


def _copies(selector: Any, sampler: Any) -> tuple[Any, Any]:
    """Copies of the selector and sampler that draw as they will, sharing one copy of the random
    generator they share: gepa's own classes copied field by field (a deep copy of each is most of
    the CPU of a prediction, made several times per iteration), any other deeply."""
    if type(selector) not in _SHALLOW or type(sampler) not in _SHALLOW:
        copied: tuple[Any, Any] = copy.deepcopy((selector, sampler))
        return copied
    rngs: dict[int, random.Random] = {}

    def with_own_rng(part: Any) -> Any:
        # the sampler replaces its lists when it reshuffles, never edits them
        twin = _FrontOnce.of(part) if type(part) is ParetoCandidateSelector else copy.copy(part)
        rng = getattr(part, "rng", None)
        if isinstance(rng, random.Random):
            if id(rng) not in rngs:
                rngs[id(rng)] = _rng_copy(rng)
            twin.rng = rngs[id(rng)]
        return twin

    return with_own_rng(selector), with_own_rng(sampler)


class _FrontOnce(ParetoCandidateSelector):
    """The twin of gepa's Pareto selector in one prediction: the state does not change while a
    prediction draws its iterations, so the front's sampling list (the dominance pruning, most of a
    draw's CPU) is worked out by gepa once, and each draw is gepa's ``rng.choice`` of it."""

    @classmethod
    def of(cls, selector: ParetoCandidateSelector) -> _FrontOnce:
        twin = cls(selector.rng)
        twin.__dict__.update({k: v for k, v in selector.__dict__.items() if k != "rng"})
        return twin

    def __init__(self, rng: random.Random | None) -> None:
        super().__init__(rng)
        self._sampling_list: list[int] | None = None

    # The last front worked out and its sampling list: the predictions of an iteration (and of the
    # iterations until a candidate is added) find the same front. Replaced whole, never edited.
    _last: tuple[Any, list[int]] = ((), [])

    def select_candidate_idx(self, state: Any) -> int:
        if self._sampling_list is None:
            self._sampling_list = self._sampling_list_of(
                state.get_pareto_front_mapping(), state.per_program_tracked_scores
            )
        return int(self.rng.choice(self._sampling_list))

    @classmethod
    def _sampling_list_of(cls, front: dict[Any, set[int]], scores: Any) -> list[int]:
        # in the order gepa reads the front: its sampling list follows that order
        key = (tuple((val_id, tuple(programs)) for val_id, programs in front.items()), tuple(scores))
        last_key, last_list = cls._last
        if key == last_key:
            return last_list
        recorder = _ChoiceRecorder()
        select_program_candidate_from_pareto_front(front, scores, cast(random.Random, recorder))
        cls._last = (key, recorder.sequence)
        return recorder.sequence


class _ChoiceRecorder:
    """Stands for the generator in one of gepa's draws: keeps the list gepa draws from."""

    def __init__(self) -> None:
        self.sequence: list[int] = []

    def choice(self, seq: Sequence[int]) -> int:
        self.sequence = list(seq)
        return self.sequence[0]


def _rng_copy(rng: random.Random) -> random.Random:
    """A generator that draws what ``rng`` will (a plain one from its state: a deep copy reseeds
    from the OS first and costs about 30 times as much)."""
    if type(rng) is not random.Random:
        twin: random.Random = copy.deepcopy(rng)
        return twin
    twin = random.Random()
    twin.setstate(rng.getstate())
    return twin


# gepa's selectors and sampler whose fields are a random generator and values they replace, not edit
_SHALLOW: frozenset[type] = frozenset(
    {
        ParetoCandidateSelector,
        CurrentBestCandidateSelector,
        EpsilonGreedyCandidateSelector,
        TopKParetoCandidateSelector,
        EpochShuffledBatchSampler,
    }
)


def predicted_tasks(proposer: Any, state: Any, rounds: int) -> list[tuple[dict[str, str], list[Any]]]:
    """The (parent candidate, minibatch) pairs of :func:`predicted_proposal_tasks`, in order."""
    return [
        (task.parent_candidate, list(task.minibatch))
        for iteration in predicted_proposal_tasks(proposer, state, rounds)
        for task in iteration
    ]


def prefetch_parents(
    proposer: Any, adapter: Any, state: Any, rounds: int = LOOKAHEAD, evals_left: int | None = None
) -> int:
    """Run the predicted parents' minibatches missing from the memo (see the module) when the
    current iteration would wait for its own; returns how many runs were started.

    ``evals_left``: metric calls the run may still make; iterations beyond them (a parent's and a
    child's minibatch each) are not predicted, the current one always is."""
    memo = getattr(adapter, "memo", None)
    if memo is None or rounds < 1:
        return 0
    try:
        # the current iteration alone first: most iterations find their parent's runs made
        current = predicted_proposal_tasks(proposer, state, 1)[0]
        if all(_known(memo, task.parent_candidate, list(task.minibatch)) for task in current):
            return 0  # this iteration waits for nothing: predict again when it would
        iterations = predicted_proposal_tasks(proposer, state, rounds)
    except Exception as exc:  # a user's selector or sampler that cannot be copied: no prediction
        logger.debug("no prefetch of parent minibatches: %s: %s", type(exc).__name__, exc)
        return 0
    tasks = _within(iterations, evals_left)
    items = _missing(memo, tasks)
    if items:
        adapter.batch_evaluate(items, capture_traces=True)
    return sum(len(batch) for _, batch in items)


def _within(iterations: list[list[Any]], evals_left: int | None) -> list[tuple[dict[str, str], list[Any]]]:
    """The iterations' (parent, minibatch) pairs: the first iteration's, and each later one's while
    it may still start. gepa checks its budget between iterations only, so an iteration starts
    while the calls before it are fewer than ``evals_left``; the earlier ones are counted at their
    parents' minibatches (an iteration whose parent is perfect there spends no more)."""
    tasks: list[tuple[dict[str, str], list[Any]]] = []
    spent = 0
    for ahead, iteration in enumerate(iterations):
        if ahead and evals_left is not None and spent >= evals_left:
            break
        pairs = [(task.parent_candidate, list(task.minibatch)) for task in iteration]
        spent += sum(len(batch) for _, batch in pairs)
        tasks.extend(pairs)
    return tasks


def _known(memo: Any, candidate: dict[str, str], batch: Sequence[Any]) -> bool:
    return len(memo.lookup(candidate, batch, True)) == len(batch)


def _missing(
    memo: Any,
    tasks: Sequence[tuple[dict[str, str], list[Any]]],
    running: Sequence[tuple[dict[str, str], list[Any]]] = (),
) -> list[tuple[dict[str, str], list[Any]]]:
    """One item per candidate: its predicted examples with no run in the memo, each once, and
    none of those in ``running`` (made meanwhile by another batch: they reach the memo with it)."""
    made = {(_key(candidate), id(example)) for candidate, batch in running for example in batch}
    wanted: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], dict[int, Any]]] = {}
    for candidate, batch in tasks:
        known = memo.lookup(candidate, batch, True)
        key = _key(candidate)
        _, examples = wanted.setdefault(key, (candidate, {}))
        for index, example in enumerate(batch):
            if index not in known and (key, id(example)) not in made:
                examples.setdefault(id(example), example)
    return [(candidate, list(examples.values())) for candidate, examples in wanted.values() if examples]


class _SelectorState(_StateAt):
    """The state a component selector reads and advances: the real one, with its own copy of the
    round-robin counters (what the predicted iterations will advance, in turn)."""

    def __init__(self, state: Any) -> None:
        super().__init__(state, state.i)
        self.named_predictor_id_to_update_next_for_program_candidate = copy.deepcopy(
            state.named_predictor_id_to_update_next_for_program_candidate
        )


def speculate_children(
    proposer: Any,
    adapter: Any,
    state: Any,
    evals_left: int,
    rounds: int = LOOKAHEAD,
    valset: Sequence[Any] | None = None,
) -> int:
    """Ask the predicted iterations' reflections and run their children ahead (see the module) when
    the current iteration would wait for its reflection; returns how many reflections were asked.

    ``evals_left``: metric calls the run may still make; iterations beyond them are not predicted.
    ``valset``: the examples a new candidate is scored on; the first predicted children run on
    them together with their minibatches (:func:`_lead_runs`).
    """
    if rounds < 1 or not _speculating(adapter):
        return 0  # (under an LM-call or USD cap, spend buys search, not speed)
    memo, proposals = adapter.memo, adapter.proposals
    try:
        # the current iteration alone first: most find their reflection and child made, or skip
        current = _reflection_jobs(proposer, adapter, state, evals_left, 1)
        if all(_ready(memo, proposals, job) for job in current):
            return 0  # this iteration waits for nothing: predict again when one would
        jobs = _reflection_jobs(proposer, adapter, state, evals_left, rounds)
    except Exception as exc:  # a user's selector or sampler that cannot be copied or predicted
        logger.debug("no speculative reflections: %s: %s", type(exc).__name__, exc)
        return 0
    if not jobs:
        return 0
    asked = [job for job in jobs if job.key not in proposals]
    known = {job.key: _child_of(job, proposals.peek(job.key)) for job in jobs}
    start = 0
    if leads := _leads(jobs, 0, known):
        # their reflections were made (while the last candidate was scored): their children run
        # while the later iterations' reflections are asked, and when one beats its parent (it
        # will be added) the predictions past it are left there
        runs, hedge = _lead_runs(proposer, adapter, state, leads, valset, evals_left)
        texts = _alongside_runs(adapter, runs, lambda: _reflections(adapter, asked), hedge)
        if any(_beats_parent(adapter, job, child) for job, child in leads):
            _keep(proposals, asked, texts)
            return len(asked)
        start = len(leads)  # all rejected: the next predicted children are now the likeliest
    else:
        texts = _reflections(adapter, asked)
    children = _keep(proposals, asked, texts)
    known = {job.key: _child_of(job, proposals.peek(job.key)) for job in jobs}
    children += [child for child in known.values() if child is not None]
    children += _next_minibatch_runs(jobs[start + LEADS : start + LEADS + FOLLOWERS], known)
    hedge = None
    if leads := _leads(jobs, start, known):
        runs, hedge = _lead_runs(proposer, adapter, state, leads, valset, evals_left)
        children += runs
    if hedge is not None:
        _alongside_runs(adapter, children, lambda: None, hedge)
    elif missing := _missing(memo, children):
        adapter.batch_evaluate(missing, capture_traces=True)
    return len(asked)


def _next_minibatch_runs(
    jobs: Sequence[_Job], known: dict[str, tuple[dict[str, str], list[Any]] | None]
) -> list[tuple[dict[str, str], list[Any]]]:
    """The children of ``jobs`` (those past the leads) on the minibatch of the iteration after
    each one's: when one is added although a lead was not, the hedge of its valset evaluation
    finds those runs and asks its reflection as a parent meanwhile (one round trip fewer)."""
    runs = []
    for job in jobs:
        child = known[job.key]
        if child is not None and job.after:
            runs.append((child[0], job.after))
    return runs


def _leads(
    jobs: Sequence[_Job], start: int, known: dict[str, tuple[dict[str, str], list[Any]] | None]
) -> list[tuple[_Job, tuple[dict[str, str], list[Any]]]]:
    """The predicted children from ``jobs[start]`` on, in order, while their reflections are known
    (at most :data:`LEADS`): each is added if those before it are rejected."""
    leads = []
    for job in jobs[start : start + LEADS]:
        child = known[job.key]
        if child is None:
            break
        leads.append((job, child))
    return leads


def _lead_runs(
    proposer: Any,
    adapter: Any,
    state: Any,
    leads: Sequence[tuple[_Job, tuple[dict[str, str], list[Any]]]],
    valset: Sequence[Any] | None,
    evals_left: int,
) -> tuple[list[tuple[dict[str, str], list[Any]]], Callable[[Sequence[Any]], int] | None]:
    """The runs of the first predicted children (:func:`_leads`): each one's minibatch, the next
    iteration's minibatch and the valset (when given); with the valset and metric calls left
    after it, a call to make meanwhile (None without): the runs of the parents the iterations
    after the first child's may select if one of them is added (:func:`hedge_parents` from its
    iteration), given the runs made beside it (it leaves them out).

    The first child is the likeliest to be added, then the next. If one is, gepa's valset
    evaluation of it waits for no LM call, and the next iterations, which may select it or another
    parent, find their parents' runs made: one round trip per added candidate fewer. The runs of
    the others were made for nothing (counted like any call).
    """
    runs = []
    for job, child in leads:
        runs.append(child)
        if job.after:
            runs.append((child[0], job.after))
        if valset:
            # (gepa scores an added child on the valset whatever its budget left: it stops only after)
            runs.append((child[0], list(valset)))
    first = leads[0][0]
    left = evals_left - 2 * len(first.minibatch) - len(valset or ())
    if not valset or left <= 0:
        return runs, None  # no iteration after the child's
    # the copies of the selector and sampler first make the draws of the iterations up to the
    # child's (the current one's included: it has not drawn yet), then those of the hedged ones
    before = _StateAt(state, state.i - 1)
    new_programs = [child[0] for _, child in leads]

    def hedge(running: Sequence[tuple[dict[str, str], list[Any]]]) -> int:
        try:
            return hedge_parents(
                proposer,
                adapter,
                before,
                new_programs,
                evals_left=left,
                rounds=LEAD_HEDGE,
                skip=first.ahead + 1,
                running=running,
            )
        except Exception as exc:  # the hedge only fills the memo: without it the run is the same
            logger.debug("hedged runs after the first child failed: %s: %s", type(exc).__name__, exc)
            return 0

    return runs, hedge


def _ready(memo: Any, proposals: ProposalMemo, job: _Job) -> bool:
    """Whether the job's reflection was made and its child's runs too (or it proposed nothing)."""
    if job.key not in proposals:
        return False
    child = _child_of(job, proposals.peek(job.key))
    return child is None or _known(memo, *child)


def _child_of(job: _Job, texts: dict[str, str] | None) -> tuple[dict[str, str], list[Any]] | None:
    """The child a reflection's texts make and the minibatch it runs on (None: no texts)."""
    return ({**job.parent, **texts}, job.minibatch) if texts else None


def _keep(
    proposals: ProposalMemo, asked: Sequence[_Job], texts: Sequence[dict[str, str] | None]
) -> list[tuple[dict[str, str], list[Any]]]:
    """Store each answer for its iteration; the children the answers make."""
    children = []
    for job, new_texts in zip(asked, texts, strict=True):
        if new_texts is None:
            continue  # failed twice: the iteration asks again itself and records what it gets
        proposals.put(job.key, new_texts)
        if new_texts:
            children.append(({**job.parent, **new_texts}, job.minibatch))
    return children


def _alongside_runs(
    adapter: Any, runs: Sequence[tuple[dict[str, str], list[Any]]], ask: Any, hedge: Any = None
) -> Any:
    """``ask()``'s answers, the ``runs`` missing from the memo (and ``hedge(those runs)``, when
    given) made at the same time."""
    missing = _missing(adapter.memo, runs)
    side = [lambda: adapter.batch_evaluate(missing, capture_traces=True)] if missing else []
    if hedge is not None:
        # the hedge's parents include the leads: their runs made here are not made twice at once
        side.append(functools.partial(hedge, missing))
    if not side:
        return ask()
    futures = [_threads.start(call) for call in side]
    try:
        return ask()
    finally:
        for future in futures:
            future.result()


def _beats_parent(adapter: Any, job: _Job, child: tuple[dict[str, str], list[Any]]) -> bool:
    """Whether the child scores more than its parent on the minibatch (from the memo; False when a
    run is missing): gepa's default acceptance, used here only to stop predicting past it."""
    memo = adapter.memo
    before = memo.lookup(job.parent, job.minibatch, False)
    after = memo.lookup(child[0], child[1], False)
    if len(before) != len(job.minibatch) or len(after) != len(child[1]):
        return False
    return _total(after.values()) > _total(before.values())


def _total(runs: Any) -> float:
    scores = (split_score(run.raw_score)[0] for run in runs)
    return sum(float(score) for score in scores if score is not None)


class _Job:
    """One predicted reflection: the parent, its minibatch, the components and the dataset."""

    __slots__ = ("after", "ahead", "components", "dataset", "key", "minibatch", "parent")

    def __init__(
        self, parent: dict[str, str], minibatch: list[Any], components: list[str], dataset: Any
    ) -> None:
        self.parent, self.minibatch, self.components, self.dataset = parent, minibatch, components, dataset
        self.key = ProposalMemo.key(parent, dataset, components)
        self.after: list[Any] = []  # the minibatch of the iteration after this one, when predicted
        self.ahead = 0  # its iteration: the current one plus this


def _reflection_jobs(proposer: Any, adapter: Any, state: Any, evals_left: int, rounds: int) -> list[_Job]:
    """The predicted iterations' reflections, in order, up to the first parent whose runs are not
    all known or the metric calls left; the current iteration's first, when it reflects.

    The reflective datasets draw from a copy of the adapter's generator, in the order the
    iterations will draw from the real one (which stays as it was)."""
    real_rng = adapter.rng
    adapter.rng = _rng_copy(real_rng)
    try:
        return _predicted_jobs(proposer, adapter, state, evals_left, rounds)
    finally:
        adapter.rng = real_rng


def _predicted_jobs(proposer: Any, adapter: Any, state: Any, evals_left: int, rounds: int) -> list[_Job]:
    selector_state = _SelectorState(state)
    jobs: list[_Job] = []
    spent = 0  # the metric calls of the iterations before (gepa starts one while below its budget)
    iterations = predicted_proposal_tasks(proposer, state, rounds + 1)
    for ahead, (iteration, following) in enumerate(itertools.pairwise(iterations)):
        for task in iteration:
            minibatch = list(task.minibatch)
            if spent >= evals_left or not _known(adapter.memo, task.parent_candidate, minibatch):
                return jobs
            job = _job_for(
                proposer, adapter, selector_state, task.parent_idx, task.parent_candidate, minibatch
            )
            spent += len(minibatch) * (1 if job is None else 2)  # the parent's runs (and the child's)
            if job is not None:
                job.after = list(following[0].minibatch) if following else []
                job.ahead = ahead
                jobs.append(job)
    return jobs


def _capped(budget: Any) -> bool:
    return budget.max_lm_calls is not None or budget.max_cost_usd is not None


def _skipped_as_perfect(proposer: Any, scores: Sequence[Any]) -> bool:
    perfect = proposer.perfect_score
    return bool(proposer.skip_perfect_score and perfect is not None) and all(
        score is not None and score >= perfect for score in scores
    )


def _reflections(adapter: Any, jobs: Sequence[_Job]) -> list[dict[str, str] | None]:
    """Each job's new texts from the adapter's proposer, all asked at once (None: it failed)."""

    def one(job: _Job) -> dict[str, str] | None:
        try:
            texts: dict[str, str] = adapter.reflect(job.parent, job.dataset, job.components)
            return texts
        except Exception as exc:  # the iteration asks again itself and records what it gets
            logger.debug("speculative reflection failed: %s: %s", type(exc).__name__, exc)
            return None

    if len(jobs) <= 1:
        return [copy_context().run(one, job) for job in jobs]
    # each call runs in a copy of the caller's context: the LM, settings and usage trackers
    return _threads.run_all([functools.partial(one, job) for job in jobs])


def _speculating(adapter: Any) -> bool:
    if getattr(adapter, "memo", None) is None or getattr(adapter, "proposals", None) is None:
        return False
    stopper = getattr(adapter, "stopper", None)
    return stopper is None or not _capped(stopper.budget)


def hedge_parents(
    proposer: Any,
    adapter: Any,
    state: Any,
    new_programs: Sequence[dict[str, str]],
    *,
    evals_left: int,
    rounds: int = HEDGE,
    num_threads: int | None = None,
    skip: int = 0,
    running: Sequence[tuple[dict[str, str], list[Any]]] = (),
) -> int:
    """While candidates are scored on the valset (before gepa adds them): run the parents the next
    ``rounds`` iterations may select on the minibatches they will draw, missing from the memo;
    returns how many runs were started. ``skip``: iterations after the current one whose draws
    come first (the copies of the selector and sampler make them), not hedged. ``running``: runs
    another batch is making meanwhile, left out (the memo has them when both have ended).

    Which parent an iteration selects depends on the valset scores being made, so every plausible
    one is run: the new candidates and the parents predicted when none is added. The minibatches
    do not depend on them within the sampler's epoch (a later epoch's shuffle may, and then the
    runs are made for nothing). gepa's decisions do not change: the runs only fill the memo, and
    the iterations find there the runs they would have made. Nothing is run under an LM-call or
    USD cap or with ``speculate`` off; ``num_threads`` bounds the runs in flight.
    """
    if rounds < 1 or not _speculating(adapter):
        return 0
    try:
        iterations = predicted_proposal_tasks(proposer, _StateAt(state, state.i + 1), skip + rounds)[skip:]
    except Exception as exc:  # a user's selector or sampler that cannot be copied: no hedge
        logger.debug("no hedge of parent minibatches: %s: %s", type(exc).__name__, exc)
        return 0
    predicted = _within(iterations, evals_left)
    parents = {_key(candidate): candidate for candidate, _ in predicted}
    parents.update((_key(candidate), candidate) for candidate in new_programs)
    batches = {tuple(id(example) for example in batch): batch for _, batch in predicted}
    items = _missing(adapter.memo, [(p, b) for p in parents.values() for b in batches.values()], running)
    jobs = _next_reflections(proposer, adapter, state, iterations, list(parents.values()))
    asked = [job for job in jobs if job.key not in adapter.proposals]

    def run_items() -> None:
        if items:
            adapter.batch_evaluate(items, capture_traces=True, num_threads=num_threads)

    if asked:
        future = _threads.start(run_items)
        try:
            _keep(adapter.proposals, asked, _reflections(adapter, asked))
        finally:
            future.result()
    else:
        run_items()
    return sum(len(batch) for _, batch in items)


def _next_reflections(
    proposer: Any,
    adapter: Any,
    state: Any,
    iterations: Sequence[Sequence[Any]],
    parents: Sequence[dict[str, str]],
) -> list[_Job]:
    """The reflections the next iterations ask if they select one of ``parents`` whose runs on
    their minibatches are known, up to the first iteration where none of them is known to be
    perfect (before it, a parent may be skipped, which draws nothing), each built as that iteration
    would build it (copies of the adapter's generator and the round-robin counters)."""
    jobs: list[_Job] = []
    for iteration in iterations:
        found = [
            _reflection_of(proposer, adapter, state, task, parent) for task in iteration for parent in parents
        ]
        jobs += [job for job in found if isinstance(job, _Job)]
        if not any(job is True for job in found):
            break  # no parent known to be skipped here: this iteration is taken to reflect
    return jobs


def _reflection_of(proposer: Any, adapter: Any, state: Any, task: Any, parent: dict[str, str]) -> _Job | bool:
    """The reflection an iteration drawing ``task``'s minibatch asks with ``parent`` (False: its
    runs there are not known, True: it is perfect there and the iteration asks none)."""
    minibatch = list(task.minibatch)
    if not _known(adapter.memo, parent, minibatch):
        return False
    pool = list(state.program_candidates)
    selector_state = _SelectorState(state)
    counters = selector_state.named_predictor_id_to_update_next_for_program_candidate
    if parent in pool:
        index = pool.index(parent)
    else:  # a candidate being scored: gepa gives it the next index (its counter is a guess)
        index = len(pool)
        counters.append(max(counters, default=0))
    # a copy for this job (a valset evaluation running meanwhile draws nothing from the generator)
    real_rng = adapter.rng
    adapter.rng = _rng_copy(real_rng)
    try:
        job = _job_for(proposer, adapter, selector_state, index, parent, minibatch)
    finally:
        adapter.rng = real_rng
    return True if job is None else job


def _job_for(
    proposer: Any, adapter: Any, selector_state: Any, index: int, parent: dict[str, str], minibatch: list[Any]
) -> _Job | None:
    """The reflection an iteration with this parent and minibatch asks (None: it asks none)."""
    runs = adapter.evaluate(minibatch, parent, capture_traces=True)  # from the memo
    if not runs.trajectories or _skipped_as_perfect(proposer, runs.scores):
        return None
    components = proposer.module_selector(selector_state, runs.trajectories, runs.scores, index, parent)
    dataset = adapter.make_reflective_dataset(parent, runs, components)
    return _Job(parent, minibatch, list(components), dataset)


def _key(candidate: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(candidate.items()))
