"""GEPA step by step: one gepa round per step, a JSON checkpoint between steps, resume = same trajectory;
the simulated LM's phrase task (feedback finds the phrase, scores alone do not); reflection LMs
under a worker's allowed API bases."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from dspex_optimizer_fakes import sim_lm_of
from gepa.strategies.proposal_sampling import IndependentSampling
from gepa_fakes import ScriptedLM, dataset
from gepa_fakes import feedback_metric as scripted_metric

from dspex.configuration import context
from dspex.errors import ConfigurationError, SecurityPolicyError
from dspex.evaluate import Evaluate
from dspex.lm import LM
from dspex.modules import Predict
from dspex.optimizers import GEPA
from dspex.optimizers.gepa.checkpoint import GEPARunState, decode_value, encode_value
from dspex.optimizers.registry import cluster_optimizer, optimizer_class
from dspex.processors.lms import LMPool
from dspex.processors.security import SecurityPolicy
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing._reflect import reflect, reflect_fields, revise
from dspex.testing.gepa_task import feedback_metric, phrase_feedback_metric, score_metric
from dspex.testing.task import SECRET_PHRASES, secret_phrase

TRAIN, VAL, TEST = (
    arithmetic_dataset(12, seed=1),
    arithmetic_dataset(8, seed=2),
    arithmetic_dataset(30, seed=3),
)


def gepa(metric: Any, lm: LM, **knobs: Any) -> GEPA:
    return GEPA(metric, max_metric_calls=90, reflection_lm=lm, seed=4, **knobs)


def student() -> Predict:
    return Predict("question -> answer")


async def step_all(run: Any, states: list[dict[str, Any]]) -> None:
    while not run.done:
        await run.step()
        states.append(json.loads(json.dumps(run.state_dict())))  # what a checkpoint topic holds


def without_usage(checkpoint: dict[str, Any]) -> dict[str, Any]:
    history = {key: value for key, value in checkpoint["history"].items() if key != "usage"}
    budget = {key: value for key, value in checkpoint["budget"].items() if key != "spent"}
    return {**checkpoint, "history": history, "budget": budget}


async def test_one_round_per_step_and_a_resumed_run_follows_the_same_trajectory(
    sim: SimulatedLMServer,
) -> None:
    lm = sim_lm_of(sim)
    with context(lm=lm):
        whole: list[dict[str, Any]] = []
        run = gepa(phrase_feedback_metric(4), lm).start(student(), trainset=TRAIN, valset=VAL)
        await step_all(run, whole)
        best = run.result()
        assert len(whole) >= 4 and [s["step"] for s in whole] == list(range(1, len(whole) + 1))
        rounds = [s["state"]["gepa_state"]["i"] for s in whole]
        assert rounds == list(range(-1, len(whole) - 1))  # step 1: the seed; then one round each

        for kill_after in (1, len(whole) // 2):
            resumed = gepa(phrase_feedback_metric(4), lm).start(
                student(), trainset=TRAIN, valset=VAL, state=whole[kill_after - 1]
            )
            rest: list[dict[str, Any]] = []
            await step_all(resumed, rest)
            # every later checkpoint equal (same draws, same history) but for the LM usage: the
            # resumed run makes again the runs the uninterrupted one reused from its memo
            assert [without_usage(s) for s in rest] == [without_usage(s) for s in whole[kill_after:]]
            assert rest[-1]["history"]["usage"]["lm_calls"] >= whole[-1]["history"]["usage"]["lm_calls"]
            assert resumed.result().signature.instructions == best.signature.instructions


async def test_the_phrase_is_found_from_feedback_and_beats_zero_shot(sim: SimulatedLMServer) -> None:
    lm = sim_lm_of(sim)
    phrase = secret_phrase(4)
    with context(lm=lm):
        found = await gepa(phrase_feedback_metric(4), lm).acompile(student(), trainset=TRAIN, valset=VAL)
        blind = await gepa(score_metric, lm).acompile(student(), trainset=TRAIN, valset=VAL)
        zero_shot = await Evaluate(devset=TEST, metric=score_metric).acall(student())
        tuned = await Evaluate(devset=TEST, metric=score_metric).acall(found)
    assert phrase in found.signature.instructions
    assert tuned.score > zero_shot.score + 15
    assert not any(p in blind.signature.instructions.lower() for p in SECRET_PHRASES)


def test_the_phrase_is_drawn_per_seed_and_named_only_in_feedback() -> None:
    phrases = {secret_phrase(seed) for seed in range(30)}
    assert len(phrases) > 3 and phrases <= set(SECRET_PHRASES)
    assert secret_phrase(7) == secret_phrase(7)
    gold = TRAIN[0]
    wrong = feedback_metric(gold, {"answer": "nope"})
    assert wrong.score == 0.0 and f'say "{secret_phrase(0)}"' in wrong.feedback
    assert feedback_metric(gold, {"answer": gold.answer}).feedback == "correct."


def test_checkpoint_is_a_frozen_versioned_model_and_values_round_trip() -> None:
    value = {1: {0, 2}, "a": (1, [2, (3,)]), (0, "x"): 1.5, "__tag": None}
    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value
    state = GEPARunState(max_metric_calls=5)
    with pytest.raises(ValueError, match="frozen"):
        state.max_metric_calls = 6  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="version 2"):
        GEPARunState.from_dict({**state.to_dict(), "version": 2})
    with pytest.raises(ValueError, match="extra"):
        GEPARunState.from_dict({**state.to_dict(), "surprise": 1})


def test_registered_for_cluster_jobs_with_json_knobs() -> None:
    assert optimizer_class("gepa") is optimizer_class("GEPA") is GEPA
    knobs = {"auto": "light", "reflection_lm": {"model": "openai/sim", "api_base": "http://127.0.0.1:9/v1"}}
    optimizer = cluster_optimizer("gepa", knobs, {"metric": feedback_metric, "seed": 3, "max_errors": 2})
    assert isinstance(optimizer, GEPA) and optimizer.seed == 3


def test_a_reflection_lm_outside_the_allowed_api_bases_is_refused_before_the_run() -> None:
    pool = LMPool(SecurityPolicy())  # loopback API bases only
    remote = {"model": "openai/gpt-5", "api_base": "https://api.example.com/v1"}
    optimizer = cluster_optimizer(
        "gepa", {"auto": "light", "reflection_lm": remote}, {"metric": feedback_metric}
    )
    with pytest.raises(SecurityPolicyError, match="not allowed"):
        optimizer.bind_worker_lms(pool)  # type: ignore[attr-defined]
    as_lm = GEPA(feedback_metric, auto="light", reflection_lm=LM("openai/gpt-5", api_base=remote["api_base"]))
    with pytest.raises(SecurityPolicyError):
        as_lm.bind_worker_lms(pool)
    local = {"model": "openai/sim", "api_base": "http://127.0.0.1:9/v1"}
    allowed = GEPA(feedback_metric, auto="light", reflection_lm=local)
    allowed.bind_worker_lms(pool)
    assert isinstance(allowed.reflection_lm, LM) and allowed.reflection_lm.api_base == local["api_base"]


def test_unknown_gepa_kwargs_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="cache_evaluation"):
        GEPA(feedback_metric, auto="light", reflection_lm=object(), gepa_kwargs={"cache_evaluation": True})


async def test_log_dir_holds_dspex_json_and_a_second_compile_resumes(
    sim: SimulatedLMServer, tmp_path: Any
) -> None:
    lm = sim_lm_of(sim)
    with context(lm=lm):
        first = await gepa(phrase_feedback_metric(4), lm, log_dir=str(tmp_path)).acompile(
            student(), trainset=TRAIN, valset=VAL
        )
        before = sim.control.stats()["requests_total"]
        again = await gepa(phrase_feedback_metric(4), lm, log_dir=str(tmp_path)).acompile(
            student(), trainset=TRAIN, valset=VAL
        )
    saved = json.loads((tmp_path / "dspex_gepa_run.json").read_text())
    assert saved["done"] and saved["state"]["version"] == 1
    assert not list(tmp_path.glob("*.bin"))  # never gepa's pickle
    assert sim.control.stats()["requests_total"] == before  # a finished run is not run again
    assert again.signature.instructions == first.signature.instructions


def test_the_simulated_reflection_reads_the_phrase_in_either_proposer_form() -> None:
    feedback = 'wrong: expected 3, got 2. Instructions that say "count the borrows" do better.'
    prompt = f"I provided an assistant with the following instructions\n```\nAdd.\n```\n```\n{feedback}\n```"
    assert reflect(prompt) == "```\nAdd. Always count the borrows.\n```"
    dspy_form = {
        "current_instruction": "Add.",
        "examples_with_feedback": json.dumps([{"Feedback": feedback}]),
    }
    revised = reflect_fields(dspy_form, ["new_instruction"])
    assert revised == {"new_instruction": "Add. Always count the borrows."}
    assert reflect_fields({"question": "q"}, ["answer"]) is None
    revisions = set()
    for i in range(200):  # scores alone: a generic revision, never a secret phrase
        scored = f"What is {i} + 1? The answer was {i}. This trajectory got a score of 0.0."
        revised = reflect(prompt.replace(feedback, scored))
        assert not any(phrase in revised.lower() for phrase in SECRET_PHRASES)
        revisions.add(revised)
    assert len(revisions) > 20  # drawn from what the reflection is shown


def test_the_simulated_reflection_draws_from_what_it_is_shown_not_how_it_is_asked() -> None:
    """Two proposers that show the same instruction and feedback in different wording and format
    get the same proposal; a different feedback or instruction draws anew."""
    rows = [
        {"Inputs": {"question": f"What is {a} + 7?"}, "Generated Outputs": {"answer": str(a + 6)},
         "Feedback": f"wrong: expected {a + 7}, got {a + 6}."}
        for a in (12, 40, 93)
    ]  # fmt: skip
    markdown = "\n".join(
        f"# Example {n}\n## Inputs\n### question\n{r['Inputs']['question']}\n## Generated Outputs\n"
        f"### answer\n{r['Generated Outputs']['answer']}\n## Feedback\n{r['Feedback']}"
        for n, r in enumerate(rows, 1)
    )
    prompt = "I provided an assistant with the following instructions\n```\nAdd.\n```\nLook:"
    prompt += f"\n```\n{markdown}\n```"
    dspy_form = {"current_instruction": "Add.", "examples_with_feedback": json.dumps(rows)}
    as_json = reflect_fields(dspy_form, ["new_instruction"])
    assert as_json == {"new_instruction": reflect(prompt).strip("`\n")}
    assert reflect(prompt.replace("Look:", "Here are the examples, in another wording:")) == reflect(prompt)
    drawn = {revise("Add.", json.dumps(rows).replace("+ 7", f"+ {k}")) for k in range(8, 40)}
    drawn |= {revise(f"Add {k}.", json.dumps(rows)).replace(f"Add {k}.", "Add.") for k in range(40)}
    assert len(drawn) > 10


async def test_the_reflections_of_one_iteration_run_at_once() -> None:
    class SlowReflection(ScriptedLM):
        in_flight = most = 0

        async def acomplete(self, messages: Any, **kwargs: Any) -> Any:
            reflecting = "new_instruction" in str(messages[0].get("content", ""))
            if not reflecting:
                return await super().acomplete(messages, **kwargs)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.05)
            self.in_flight -= 1
            return await super().acomplete(messages, **kwargs)

    lm = SlowReflection()
    optimizer = GEPA(
        scripted_metric,
        max_metric_calls=20,
        reflection_lm=lm,
        sampling_strategy=IndependentSampling(3),
        speculate=False,  # no later iteration's reflections asked ahead: only this iteration's
    )
    with context(lm=lm):
        await optimizer.acompile(student(), trainset=dataset(9), valset=dataset(3, offset=50))
    assert lm.most == 3  # the iteration's three reflections were in flight together
