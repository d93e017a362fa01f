"""Signatures: what an LM call takes and gives, typed, with its instructions.

    from dspex.signatures import InputField, OutputField, Signature, make_signature

    class QA(Signature):
        \"\"\"Answer the question with a number.\"\"\"
        question: str = InputField()
        answer: int = OutputField(desc="a number")

    QA2 = make_signature("question, context: list[str] -> answer: int")

See :class:`Signature` for the immutable helpers, :meth:`Signature.dump` for the JSON form, and
:func:`string_to_type` / :func:`type_to_string` for how types are written as text.
"""

from __future__ import annotations

from dspex.signatures._fields import FieldInfo, FieldRole, FieldSpec, InputField, OutputField, default_prefix
from dspex.signatures._signature import (
    Signature,
    default_instructions,
    ensure_signature,
    make_signature,
)
from dspex.signatures._types import string_to_type, type_to_string

__all__ = [
    "FieldInfo",
    "FieldRole",
    "FieldSpec",
    "InputField",
    "OutputField",
    "Signature",
    "default_instructions",
    "default_prefix",
    "ensure_signature",
    "make_signature",
    "string_to_type",
    "type_to_string",
]
