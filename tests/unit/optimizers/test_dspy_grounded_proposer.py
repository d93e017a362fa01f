"""DSPy's GroundedProposer interface (dspex.propose.grounded_proposer) over MIPROv2's proposer."""

from __future__ import annotations

import random
from typing import Any

import dspex
from dspex.propose.grounded_proposer import GroundedProposer
from dspex.utils import DummyLM


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = dspex.Predict("question -> draft")
        self.answer = dspex.Predict("question, draft -> answer")

    def forward(self, question: str) -> Any:
        draft = self.draft(question=question).draft
        return self.answer(question=question, draft=draft)


class CopyRecordingLM(DummyLM):
    def copy(self, **kwargs: Any) -> Any:
        self.copies = [*getattr(self, "copies", []), kwargs]
        return super().copy(**kwargs)


def _proposer(lm: DummyLM, program: dspex.Module, **options: Any) -> GroundedProposer:
    return GroundedProposer(prompt_model=lm, program=program, trainset=[], verbose=False, **options)


def test_one_list_of_instructions_per_predictor() -> None:
    program = TwoSteps()
    lm = DummyLM([{"proposed_instruction": "Be brief."}] * 20)
    proposals = _proposer(lm, program).propose_instructions_for_program(
        trainset=[], program=program, demo_candidates=None, trial_logs={}, N=2
    )
    assert proposals == {0: ["Be brief.", "Be brief."], 1: ["Be brief.", "Be brief."]}


def test_demo_sets_cap_the_count_and_each_proposal_runs_on_a_warm_copy() -> None:
    program = TwoSteps()
    lm = CopyRecordingLM([{"proposed_instruction": "Think first."}] * 20)
    demos = [[[dspex.Example(question="q", draft="d").with_inputs("question")]]] * 2  # one set each
    proposer = _proposer(lm, program, init_temperature=0.4)
    proposals = proposer.propose_instructions_for_program([], program, demos, {}, N=5)
    assert proposals == {0: ["Think first."], 1: ["Think first."]}
    one = proposer.propose_instruction_for_predictor(program, None, 1, demos, 0, {}, tip="Be bold.")
    assert one == "Think first."
    assert [kwargs["temperature"] for kwargs in lm.copies] == [0.4, 0.4]


def test_unusable_answers_keep_the_current_instruction() -> None:
    program = dspex.Predict("question -> answer")
    lm = DummyLM([{"something_else": "x"}] * 20)
    proposals = _proposer(lm, program).propose_instructions_for_program([], program, None, {}, N=1)
    assert proposals == {0: [program.signature.instructions]}


def test_the_rng_decides_tips_and_rollouts_reproducibly() -> None:
    program = dspex.Predict("question -> answer")
    lm = DummyLM([{"proposed_instruction": "x"}] * 20)
    first = _proposer(lm, program, rng=random.Random(7))
    second = _proposer(lm, program, rng=random.Random(7))
    assert [first._tip() for _ in range(5)] == [second._tip() for _ in range(5)]
    assert len({first._tip() for _ in range(40)}) > 1  # tips are drawn, not fixed
    assert _proposer(lm, program, use_tip=False)._tip() == ""
