"""GEPA's default instruction proposer next to DSPy 3.4.1's: the same constructor and request fields
(a Predict through JSONAdapter), one shortening call over ``max_chars``, skills, compacted
histories, one retry then a failed proposal; and a run on the simulated LM that still finds the
phrase with the options on."""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from dspex_optimizer_fakes import sim_lm_of
from gepa_fakes import MAGIC, ScriptedLM, dataset, feedback_metric

from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.adapters.types.history import History
from dspex.adapters.types.tool import ToolCallResults, ToolCalls
from dspex.configuration import context
from dspex.errors import ConfigurationError, ReflectionParseError
from dspex.lm.base import BaseLM
from dspex.lm.client import LMResponse
from dspex.lm.usage import Usage
from dspex.modules import Predict
from dspex.optimizers import GEPA
from dspex.optimizers.gepa.proposer import InstructionProposer, compact_history
from dspex.primitives.repl_types import REPLHistory
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing.gepa_task import phrase_feedback_metric
from dspex.testing.task import secret_phrase

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # DSPy marks its proposer experimental
    from dspy.teleprompt.gepa import InstructionProposer as DspyInstructionProposer

HINT = 'wrong: expected 3, got 2. Instructions that say "count the borrows" do better.'
DATASET = {"p": [{"Inputs": {"question": "1 + 2"}, "Generated Outputs": {"answer": "2"}, "Feedback": HINT}]}


class Answers(BaseLM):
    """Replies with the given texts in turn (the last one again once they run out); records requests."""

    def __init__(self, *texts: str) -> None:
        super().__init__("answers", "chat", 0.0, 1000, False)
        self.texts = list(texts)
        self.requests: list[tuple[list[str], int | None]] = []

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, rollout_id: int | None = None, **overrides: Any
    ) -> LMResponse:
        self.requests.append(([str(m.get("content", "")) for m in messages], rollout_id))
        text = self.texts[min(len(self.requests), len(self.texts)) - 1]
        return LMResponse(text=text, model="answers", usage=Usage(lm_calls=1), finish_reason="stop")


def answer(text: str) -> str:
    return json.dumps({"new_instruction": text})


def propose(proposer: InstructionProposer, lm: BaseLM, instruction: str = "Answer the question.") -> str:
    with context(lm=lm):
        return proposer({"p": instruction}, DATASET, ["p"])["p"]


def test_the_constructor_is_dspys_with_prompt_template_as_a_keyword_only_extra() -> None:
    ours = list(inspect.signature(InstructionProposer).parameters.values())
    theirs = list(inspect.signature(DspyInstructionProposer).parameters.values())
    assert len(theirs) == 6
    shape = [(p.name, p.kind, p.default) for p in theirs]
    assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == shape
    extras = [(p.name, p.kind, p.default) for p in ours[len(theirs) :]]
    assert extras == [("prompt_template", inspect.Parameter.KEYWORD_ONLY, None)]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"additional_instructions": "Write in the imperative."},
        {"max_chars": 300},
        {
            "skills": "Prompting notes\nPrefer short rules.",
            "additional_instructions": "Be brief.",
            "max_chars": 99,
        },
    ],
)
def test_the_request_has_dspys_fields_in_dspys_order(options: dict[str, Any]) -> None:
    ours, theirs = InstructionProposer(**options), DspyInstructionProposer(**options)
    assert list(ours.propose.signature.input_fields) == list(theirs.propose.signature.input_fields)
    assert list(ours.propose.signature.output_fields) == list(theirs.propose.signature.output_fields)
    assert (ours.compress is None) == (theirs.compress is None)
    if ours.compress is not None and theirs.compress is not None:
        assert list(ours.compress.signature.fields) == list(theirs.compress.signature.fields)
    assert isinstance(ours.adapter, JSONAdapter)


def test_base_instructions_replace_the_prompt_and_keep_the_fields() -> None:
    proposer = InstructionProposer(base_instructions="  Rewrite the instruction.  ", adapter=ChatAdapter())
    assert proposer.propose.signature.instructions == "Rewrite the instruction."
    assert list(proposer.propose.signature.fields) == [
        "current_instruction",
        "examples_with_feedback",
        "new_instruction",
    ]
    lm = Answers("[[ ## new_instruction ## ]]\nCount the borrows.\n\n[[ ## completed ## ]]")
    assert propose(proposer, lm) == "Count the borrows."  # the given adapter's format, not JSON
    system = lm.requests[0][0][0]
    assert "Rewrite the instruction." in system and "revising the instruction" not in system


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_chars": 0}, "max_chars"),
        ({"max_chars": True}, "max_chars"),
        ({"truncate_history_outputs": "yes"}, "truncate_history_outputs"),
        ({"adapter": "json"}, "adapter"),
        ({"skills": ["Notes\non prompts", 3]}, "str or a Path"),
        ({"prompt_template": "<curr_param> <side_info>", "skills": "Notes\nx"}, "skills"),
        ({"prompt_template": "no placeholders"}, "curr_param"),
    ],
)
def test_bad_arguments_fail_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InstructionProposer(**options)


def test_an_oversized_draft_gets_one_shortening_call_on_the_simulated_lm(sim: SimulatedLMServer) -> None:
    proposer = InstructionProposer(max_chars=40)
    new = propose(proposer, sim_lm_of(sim), "Answer the question. Think step by step.")
    # the draft (current + the feedback's rule) is 66 characters; the shortened one keeps the rule
    assert new == "Always count the borrows." and len(new) <= 40
    requests = sim.control.requests(10)
    assert len(requests) == 2
    assert "[[ ## length_limit ## ]]" in requests[0]["text"]
    assert requests[1]["text"].startswith("[[ ## instruction ## ]]")


def test_a_draft_still_too_long_after_shortening_is_a_failed_proposal() -> None:
    long = "Add the numbers, carry the tens and check the result twice."
    lm = Answers(answer(long), json.dumps({"shortened_instruction": long}))
    with pytest.raises(ReflectionParseError, match="max_chars=20"):
        propose(InstructionProposer(max_chars=20), lm)
    assert len(lm.requests) == 2  # one proposal, one shortening: never a second shortening
    assert "shortened_instruction" in lm.requests[1][0][0]


def test_an_unparsable_shortening_is_a_failed_proposal() -> None:
    lm = Answers(answer("Add the numbers, carry the tens and check the result twice."), "not JSON")
    with pytest.raises(ReflectionParseError, match="shorten"):
        propose(InstructionProposer(max_chars=20), lm)
    assert len(lm.requests) == 2


def test_a_draft_within_the_limit_is_stripped_and_not_shortened() -> None:
    lm = Answers(answer("  Count the borrows.  "))
    assert propose(InstructionProposer(max_chars=20), lm) == "Count the borrows."
    assert len(lm.requests) == 1


@pytest.mark.parametrize("bad", ["this is not JSON", answer("   ")])
def test_an_unusable_answer_is_asked_once_more_with_a_fresh_draw_then_fails(bad: str) -> None:
    lm = Answers(bad)
    with pytest.raises(ReflectionParseError, match="twice"):
        propose(InstructionProposer(), lm)
    assert [rollout for _, rollout in lm.requests] == [None, 1]
    recovered = Answers(bad, answer("Count the borrows."))
    assert propose(InstructionProposer(), recovered) == "Count the borrows."


def test_skills_load_from_a_folder_a_file_and_text_and_reach_the_request(tmp_path: Path) -> None:
    folder = tmp_path / "prompting"
    folder.mkdir()
    (folder / "SKILL.md").write_text(
        "---\nname: prompt-craft\ndescription: How to write rules\n---\nState each rule once.\n"
    )
    (tmp_path / "arith.md").write_text("Carry the tens.\n")
    proposer = InstructionProposer(skills=[str(folder), tmp_path / "arith.md", "Inline notes\nBe concrete."])
    assert [(s.name, s.description) for s in proposer.skills] == [
        ("prompt-craft", "How to write rules"),
        ("arith", None),
        ("Inline notes", None),
    ]
    lm = Answers(answer("Count the borrows."))
    propose(proposer, lm)
    user = lm.requests[0][0][-1]
    assert user.index("[[ ## reference_skills ## ]]") < user.index("[[ ## current_instruction ## ]]")
    assert '<skill name="prompt-craft" description="How to write rules">\nState each rule once.' in user
    assert "Carry the tens." in user and "Be concrete." in user and "---" not in user


def test_a_missing_skill_path_is_a_clear_error_and_prose_stays_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        InstructionProposer(skills=tmp_path / "absent")
    with pytest.raises(ConfigurationError, match="looks like a path"):
        InstructionProposer(skills=str(tmp_path / "absent" / "SKILL.md"))
    with pytest.raises(ConfigurationError, match="looks like a path"):
        InstructionProposer(skills="notes.md")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match=r"no SKILL\.md"):
        InstructionProposer(skills=tmp_path / "empty")
    assert InstructionProposer(skills="Consult the file report.txt").skills[0].content.endswith("report.txt")


def tool_history(result: str) -> History:
    call = ToolCalls.ToolCall(name="search", args={"q": "x"})
    results = ToolCallResults.from_tool_calls_and_values([call], [result])
    return History(
        messages=[{"question": "q", "trajectory": ToolCalls(tool_calls=[call], tool_call_results=results)}]
    )


def test_compact_history_cuts_only_long_tool_results_and_copies() -> None:
    original = tool_history("x" * 2000)
    compacted = compact_history(original)
    value = compacted.messages[0]["trajectory"].tool_call_results.tool_call_results[0].value
    assert value.startswith("x" * 500) and "1,500 of 2,000" in value and len(value) < 560
    assert original.messages[0]["trajectory"].tool_call_results.tool_call_results[0].value == "x" * 2000
    assert compacted.messages[0]["question"] == "q"
    short = compact_history(tool_history("ok"))
    assert short.messages[0]["trajectory"].tool_call_results.tool_call_results[0].value == "ok"


@pytest.mark.parametrize("truncate", [False, True])
def test_truncate_history_outputs_shortens_histories_in_the_examples(truncate: bool) -> None:
    repl = REPLHistory().append(code="print(1)", output="y" * 3000)
    examples = [{"Inputs": {"history": tool_history("x" * 2000), "repl": repl}, "Feedback": HINT}]
    proposer = InstructionProposer(truncate_history_outputs=truncate)
    lm = Answers(answer("Count the borrows."))
    with context(lm=lm):
        proposer({"p": "Answer."}, {"p": examples}, ["p"])
    user = lm.requests[0][0][-1]
    assert ("x" * 2000 in user) is not truncate
    assert ("y" * 1000 in user) is not truncate
    assert examples[0]["Inputs"]["repl"] is repl  # the caller's examples are left alone


def test_prompt_template_sends_gepas_raw_prompt() -> None:
    lm = ScriptedLM()
    template = (
        "Improve this:\n```\n<curr_param>\n```\nRuns:\n<side_info>\nwrite a new instruction in ``` blocks."
    )
    new = propose(InstructionProposer(prompt_template=template), lm)
    assert new == "Answer with the number only."
    assert lm.prompts[0].startswith("Improve this:")


async def test_gepa_with_the_options_still_finds_the_phrase_on_the_simulated_lm(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    (tmp_path / "SKILL.md").write_text("Keep every rule the feedback teaches.\n")
    lm = sim_lm_of(sim)
    proposer = InstructionProposer(skills=tmp_path, additional_instructions="Be brief.", max_chars=90)
    optimizer = GEPA(
        phrase_feedback_metric(4),
        max_metric_calls=90,
        reflection_lm=lm,
        seed=4,
        instruction_proposer=proposer,
    )
    with context(lm=lm):
        found = await optimizer.acompile(
            Predict("question -> answer"),
            trainset=arithmetic_dataset(12, seed=1),
            valset=arithmetic_dataset(8, seed=2),
        )
    assert secret_phrase(4) in found.signature.instructions
    assert len(found.signature.instructions) <= 90
    texts = [r["text"] for r in sim.control.requests(1000)]
    assert any(t.startswith("[[ ## reference_skills ## ]]") for t in texts)
    assert any(t.startswith("[[ ## instruction ## ]]") for t in texts)  # some draft was shortened


async def test_the_default_proposer_drives_a_run_to_the_magic_word() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, max_metric_calls=30, reflection_lm=lm, seed=1)
    with context(lm=lm):
        best = await optimizer.acompile(Predict("question -> answer"), trainset=dataset(4))
    assert MAGIC in best.signature.instructions
    assert lm.prompts and all("[[ ## examples_with_feedback ## ]]" in p for p in lm.prompts)
