"""Instruction proposers: turn a reflective dataset into new instruction text with the reflection LM.

    proposer = InstructionProposer(skills=["./skills/prompting"], max_chars=1500)
    GEPA(metric, auto="light", reflection_lm=strong_lm, instruction_proposer=proposer)

A proposer is gepa's ``ProposalFn``: ``(candidate, reflective_dataset, components_to_update) ->
{component: new text}``. It runs with the reflection LM as the current LM (``dspex.context``), so
its calls go through dspex's LM client like any other: retries, rate limits, usage and budgets.

The default, :class:`InstructionProposer`, takes DSPy 3.4.1's arguments and works as DSPy's does: a
``Predict`` over a signature ``current_instruction, examples_with_feedback -> new_instruction``
(with optional leading inputs for skills, extra requirements and a length limit), through a
``JSONAdapter`` unless given another adapter. Only the prompt's wording is dspex's own. An answer
that cannot be parsed or is empty is asked for once more; a second failure raises
:class:`ReflectionParseError`, which gepa records as a failed proposal and the run goes on. With
``prompt_template`` (a dspex extra) it sends gepa's own reflection prompt instead.
:class:`MultiModalInstructionProposer` reflects through a ``Predict`` whose examples keep their
images as images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from gepa.strategies.instruction_proposal import InstructionProposalSignature

from dspex.adapters import JSONAdapter
from dspex.adapters.base import Adapter
from dspex.adapters.types.base_type import Type
from dspex.adapters.types.history import History
from dspex.adapters.types.tool import ToolCallResults, ToolCalls
from dspex.configuration import context, current_settings
from dspex.errors import AdapterParseError, ConfigurationError, ReflectionParseError
from dspex.modules import Predict
from dspex.optimizers.gepa._skills import Skill, load_skill, render_skills
from dspex.primitives import Module
from dspex.primitives.repl_types import REPLHistory
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "CompressInstruction",
    "InstructionProposer",
    "MultiModalInstructionProposer",
    "ProposeInstruction",
    "ReflectionParseError",
    "ReflectiveExample",
    "compact_history",
    "lm_texts",
]

logger = logging.getLogger(__name__)

ReflectiveExample = TypedDict(
    "ReflectiveExample",
    {"Inputs": dict[str, Any], "Generated Outputs": dict[str, Any] | str, "Feedback": str},
)
ReflectiveExample.__doc__ = "One run of a predictor as the reflection LM sees it: inputs, outputs, feedback."

_KEPT_CHARS = 500  # what truncate_history_outputs keeps of each tool result / REPL output


def lm_texts(outputs: Sequence[Any]) -> list[str]:
    """The text of each LM output (a string, or a dict with ``text`` when the LM also reasons)."""
    texts = []
    for output in outputs:
        if isinstance(output, str):
            texts.append(output)
        elif isinstance(output, Mapping) and isinstance(output.get("text"), str):
            texts.append(output["text"])
        else:
            raise ReflectionParseError(f"the reflection LM returned {output!r}; expected text")
    return texts


class ProposeInstruction(Signature):
    """You are revising the instruction that an assistant follows for one of my tasks. Below are
    the instruction as it stands and a set of examples: what the assistant received, what it
    answered, and feedback on where each answer falls short.

    Work out from the inputs what the task is and what shape its inputs take. Then go through the
    answers next to their feedback. Put into the new instruction every task-specific fact the
    feedback reveals, since the assistant will not see this feedback again, and any approach that
    worked and would carry over to new inputs. Write the new instruction in full."""

    current_instruction: str = InputField(desc="The instruction the assistant follows now.")
    examples_with_feedback: list[dict[str, Any]] = InputField(
        desc="For each example: the assistant's inputs, its outputs, and feedback on how they fall short."
    )
    new_instruction: str = OutputField(desc="The complete revised instruction.")


class CompressInstruction(Signature):
    """This instruction is over its length limit. Rewrite it to fit: keep every rule, strategy and
    constraint it states, drop repetition and wordiness, add nothing. Answer with the shorter
    instruction alone."""

    instruction: str = InputField()
    length_limit: str = InputField()
    shortened_instruction: str = OutputField()


def compact_history(history: History, max_chars: int = _KEPT_CHARS) -> History:
    """A copy of ``history`` whose tool results (inside ``ToolCalls`` values) keep at most
    ``max_chars`` characters, with a note of how much was cut; everything else as it was."""
    messages = [
        {key: _compact_tool_calls(value, max_chars) for key, value in m.items()} for m in history.messages
    ]
    return history.model_copy(update={"messages": messages})


def _compact_tool_calls(value: Any, max_chars: int) -> Any:
    if not (isinstance(value, ToolCalls) and isinstance(value.tool_call_results, ToolCallResults)):
        return value
    results = value.tool_call_results
    cut = []
    for result in results.tool_call_results:
        text = result.value if isinstance(result.value, str) else str(result.value)
        if len(text) > max_chars:
            note = f" [cut: {len(text) - max_chars:,} of {len(text):,} characters left out]"
            result = result.model_copy(update={"value": text[:max_chars] + note})
        cut.append(result)
    kept = results.model_copy(update={"tool_call_results": cut})
    return value.model_copy(update={"tool_call_results": kept})


def _compact(value: Any) -> Any:
    """``value`` with every History / REPLHistory inside it compacted (``truncate_history_outputs``)."""
    if isinstance(value, History):
        return compact_history(value)
    if isinstance(value, REPLHistory):
        return value.model_copy(update={"max_output_chars": min(value.max_output_chars, _KEPT_CHARS)})
    if isinstance(value, Mapping):
        return {key: _compact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_compact(item) for item in value]
    return value


class InstructionProposer:
    """DSPy 3.4.1's default GEPA proposer: a ``Predict`` asking the current LM for a new instruction.

    ``skills``: reference material, one source or a sequence (a file, a folder holding
    ``SKILL.md``, or inline text; loaded here, a missing path is a ``ConfigurationError``).
    ``additional_instructions``: requirements every proposal must meet. ``base_instructions``:
    replaces the signature's instructions (the fields stay). ``max_chars``: the longest instruction
    accepted, counted after stripping; a longer draft gets one call asking to shorten it, and a
    result still too long (or empty) raises :class:`ReflectionParseError`. Never cut.
    ``truncate_history_outputs``: shorten long tool results in ``History`` values and REPL outputs
    in ``REPLHistory`` values of the examples. ``adapter``: the adapter of the proposer's own calls
    (default ``JSONAdapter()``).

    ``prompt_template`` (dspex only): send gepa's reflection prompt in this template
    (``<curr_param>``, ``<side_info>``) instead of the ``Predict``; only ``additional_instructions``
    and ``max_chars`` combine with it.
    """

    def __init__(
        self,
        skills: str | Path | Sequence[str | Path] | None = None,
        additional_instructions: str | None = None,
        base_instructions: str | None = None,
        max_chars: int | None = None,
        truncate_history_outputs: bool = False,
        adapter: Adapter | None = None,
        *,
        prompt_template: str | None = None,
    ) -> None:
        if max_chars is not None and (
            isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1
        ):
            raise ConfigurationError(f"max_chars must be a positive integer or None, got {max_chars!r}")
        if not isinstance(truncate_history_outputs, bool):
            raise ConfigurationError(
                f"truncate_history_outputs must be a bool, got {truncate_history_outputs!r}"
            )
        if adapter is not None and not isinstance(adapter, Adapter):
            raise ConfigurationError(f"adapter must be a dspex adapter or None, got {type(adapter).__name__}")
        sources = [skills] if isinstance(skills, str | Path) else list(skills or ())
        self.skills: tuple[Skill, ...] = tuple(load_skill(source) for source in sources)
        self.additional_instructions = _text_or_none("additional_instructions", additional_instructions)
        self.base_instructions = _text_or_none("base_instructions", base_instructions)
        self.max_chars = max_chars
        self.truncate_history_outputs = truncate_history_outputs
        self.adapter: Adapter = adapter if adapter is not None else JSONAdapter()
        self.prompt_template = prompt_template
        self._raw: _RawPromptProposer | None = None
        if prompt_template is not None:
            _check_template_options(self, adapter)
            self._raw = _RawPromptProposer(prompt_template, self.additional_instructions, max_chars)
        self.propose = Predict(self._signature())
        self.compress = Predict(CompressInstruction) if max_chars is not None else None

    def _signature(self) -> type[Signature]:
        # The inputs that stay the same across calls come first (a provider's prompt cache can
        # reuse them); each prepend goes to the front, so they are added last-first.
        signature: type[Signature] = ProposeInstruction
        if self.max_chars is not None:
            desc = "The most characters the new instruction may have; a hard limit."
            signature = signature.prepend("length_limit", InputField(desc=desc), str)
        if self.additional_instructions:
            desc = "Requirements from the user that the new instruction must meet."
            signature = signature.prepend("additional_instructions", InputField(desc=desc), str)
        if self.skills:
            desc = "Reference material the user chose and trusts; use it where it helps the new instruction."
            signature = signature.prepend("reference_skills", InputField(desc=desc), str)
        if self.base_instructions:
            signature = signature.with_instructions(self.base_instructions)
        return signature

    def __call__(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        """A new instruction for each component that has both a current text and reflective examples."""
        if current_settings().lm is None:
            raise ConfigurationError("GEPA's instruction proposer has no LM: give GEPA a reflection_lm")
        propose_one = self._raw.propose_one if self._raw is not None else self.propose_one
        return {
            name: propose_one(candidate[name], reflective_dataset[name])
            for name in components_to_update
            if name in candidate and name in reflective_dataset
        }

    def propose_one(self, instruction: str, examples: Sequence[Mapping[str, Any]]) -> str:
        """The new instruction for one component (see the class)."""
        inputs: dict[str, Any] = {}
        if self.skills:
            inputs["reference_skills"] = render_skills(self.skills)
        if self.additional_instructions:
            inputs["additional_instructions"] = self.additional_instructions
        if self.max_chars is not None:
            inputs["length_limit"] = self._limit_text()
        inputs["current_instruction"] = instruction
        inputs["examples_with_feedback"] = [
            _compact(dict(example)) if self.truncate_history_outputs else dict(example)
            for example in examples
        ]
        draft = _ask_twice(self.propose, inputs, "new_instruction", self.adapter)
        return self._within_limit(draft)

    def _limit_text(self) -> str:
        return f"At most {self.max_chars} characters."

    def _within_limit(self, draft: str) -> str:
        if self.max_chars is None or len(draft) <= self.max_chars:
            return draft
        assert self.compress is not None  # built whenever max_chars is set
        try:
            with context(adapter=self.adapter):
                answer = self.compress(instruction=draft, length_limit=self._limit_text())
        except AdapterParseError as error:
            problem = f"asking to shorten a {len(draft)}-character draft: {error}"
            raise ReflectionParseError(problem) from error
        shorter = str(answer.get("shortened_instruction") or "").strip()
        if not shorter or len(shorter) > self.max_chars:
            raise ReflectionParseError(
                f"the reflection LM's instruction has {len(draft)} characters, more than max_chars="
                f"{self.max_chars}, and asking to shorten it gave {len(shorter)}"
            )
        return shorter


def _ask_twice(predict: Predict, inputs: Mapping[str, Any], output: str, adapter: Adapter) -> str:
    """``output`` of ``predict`` stripped; an unparsable or empty answer is asked for once more."""
    problem = ""
    for attempt in range(2):
        # The retry asks for a fresh draw (rollout_id), which a cache cannot answer with the same text.
        config = {} if attempt == 0 else {"rollout_id": attempt}
        try:
            with context(adapter=adapter):
                answer = predict(**inputs, config=config)
        except AdapterParseError as error:
            problem = f"the answer could not be parsed ({error})"
        else:
            text = str(answer.get(output) or "").strip()
            if text:
                return text
            problem = "the answer held no instruction"
        logger.info("reflection answer unusable (%s); attempt %d of 2", problem, attempt + 1)
    raise ReflectionParseError(f"the reflection LM gave no usable instruction twice: {problem}")


def _text_or_none(name: str, value: str | None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str or None, got {type(value).__name__}")
    return (value or "").strip() or None


def _check_template_options(proposer: InstructionProposer, adapter: Adapter | None) -> None:
    """Only ``additional_instructions`` and ``max_chars`` apply to gepa's raw prompt."""
    InstructionProposalSignature.validate_prompt_template(proposer.prompt_template)
    unused = [
        name
        for name, given in (
            ("skills", bool(proposer.skills)),
            ("base_instructions", proposer.base_instructions is not None),
            ("truncate_history_outputs", proposer.truncate_history_outputs),
            ("adapter", adapter is not None),
        )
        if given
    ]
    if unused:
        raise ConfigurationError(
            f"prompt_template sends gepa's own reflection prompt, which {', '.join(unused)} cannot change; "
            "drop prompt_template to use them"
        )


class _RawPromptProposer:
    """gepa's reflection prompt sent as one user message; the instruction is between triple backticks."""

    def __init__(self, template: str, additional_instructions: str | None, max_chars: int | None) -> None:
        self.template = template
        self.additional_instructions = additional_instructions
        self.max_chars = max_chars

    def propose_one(self, instruction: str, examples: Sequence[Mapping[str, Any]]) -> str:
        prompt = self.render(instruction, examples)
        lm: Callable[..., Any] | None = current_settings().lm
        assert lm is not None  # checked by InstructionProposer.__call__
        problem = ""
        for attempt in range(2):
            outputs = lm(prompt) if attempt == 0 else lm(prompt, rollout_id=attempt)
            draft = InstructionProposalSignature.output_extractor(lm_texts(outputs)[0])["new_instruction"]
            problem = self._problem(draft)
            if not problem:
                return draft
            logger.info("reflection answer unusable (%s); attempt %d of 2", problem, attempt + 1)
        raise ReflectionParseError(f"the reflection LM gave no usable instruction twice: {problem}")

    def render(self, instruction: str, examples: Sequence[Mapping[str, Any]]) -> str:
        """The reflection prompt for one component."""
        rendered = InstructionProposalSignature.prompt_renderer(
            {
                "current_instruction_doc": instruction,
                "dataset_with_feedback": [dict(example) for example in examples],
                "prompt_template": self.template,
            }
        )
        prompt = rendered if isinstance(rendered, str) else str(rendered)
        if self.additional_instructions:
            prompt += f"\n\nAdditional requirements for the new instruction:\n{self.additional_instructions}"
        if self.max_chars is not None:
            prompt += f"\n\nThe new instruction must be at most {self.max_chars} characters."
        return prompt

    def _problem(self, draft: str) -> str:
        if not draft.strip():
            return "no instruction text"
        if self.max_chars is not None and len(draft) > self.max_chars:
            return f"{len(draft)} characters, more than max_chars={self.max_chars}"
        return ""


class ImproveInstructionWithImages(Signature):
    """You wrote the instruction below for an assistant that works on visual and textual inputs.
    The examples show what it was given (images included), what it answered and feedback on each
    answer. Write an improved instruction: say what to look for in the images and how to combine it
    with the text, keep any domain facts the feedback reveals, and guard against the mistakes shown."""

    current_instruction: str = InputField(desc="The instruction the assistant was given")
    examples_with_feedback: list[Any] = InputField(  # text, then images
        desc="Each example's inputs, the assistant's outputs and feedback; images are attached"
    )
    improved_instruction: str = OutputField(desc="The improved instruction")


class MultiModalInstructionProposer(Module):
    """Reflection through a ``Predict`` whose examples carry their images as image content."""

    def __init__(self) -> None:
        super().__init__()
        self.propose_instruction = Predict(ImproveInstructionWithImages)

    def __call__(  # type: ignore[override]  # gepa's ProposalFn, not a module call
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        proposals: dict[str, str] = {}
        for name in components_to_update:
            if name in candidate and name in reflective_dataset:
                examples = _with_images(reflective_dataset[name])
                answer = self.propose_instruction(
                    current_instruction=candidate[name], examples_with_feedback=examples
                )
                proposals[name] = answer.improved_instruction
        return proposals


def _with_images(examples: Sequence[Mapping[str, Any]]) -> Any:
    """The examples as markdown text, followed by their images (as image content, not text)."""
    images: list[Type] = []

    def render(value: Any, level: int) -> str:
        if isinstance(value, Type):
            images.append(value)
            return f"[image {len(images)}, attached below]\n\n"
        if isinstance(value, Mapping):
            body = "".join(
                f"{'#' * level} {key}\n{render(item, min(level + 1, 6))}" for key, item in value.items()
            )
            return body or "\n"
        if isinstance(value, list | tuple):
            body = "".join(
                f"{'#' * level} Item {i + 1}\n{render(item, min(level + 1, 6))}"
                for i, item in enumerate(value)
            )
            return body or "\n"
        return f"{str(value).strip()}\n\n"

    text = "\n\n".join(
        f"# Example {n}\n" + "".join(f"## {key}\n{render(value, 3)}" for key, value in example.items())
        for n, example in enumerate(examples, start=1)
    )
    return [text, *images]
