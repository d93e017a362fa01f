"""Instruction proposers: turn a reflective dataset into new instruction text with the reflection LM.

    proposer = InstructionProposer(additional_instructions="Keep it under ten lines.")
    GEPA(metric, auto="light", reflection_lm=strong_lm, instruction_proposer=proposer)

A proposer is gepa's ``ProposalFn``: ``(candidate, reflective_dataset, components_to_update) ->
{component: new text}``. It runs with the reflection LM as the current LM (``dspex.context``), so
its calls go through dspex's LM client like any other: retries, rate limits, usage and budgets.

The default, :class:`InstructionProposer`, sends gepa's reflection prompt (the one ``gepa`` ships,
whose answer is the text between triple backticks). An answer that yields no instruction is asked
for once more; a second failure raises :class:`ReflectionParseError`, which gepa records as a
failed proposal and the run goes on. :class:`MultiModalInstructionProposer` reflects through a
``Predict`` whose examples keep their images as images.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from gepa.strategies.instruction_proposal import InstructionProposalSignature

from dspex.adapters.types.base_type import Type
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError, ReflectionParseError
from dspex.modules import Predict
from dspex.primitives import Module
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "InstructionProposer",
    "MultiModalInstructionProposer",
    "ReflectionParseError",
    "ReflectiveExample",
    "lm_texts",
]

logger = logging.getLogger(__name__)

ReflectiveExample = TypedDict(
    "ReflectiveExample",
    {"Inputs": dict[str, Any], "Generated Outputs": dict[str, Any] | str, "Feedback": str},
)
ReflectiveExample.__doc__ = "One run of a predictor as the reflection LM sees it: inputs, outputs, feedback."


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


class InstructionProposer:
    """gepa's reflection prompt, sent to the current LM; one retry when the answer holds no instruction.

    ``prompt_template``: gepa's template format (``<curr_param>`` and ``<side_info>`` placeholders).
    ``additional_instructions``: appended to every prompt. ``max_chars``: a longer instruction counts
    as unusable (asked once more, then a failed proposal); never cut.
    """

    def __init__(
        self,
        *,
        prompt_template: str | None = None,
        additional_instructions: str | None = None,
        max_chars: int | None = None,
    ) -> None:
        InstructionProposalSignature.validate_prompt_template(prompt_template)
        if max_chars is not None and (
            isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1
        ):
            raise ConfigurationError(f"max_chars must be a positive integer or None, got {max_chars!r}")
        self.prompt_template = prompt_template
        self.additional_instructions = (additional_instructions or "").strip() or None
        self.max_chars = max_chars

    def __call__(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        """A new instruction for each component that has both a current text and reflective examples."""
        return {
            name: self.propose_one(candidate[name], reflective_dataset[name])
            for name in components_to_update
            if name in candidate and name in reflective_dataset
        }

    def propose_one(self, instruction: str, examples: Sequence[Mapping[str, Any]]) -> str:
        prompt = self.render(instruction, examples)
        lm = current_settings().lm
        if lm is None:
            raise ConfigurationError("GEPA's instruction proposer has no LM: give GEPA a reflection_lm")
        problem = ""
        for attempt in range(2):
            # The retry asks for a fresh draw (rollout_id), which a cache cannot answer with the same text.
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
                "prompt_template": self.prompt_template,
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
