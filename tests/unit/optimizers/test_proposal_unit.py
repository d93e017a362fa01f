"""``propose_text``: cleaned proposals, one retry on unusable output, then a skip (never a crash)."""

from __future__ import annotations

from typing import Any

import pytest
from dspex_optimizer_fakes import sim_lm_of

from dspex.errors import ConfigurationError
from dspex.modules import Predict
from dspex.optimizers.proposal import PROPOSAL_ATTEMPTS, clean_proposal, propose_text
from dspex.testing import SimulatedLMServer

PROPOSER = "basic_instruction -> proposed_instruction, proposed_prefix_for_output_field"
INPUTS = {"basic_instruction": "Answer the question."}


async def propose(sim: SimulatedLMServer, rollout_id: int = 1, **kwargs: Any) -> Any:
    return await propose_text(
        Predict(PROPOSER),
        INPUTS,
        field="proposed_instruction",
        also=("proposed_prefix_for_output_field",),
        rollout_id=rollout_id,
        lm=sim_lm_of(sim),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ('"Solve it step by step."', "Solve it step by step."),
        ("Proposed Instruction: Solve it.", "Solve it."),
        ("**Instruction:** Solve it.", "Solve it."),
        ("```\nSolve it.\n```", "Solve it."),
        ("  Answer:  ", "Answer:"),
        ('""', None),
        ("   ", None),
        (None, None),
        (42, None),
    ],
)
def test_clean_proposal(raw: Any, cleaned: str | None) -> None:
    assert clean_proposal(raw) == cleaned


async def test_a_parsable_proposal_comes_back_cleaned_with_its_extra_fields(sim: SimulatedLMServer) -> None:
    proposal = await propose(sim)
    assert not proposal.skipped and proposal.attempts == 1 and proposal.error is None
    assert proposal.text and proposal.text.endswith((".", "integer.", "answer."))
    assert proposal.extras == {"proposed_prefix_for_output_field": "Answer:"}
    assert sim.control.stats()["completions_ok"] == 1
    assert (await propose(sim)).text == proposal.text  # the same rollout: the same proposal


async def test_unparseable_output_is_retried_once_then_skipped_with_the_reason(
    sim: SimulatedLMServer,
) -> None:
    sim.control.configure(garble=1.0, garble_fields="instruction")
    proposal = await propose(sim)
    assert proposal.skipped and proposal.attempts == PROPOSAL_ATTEMPTS == 2
    assert proposal.error is not None and "unparseable proposal" in proposal.error
    assert "after 2 attempts" in proposal.error and "\n" not in proposal.error
    # each attempt: the chat answer and the adapter's JSON fallback, both garbled
    assert sim.control.stats()["completions_ok"] == 2 * PROPOSAL_ATTEMPTS


async def test_the_retry_is_a_fresh_draw_that_can_succeed(sim: SimulatedLMServer) -> None:
    sim.control.configure(garble=0.5, garble_fields="instruction")
    outcomes = [await propose(sim, rollout_id=r) for r in range(40)]
    first_time = [p for p in outcomes if p.attempts == 1 and not p.skipped]
    second_time = [p for p in outcomes if p.attempts == 2 and not p.skipped]
    skipped = [p for p in outcomes if p.skipped]
    assert first_time and second_time and skipped
    assert len(skipped) < len(outcomes) / 2  # two tries (each with a JSON fallback) fail less often


async def test_an_empty_proposal_counts_as_unusable(sim: SimulatedLMServer) -> None:
    # the sim gives this field plain text; asking for a field the proposer never fills gives nothing
    proposal = await propose_text(
        Predict(PROPOSER), INPUTS, field="missing_field", rollout_id=3, lm=sim_lm_of(sim)
    )
    assert proposal.skipped and "empty proposal" in (proposal.error or "")


async def test_other_errors_are_not_the_proposals_fault_and_propagate(sim: SimulatedLMServer) -> None:
    with pytest.raises(ConfigurationError):
        await propose_text(Predict(PROPOSER), INPUTS, field="proposed_instruction", rollout_id=1)
    assert sim.control.stats()["completions_ok"] == 0
