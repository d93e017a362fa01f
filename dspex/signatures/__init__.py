"""Signatures: what an LM call takes and gives, typed, with its instructions.

    from dspex.signatures import InputField, OutputField, Signature, make_signature

    class QA(Signature):
        \"\"\"Answer the question with a number.\"\"\"
        question: str = InputField()
        answer: int = OutputField(desc="a number")

    QA2 = Signature("question, context: list[str] -> answer: int")

The API is DSPy's: fields are pydantic ``FieldInfo`` objects (:class:`FieldSpec`) whose
``json_schema_extra`` holds ``__dspy_field_type``, ``prefix`` and ``desc``; the helpers
(``with_instructions``, ``append``, ``with_updated_fields``...) return new classes;
:meth:`Signature.dump_state` / :meth:`Signature.load_state` are DSPy's saved form and
:meth:`Signature.dump` / :meth:`Signature.from_dump` dspex's full JSON form (types included).
:func:`string_to_type` / :func:`type_to_string` say how types are written as text.
"""

from __future__ import annotations

from dspex.signatures._fields import (
    FIELD_TYPE_KEY,
    IS_TYPE_UNDEFINED,
    FieldInfo,
    FieldRole,
    FieldSpec,
    InputField,
    OutputField,
    default_prefix,
    infer_prefix,
)
from dspex.signatures._signature import (
    Signature,
    _SignatureMeta,
    default_instructions,
    ensure_signature,
    make_signature,
)
from dspex.signatures._types import string_to_type, type_to_string

SignatureMeta = _SignatureMeta  # DSPy's name for the signature classes' metaclass

__all__ = [
    "FIELD_TYPE_KEY",
    "IS_TYPE_UNDEFINED",
    "FieldInfo",
    "FieldRole",
    "FieldSpec",
    "InputField",
    "OutputField",
    "Signature",
    "SignatureMeta",
    "default_instructions",
    "default_prefix",
    "ensure_signature",
    "infer_prefix",
    "make_signature",
    "string_to_type",
    "type_to_string",
]
