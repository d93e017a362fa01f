"""GEPA's reuse of runs (the memo) and its parent prefetch: fewer LM calls and round trips, the same
decisions as a run that makes every evaluation anew."""

from __future__ import annotations

import json
from typing import Any

from dspex_optimizer_fakes import sim_lm_of
from gepa_fakes import MAGIC, ScriptedLM, dataset, feedback_metric

from dspex._sync import run_in_thread
from dspex.configuration import context
from dspex.modules import Predict
from dspex.optimizers import GEPA
from dspex.optimizers.gepa import DspyAdapter
from dspex.optimizers.gepa.adapter import RunMemo
from dspex.optimizers.gepa.prefetch import LOOKAHEAD, hedge_parents, predicted_tasks
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing.gepa_task import phrase_feedback_metric

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


async def test_a_candidate_being_scored_runs_on_the_next_minibatches_meanwhile() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, max_metric_calls=200, reflection_lm=lm, seed=3)
    new = {"self": f"Answer with the number only, and say {MAGIC}."}
    with context(lm=lm):
        run = optimizer.start(student(), trainset=dataset(7), valset=dataset(4, offset=50))
        await run.step()
        proposer, state, adapter = run.parts.engine.reflective_proposer, run.gepa_state, run.adapter
        calls = lm.calls
        started = await run_in_thread(lambda: hedge_parents(proposer, adapter, state, [new], evals_left=100))
    state.i += 1  # the next iteration's draws, had no candidate been added
    upcoming = predicted_tasks(proposer, state, LOOKAHEAD)
    state.i -= 1
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
