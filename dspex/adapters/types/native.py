"""Output types an LM can fill natively (``Citations``, ``Reasoning``), on DSPy-style adapter calls.

Before the call, each output field whose type is in the adapter's ``native_response_types`` may
take itself out of the signature and set a request option (``Type.adapt_to_native_lm_feature``,
e.g. ``reasoning_effort``). After it, such fields are read from the response itself
(``Type.parse_lm_response``: ``reasoning_content``, ``citations``), and the fields the LM was not
asked for take their defaults. Signatures with no such field skip all of this: which fields
qualify is worked out once per signature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dspex.adapters.types._cache import SignatureCache
from dspex.adapters.types.base_type import Type
from dspex.adapters.types.citation import Citations
from dspex.adapters.types.reasoning import Reasoning
from dspex.adapters.utils import apply_output_field_defaults

if TYPE_CHECKING:
    from dspex.signatures import Signature

__all__ = ["DEFAULT_NATIVE_RESPONSE_TYPES", "adapt_to_native_types", "complete_native_outputs"]

DEFAULT_NATIVE_RESPONSE_TYPES: tuple[type[Type], ...] = (Citations, Reasoning)

# per signature class: its outputs whose type is a Type subclass, as (name, type)
_TYPED_OUTPUTS: SignatureCache[tuple[tuple[str, type[Type]], ...]] = SignatureCache()


def _typed_outputs(signature: type[Signature]) -> tuple[tuple[str, type[Type]], ...]:
    return _TYPED_OUTPUTS.get(signature, signature.output_fields, _find_typed_outputs)


def _find_typed_outputs(signature: Any) -> tuple[tuple[str, type[Type]], ...]:
    return tuple(
        (name, spec.annotation)
        for name, spec in signature.output_fields.items()
        if isinstance(spec.annotation, type) and issubclass(spec.annotation, Type)
    )


def _native_outputs(signature: type[Signature], native_types: Sequence[type]) -> list[tuple[str, type[Type]]]:
    return [(name, kind) for name, kind in _typed_outputs(signature) if kind in native_types]


def adapt_to_native_types(
    signature: type[Signature], native_types: Sequence[type], lm: Any, lm_kwargs: dict[str, Any]
) -> type[Signature]:
    """The signature to format for this LM; ``lm_kwargs`` may gain options (e.g. ``reasoning_effort``)."""
    typed = _typed_outputs(signature)
    if not typed:  # the common case: nothing to adapt
        return signature
    for name, kind in typed:
        if kind in native_types:
            signature = kind.adapt_to_native_lm_feature(signature, name, lm, lm_kwargs)
    return signature


def complete_native_outputs(
    original: type[Signature],
    processed: type[Signature],
    native_types: Sequence[type],
    output: Any,
    value: dict[str, Any],
) -> dict[str, Any]:
    """``value`` (parsed against ``processed``) with every output of ``original``: defaults for the
    fields the LM was not asked for, and the native values found in ``output`` (a response dict)."""
    native = _native_outputs(original, native_types)
    if processed is original and not native:
        return value
    extras = {key: value[key] for key in value if key not in original.output_fields}  # e.g. logprobs
    completed = apply_output_field_defaults(original, value)
    for name in original.output_fields:
        completed.setdefault(name, None)
    if isinstance(output, Mapping):
        for name, kind in native:
            parsed = kind.parse_lm_response(dict(output))
            if parsed is not None:
                completed[name] = parsed
    return {**completed, **extras}
