"""``ChainOfThought``: a :class:`~dspex.modules.Predict` that reasons before it answers.

    cot = ChainOfThought("question -> answer")
    pred = cot(question="What is 2 + 3?")
    pred.reasoning, pred.answer

The signature gains a ``reasoning: str`` output field in front of the others, named and described as
DSPy 3.4.1 does it, so the prompts (and optimized programs) mean the same thing in both.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Final, Self

from pydantic.fields import FieldInfo

from dspex.errors import ProgramLoadError
from dspex.modules.predict import Predict
from dspex.primitives import Module, Prediction
from dspex.signatures import OutputField, Signature, ensure_signature

__all__ = ["REASONING_DESC", "REASONING_FIELD", "ChainOfThought"]

REASONING_FIELD: Final = "reasoning"
REASONING_DESC: Final = "${reasoning}"  # DSPy 3.4.1's description of the field, kept for prompt parity


class ChainOfThought(Module):
    """Reason step by step, then answer: ``pred.reasoning`` and the signature's outputs.

    ``ChainOfThought(signature, rationale_field=None, rationale_field_type=str, **config)`` as in DSPy:
    ``rationale_field`` replaces the default ``OutputField(desc="${reasoning}")`` (its annotation is
    then the field's type), ``rationale_field_type`` types the default one. ``**config`` goes to
    :class:`Predict` (request options, ``callbacks``, and dspex's ``lm=``/``adapter=``/``demos=``).
    The predictor is ``self.predict``.
    """

    program_alias: ClassVar[str | None] = "dspex.ChainOfThought"

    def __init__(
        self,
        signature: str | type[Signature],
        rationale_field: FieldInfo | None = None,
        rationale_field_type: Any = str,
        **config: Any,
    ) -> None:
        extended = ensure_signature(signature).prepend(
            REASONING_FIELD,
            rationale_field if rationale_field is not None else OutputField(desc=REASONING_DESC),
            rationale_field.annotation if rationale_field is not None else rationale_field_type,
        )
        self.predict = Predict(extended, **config)

    @property
    def signature(self) -> type[Signature]:
        """The predictor's signature, ``reasoning`` included."""
        return self.predict.signature

    async def aforward(self, **inputs: Any) -> Prediction:
        """Call the predictor (``config=`` and ``lm=`` pass through)."""
        return await self.predict.acall(**inputs)

    def forward(self, **inputs: Any) -> Prediction:
        """DSPy's sync entry point: the same call as :meth:`aforward`."""
        return self.predict(**inputs)

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Built from the saved predictor's signature less ``reasoning``; its state is overlaid after."""
        child = node.get("children", {}).get("predict") if isinstance(node.get("children"), Mapping) else None
        if not isinstance(child, Mapping) or not isinstance(child.get("signature"), Mapping):
            raise ProgramLoadError("a saved ChainOfThought needs its 'predict' child with a signature")
        signature = Signature.from_dump(child["signature"], allow_modules=allow_modules)
        if REASONING_FIELD in signature.output_fields:
            signature = signature.delete(REASONING_FIELD)
        return cls(signature)

    def __repr__(self) -> str:
        return f"ChainOfThought({self.signature.signature_string!r})"
