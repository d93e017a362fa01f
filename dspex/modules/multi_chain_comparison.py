"""``MultiChainComparison``: compare M earlier reasoning attempts and give one corrected answer.

    cot = ChainOfThought("question -> answer")
    attempts = [await cot.acall(question=q, config={"rollout_id": i, "temperature": 1.0}) for i in range(3)]
    mcc = MultiChainComparison("question -> answer", M=3)
    pred = await mcc.acall(completions=attempts, question=q)
    pred.rationale, pred.answer

Each attempt (a prediction or dict with ``reasoning`` or ``rationale`` and the signature's last
output) becomes an input field ``reasoning_attempt_<i>``; the predictor writes a ``rationale`` and
the outputs. Field names, prefixes and descriptions are DSPy 3.4.1's, so prompts match.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

from dspex.errors import ConfigurationError, InputError, ProgramLoadError
from dspex.modules.predict import Predict
from dspex.primitives import Module, Prediction
from dspex.signatures import InputField, OutputField, Signature, ensure_signature

__all__ = ["MultiChainComparison"]

_ATTEMPT_DESC = "${reasoning attempt}"
_RATIONALE_PREFIX = "Accurate Reasoning: Thank you everyone. Let's now holistically"
_RATIONALE_DESC = "${corrected reasoning}"


class MultiChainComparison(Module):
    """Reads ``M`` attempts and answers once. ``temperature`` and ``**config`` (``lm=``, ``adapter=``,
    request options) go to the predictor, ``self.predict``."""

    program_alias: ClassVar[str | None] = "dspex.MultiChainComparison"

    def __init__(
        self,
        signature: str | type[Signature],
        M: int = 3,
        temperature: float = 0.7,
        **config: Any,
    ) -> None:
        if isinstance(M, bool) or not isinstance(M, int) or M < 1:
            raise ConfigurationError(f"MultiChainComparison M must be an integer >= 1, got {M!r}")
        self.signature: type[Signature] = ensure_signature(signature)
        self.M = M
        self.temperature = temperature
        self.last_key = list(self.signature.output_fields)[-1]
        extended = self.signature
        for number in range(1, M + 1):
            field = InputField(prefix=f"Student Attempt #{number}:", desc=_ATTEMPT_DESC)
            extended = extended.append(f"reasoning_attempt_{number}", field, str)
        extended = extended.prepend(
            "rationale", OutputField(prefix=_RATIONALE_PREFIX, desc=_RATIONALE_DESC), str
        )
        self.predict = Predict(extended, temperature=temperature, **config)

    async def aforward(self, completions: Sequence[Any], **inputs: Any) -> Prediction:
        """Compare ``completions`` (exactly ``M`` of them) and answer for ``inputs``."""
        if len(completions) != self.M:
            raise InputError(
                f"MultiChainComparison was built for M={self.M} attempts, got {len(completions)}; "
                "pass M= matching the number of completions"
            )
        attempts = {
            f"reasoning_attempt_{number}": self._attempt_text(completion, number)
            for number, completion in enumerate(completions, start=1)
        }
        return await self.predict.acall(**attempts, **inputs)

    def _attempt_text(self, completion: Any, number: int) -> str:
        get = completion.get if hasattr(completion, "get") else None
        if get is None:
            raise InputError(
                f"completion #{number} is a {type(completion).__name__}; pass predictions or dicts"
            )
        rationale, answer = get("rationale", get("reasoning")), get(self.last_key)
        if rationale is None or answer is None:
            raise InputError(
                f"completion #{number} needs `reasoning` (or `rationale`) and `{self.last_key}`; "
                f"it has {list(completion.keys())}"
            )
        rationale, answer = _first_line(rationale), _first_line(answer)
        return f"«I'm trying to {rationale} I'm not sure but my prediction is {answer}»"

    # -- saving -------------------------------------------------------------------------------

    def program_state(self) -> dict[str, Any]:
        """The signature before extension, ``M`` and ``temperature``."""
        return {"signature": self.signature.dump(), "M": self.M, "temperature": self.temperature}

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Rebuilt from the saved state; the predictor's own state is overlaid after."""
        state = node.get("state")
        if not isinstance(state, Mapping):
            raise ProgramLoadError("a saved MultiChainComparison needs its 'state' object")
        signature = Signature.from_dump(state["signature"], allow_modules=allow_modules)
        return cls(signature, M=state["M"], temperature=state["temperature"])

    def __repr__(self) -> str:
        return f"MultiChainComparison({self.signature.signature_string!r}, M={self.M})"


def _first_line(value: Any) -> str:
    return str(value).strip().split("\n")[0].strip()
