"""``ChainOfThought``: a :class:`~dspex.modules.Predict` that reasons before it answers.

    cot = ChainOfThought("question -> answer")
    pred = cot(question="What is 2 + 3?")
    pred.reasoning, pred.answer

The signature gains a ``reasoning: str`` output field in front of the others, named and described as
DSPy 3.4.1 does it, so the prompts (and optimized programs) mean the same thing in both.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Final, Self

from dspex.adapters import Adapter
from dspex.errors import ProgramLoadError
from dspex.lm import LM
from dspex.modules.predict import Predict
from dspex.primitives import Example, Module, Prediction
from dspex.signatures import OutputField, Signature, ensure_signature

__all__ = ["REASONING_DESC", "REASONING_FIELD", "ChainOfThought"]

REASONING_FIELD: Final = "reasoning"
REASONING_DESC: Final = "${reasoning}"  # DSPy 3.4.1's description of the field, kept for prompt parity


class ChainOfThought(Module):
    """Reason step by step, then answer: ``pred.reasoning`` and the signature's outputs.

    Takes :class:`Predict`'s arguments; the predictor is ``self.predict``.
    """

    program_alias: ClassVar[str | None] = "dspex.ChainOfThought"

    def __init__(
        self,
        signature: str | type[Signature],
        *,
        lm: LM | None = None,
        adapter: Adapter | None = None,
        demos: Sequence[Example | Mapping[str, Any]] | None = None,
        **config: Any,
    ) -> None:
        extended = ensure_signature(signature).prepend(REASONING_FIELD, OutputField(desc=REASONING_DESC), str)
        self.predict = Predict(extended, lm=lm, adapter=adapter, demos=demos, **config)

    @property
    def signature(self) -> type[Signature]:
        """The predictor's signature, ``reasoning`` included."""
        return self.predict.signature

    async def aforward(self, **inputs: Any) -> Prediction:
        """Call the predictor (``config=`` and ``lm=`` pass through)."""
        return await self.predict.acall(**inputs)

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
