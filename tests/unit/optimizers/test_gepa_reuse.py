"""GEPA's reuse of runs (the memo) and its parent prefetch: fewer LM calls and round trips, the same
decisions as a run that makes every evaluation anew."""

from __future__ import annotations

import itertools
import json
import random
import time
from typing import Any
from unittest import mock

import gepa.gepa_utils as gepa_utils
from dspex_optimizer_fakes import sim_lm_of
from gepa.strategies.batch_sampler import EpochShuffledBatchSampler
from gepa.strategies.candidate_selector import ParetoCandidateSelector
from gepa_fakes import MAGIC, ScriptedLM, dataset, feedback_metric

from dspex._sync import run_in_thread
from dspex.configuration import context
from dspex.modules import Predict
from dspex.optimizers import GEPA
from dspex.optimizers.gepa import DspyAdapter, prefetch
from dspex.optimizers.gepa.adapter import RunMemo
from dspex.optimizers.gepa.prefetch import (
    FOLLOWERS,
    LEADS,
    LOOKAHEAD,
    _reflection_jobs,
    hedge_parents,
    predicted_tasks,
    speculate_children,
)
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing.gepa_task import phrase_feedback_metric, score_metric

TRAIN, VAL = arithmetic_dataset(12, seed=1), arithmetic_dataset(8, seed=2)


def student() -> Predict:
    return Predict("question -> answer")


def without_usage(checkpoint: dict[str, Any]) -> dict[str, Any]:
    history = {key: value for key, value in checkpoint["history"].items() if key != "usage"}
    budget = {key: value for key, value in checkpoint["budget"].items() if key != "spent"}
    return {**checkpoint, "history": history, "budget": budget}


async def checkpoints(sim: SimulatedLMServer, **knobs: Any) -> list[dict[str, Any]]:
    lm = sim_lm_of(sim)
    optimizer = GEPA(phrase_feedback_metric(4), max_metric_calls=120, reflection_lm=lm, seed=4, **knobs)
    states: list[dict[str, Any]] = []
    with context(lm=lm):
        run = optimizer.start(Predict("question -> answer"), trainset=TRAIN, valset=VAL)
        while not run.done:
            await run.step()
            states.append(json.loads(json.dumps(run.state_dict())))
    return states


async def test_reused_runs_and_prefetched_parents_change_no_decision_and_save_lm_calls(
    sim: SimulatedLMServer,
) -> None:
    reused = await checkpoints(sim)
    anew = await checkpoints(sim, reuse_runs=False)
    assert [without_usage(s) for s in reused] == [without_usage(s) for s in anew]
    assert len(reused) >= 5
    calls_reused = reused[-1]["history"]["usage"]["lm_calls"]
    calls_anew = anew[-1]["history"]["usage"]["lm_calls"]
    assert calls_reused < calls_anew
    # gepa counts a reused run as a metric call all the same: the budget is DSPy's
    assert (
        reused[-1]["state"]["gepa_state"]["total_num_evals"]
        == anew[-1]["state"]["gepa_state"]["total_num_evals"]
    )


def test_a_candidate_runs_once_per_example_and_traces_are_made_when_wanted() -> None:
    lm = ScriptedLM()
    adapter = DspyAdapter(Predict("question -> answer"), feedback_metric, {}, memo=RunMemo())
    candidate = {"self": f"Say {MAGIC}."}
    batch = dataset(3)
    with context(lm=lm):
        first = adapter.evaluate(batch, candidate)
        assert lm.calls == 3 and first.trajectories is None
        again = adapter.evaluate(batch[1:], candidate)
        assert lm.calls == 3 and again.scores == first.scores[1:] == [1.0, 1.0]
        traced = adapter.evaluate(batch, candidate, capture_traces=True)  # kept runs have no trace
        assert lm.calls == 6 and traced.trajectories is not None
        reordered = adapter.evaluate([batch[2], batch[0]], candidate, capture_traces=True)
        assert lm.calls == 6
        trajectories = reordered.trajectories or []
        assert [t["example_ind"] for t in trajectories] == [0, 1]
        assert [t["example"] for t in trajectories] == [batch[2], batch[0]]
        adapter.evaluate(batch, {"self": "Another instruction."})
        assert lm.calls == 9


async def test_the_prediction_is_what_the_next_rounds_draw() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, max_metric_calls=200, reflection_lm=lm, seed=3)
    with context(lm=lm):
        run = optimizer.start(student(), trainset=dataset(7), valset=dataset(4, offset=50))
        await run.step()  # the seed's valset evaluation
    proposer, state = run.parts.engine.reflective_proposer, run.gepa_state
    state.i += 1  # as run_iteration does before the round's draws
    predicted = predicted_tasks(proposer, state, 5)
    drawn = []
    for _ in range(5):  # rounds that add no candidate: the state changes by its round number only
        tasks = proposer.sampling_strategy.sample_tasks(
            state, proposer.candidate_selector, proposer.batch_sampler, proposer.trainset
        )
        drawn += [(task.parent_candidate, list(task.minibatch)) for task in tasks]
        state.i += 1
    assert predicted == drawn
    assert len({tuple(e.question for e in batch) for _, batch in drawn}) > 1  # not one batch five times


async def test_reflections_asked_ahead_are_the_ones_the_iterations_take(sim: SimulatedLMServer) -> None:
    lm = sim_lm_of(sim)
    optimizer = GEPA(phrase_feedback_metric(4), max_metric_calls=120, reflection_lm=lm, seed=4)
    asked: list[int] = []
    with context(lm=lm):
        run = optimizer.start(student(), trainset=TRAIN, valset=VAL)
        adapter = run.parts.engine.adapter
        reflect = adapter.reflect
        adapter.reflect = lambda *args: asked.append(1) or reflect(*args)  # type: ignore[method-assign]
        while not run.done:
            await run.step()
    proposals = adapter.proposals
    assert proposals is not None and proposals.made == len(asked) - proposals.waited
    # most iterations found their reflection made; the rest came right after an accepted candidate
    assert proposals.used >= 3 and proposals.used > proposals.waited


async def test_a_capped_run_asks_nothing_ahead(sim: SimulatedLMServer) -> None:
    lm = sim_lm_of(sim)
    optimizer = GEPA(
        phrase_feedback_metric(4), max_metric_calls=60, reflection_lm=lm, seed=4, max_lm_calls=400
    )
    with context(lm=lm):
        run = optimizer.start(student(), trainset=TRAIN, valset=VAL)
        while not run.done:
            await run.step()
    proposals = run.parts.engine.adapter.proposals
    assert proposals is not None and proposals.made == proposals.used == 0


async def test_the_seeds_valset_evaluation_runs_the_first_iterations_parents_meanwhile() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, max_metric_calls=200, reflection_lm=lm, seed=3)
    with context(lm=lm):
        run = optimizer.start(student(), trainset=dataset(7), valset=dataset(4, offset=50))
        await run.step()  # the seed's valset evaluation
    proposer, state, memo = run.parts.engine.reflective_proposer, run.gepa_state, run.adapter.memo
    assert memo is not None
    state.i += 1  # as run_iteration does before the round's draws
    predicted = predicted_tasks(proposer, state, LOOKAHEAD)
    state.i -= 1
    assert all(len(memo.lookup(parent, batch, True)) == len(batch) for parent, batch in predicted)
    examples = {id(example) for _, batch in predicted for example in batch}
    assert lm.calls == 4 + len(examples)  # the valset, and each predicted example once

    quiet = ScriptedLM()
    without = GEPA(feedback_metric, max_metric_calls=200, reflection_lm=quiet, seed=3, speculate=False)
    with context(lm=quiet):
        await without.start(student(), trainset=dataset(7), valset=dataset(4, offset=50)).step()
    assert quiet.calls == 4  # nothing ahead without speculate


async def _after_one_round(lm: ScriptedLM) -> Any:
    """A GEPA run on ``lm`` (inside its context) after its first step."""
    optimizer = GEPA(feedback_metric, max_metric_calls=200, reflection_lm=lm, seed=3)
    run = optimizer.start(student(), trainset=dataset(7), valset=dataset(4, offset=50))
    await run.step()
    return run


def _next_iterations_draws(proposer: Any, state: Any) -> Any:
    """The draws of the iterations after the current one, had no candidate been added."""
    state.i += 1
    try:
        return predicted_tasks(proposer, state, LOOKAHEAD)
    finally:
        state.i -= 1


async def test_a_candidate_being_scored_runs_on_the_next_minibatches_meanwhile() -> None:
    lm = ScriptedLM()
    new = {"self": f"Answer with the number only, and say {MAGIC}."}
    with context(lm=lm):
        run = await _after_one_round(lm)
        proposer, state, adapter = run.parts.engine.reflective_proposer, run.gepa_state, run.adapter
        calls = lm.calls
        started = await run_in_thread(lambda: hedge_parents(proposer, adapter, state, [new], evals_left=100))
    upcoming = _next_iterations_draws(proposer, state)
    memo, proposals = adapter.memo, adapter.proposals
    assert memo is not None and proposals is not None and started > 0
    # and the seed, wrong on every example, gets the next iteration's reflection asked as well
    assert proposals.made == 1 and lm.calls == calls + started + 1
    # the new candidate may be the next parents: its runs on their minibatches are made
    assert all(len(memo.lookup(new, batch, True)) == len(batch) for _, batch in upcoming)
    assert state.total_num_evals == 4  # gepa counts nothing: these runs only fill the memo


async def test_the_first_predicted_child_is_scored_on_the_valset_with_its_minibatch() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, max_metric_calls=200, reflection_lm=lm, seed=3)
    valset = dataset(4, offset=50)
    during: list[int] = []  # LM calls made while gepa scores a new candidate on the valset
    with context(lm=lm):
        run = optimizer.start(student(), trainset=dataset(7), valset=valset)
        await run.step()  # the seed
        engine = run.parts.engine
        scored = engine._evaluate_programs_on_valset

        def counted(programs: Any, state: Any) -> Any:
            before = lm.calls
            try:
                return scored(programs, state)
            finally:
                during.append(lm.calls - before)

        engine._evaluate_programs_on_valset = counted  # type: ignore[method-assign]
        await run.step()  # the first reflection: its child has the magic word and is added
    state = run.gepa_state
    assert len(state.program_candidates) == 2 and MAGIC in state.program_candidates[1]["self"]
    assert state.prog_candidate_val_subscores[1] == dict.fromkeys(range(4), 1.0)
    # its valset runs were made with its minibatch, ahead: gepa's evaluation waited for no call
    assert during == [0]
    assert state.total_num_evals == 4 + 2 * 3 + 4  # and counted its metric calls all the same


async def test_a_hedge_from_a_later_iteration_runs_on_the_minibatches_drawn_after_the_ones_before() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, max_metric_calls=200, reflection_lm=lm, seed=3)
    new = {"self": f"Answer with the number only, and say {MAGIC}."}
    skip = 4  # the current iteration and the next three draw first (an epoch ends among them)
    with context(lm=lm):
        run = optimizer.start(student(), trainset=dataset(7), valset=dataset(4, offset=50))
        await run.step()
        proposer, state, adapter = run.parts.engine.reflective_proposer, run.gepa_state, run.adapter
        await run_in_thread(
            lambda: hedge_parents(proposer, adapter, state, [new], evals_left=100, rounds=3, skip=skip)
        )
    state.i += 1  # the current iteration, before its draws
    upcoming = predicted_tasks(proposer, state, skip + 3)[skip:]
    state.i += skip  # a prediction that starts there without the draws before it
    stale = predicted_tasks(proposer, state, 3)
    memo = adapter.memo
    assert memo is not None
    assert all(len(memo.lookup(new, batch, True)) == len(batch) for _, batch in upcoming)
    assert [batch for _, batch in stale] != [batch for _, batch in upcoming]  # the draws before count


async def test_predicted_children_after_the_lead_also_run_on_the_next_iterations_minibatch(
    sim: SimulatedLMServer,
) -> None:
    # if one of them is added instead of the lead, the hedge of its valset evaluation finds its
    # runs there and asks its reflection as a parent meanwhile
    lm = sim_lm_of(sim)
    # a score-only metric: the reflections draw different revisions, so the children differ
    optimizer = GEPA(score_metric, max_metric_calls=400, reflection_lm=lm, seed=4)
    with context(lm=lm):
        run = optimizer.start(student(), trainset=TRAIN, valset=VAL)
        await run.step()  # the seed (and the first iterations' parents, meanwhile)
        proposer, state, adapter = run.parts.engine.reflective_proposer, run.gepa_state, run.adapter
        state.i += 1  # the first iteration, before its draws
        asked = await run_in_thread(
            lambda: speculate_children(proposer, adapter, state, evals_left=300, valset=VAL)
        )
        jobs = await run_in_thread(lambda: _reflection_jobs(proposer, adapter, state, 300, LOOKAHEAD))
    memo, proposals = adapter.memo, adapter.proposals
    assert memo is not None and proposals is not None and asked >= 2
    lead = {**jobs[0].parent, **(proposals.peek(jobs[0].key) or {})}
    followers = [(job, proposals.peek(job.key)) for job in jobs[LEADS : LEADS + FOLLOWERS] if job.after]
    children = [({**job.parent, **texts}, job.after) for job, texts in followers if texts]
    children = [(child, after) for child, after in children if child != lead]
    assert children  # (the test would say nothing without one)
    assert all(len(memo.lookup(child, after, True)) == len(after) for child, after in children)


class _FrontState:
    """The parts of gepa's state its Pareto selector reads: four candidates, five valset fronts."""

    def __init__(self) -> None:
        self.fronts = {0: {0, 2}, 1: {1}, 2: {2, 3}, 3: {0, 1, 3}, 4: {3}}
        self.per_program_tracked_scores = [0.2, 0.5, 0.4, 0.6]
        self.program_full_scores_val_set = list(self.per_program_tracked_scores)
        self.program_candidates = [{"self": str(n)} for n in range(4)]

    def get_pareto_front_mapping(self) -> dict[int, set[int]]:
        return {val_id: set(front) for val_id, front in self.fronts.items()}


def test_a_predictions_pareto_draws_are_gepas_and_prune_the_front_once(monkeypatch: Any) -> None:
    pruned: list[int] = []
    prune = gepa_utils.remove_dominated_programs
    monkeypatch.setattr(
        gepa_utils, "remove_dominated_programs", lambda *a, **k: pruned.append(1) or prune(*a, **k)
    )
    monkeypatch.setattr(prefetch._FrontOnce, "_last", ((), []))
    state, rng = _FrontState(), random.Random(11)
    real = ParetoCandidateSelector(rng)
    twin, _ = prefetch._copies(real, EpochShuffledBatchSampler(3, rng=rng))
    predicted = [twin.select_candidate_idx(state) for _ in range(30)]
    assert len(pruned) == 1  # one pruning for the whole prediction
    again, _ = prefetch._copies(real, EpochShuffledBatchSampler(3, rng=rng))
    assert [again.select_candidate_idx(state) for _ in range(30)] == predicted
    assert len(pruned) == 1  # the next prediction on the same front prunes nothing
    drawn = [real.select_candidate_idx(state) for _ in range(30)]
    assert predicted == drawn and len(set(drawn)) > 1  # gepa's own draws, and not one parent
    state.fronts[4] = {1}  # a new front is pruned anew
    before = len(pruned)
    changed, _ = prefetch._copies(real, EpochShuffledBatchSampler(3, rng=rng))
    changed.select_candidate_idx(state)
    assert len(pruned) == before + 1


async def test_a_hedge_leaves_out_the_runs_another_batch_is_making_meanwhile() -> None:
    lm = ScriptedLM()
    new = {"self": f"Answer with the number only, and say {MAGIC}."}
    with context(lm=lm):
        run = await _after_one_round(lm)
        proposer, state, adapter = run.parts.engine.reflective_proposer, run.gepa_state, run.adapter
        upcoming = _next_iterations_draws(proposer, state)
        running = [(new, upcoming[0][1])]  # the new candidate on the next minibatch, being run elsewhere
        started = await run_in_thread(
            lambda: hedge_parents(proposer, adapter, state, [new], evals_left=100, running=running)
        )
    memo = adapter.memo
    assert memo is not None and started > 0
    assert memo.lookup(new, upcoming[0][1], True) == {}  # left to the other batch
    later = [batch for _, batch in upcoming if not set(map(id, batch)) & set(map(id, upcoming[0][1]))]
    assert later and all(len(memo.lookup(new, batch, True)) == len(batch) for batch in later)


async def test_no_run_of_a_candidate_on_an_example_is_made_twice_at_once(sim: SimulatedLMServer) -> None:
    # the first predicted child's runs and the hedge beside them both cover it on the next
    # minibatches: each run is made by one of them
    lm = sim_lm_of(sim)
    optimizer = GEPA(phrase_feedback_metric(4), max_metric_calls=300, reflection_lm=lm, seed=4)
    spans: list[tuple[tuple[tuple[str, str], ...], int, float, float]] = []
    real_run_batch = DspyAdapter._run_batch

    def recorded(self: DspyAdapter, batch: Any, candidate: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return real_run_batch(self, batch, candidate, *args)
        finally:
            key, ended = tuple(sorted(candidate.items())), time.perf_counter()
            spans.extend((key, id(example), started, ended) for example in batch)

    with context(lm=lm), mock.patch.object(DspyAdapter, "_run_batch", recorded):
        run = optimizer.start(student(), trainset=TRAIN, valset=VAL)
        while not run.done:
            await run.step()
    assert len(spans) > 100
    by_run: dict[tuple[Any, int], list[tuple[float, float]]] = {}
    for key, example, started, ended in spans:
        by_run.setdefault((key, example), []).append((started, ended))
    overlapping = [
        run
        for run, times in by_run.items()
        for (a_start, a_end), (b_start, _) in itertools.pairwise(sorted(times))
        if b_start < a_end
    ]
    assert overlapping == []
