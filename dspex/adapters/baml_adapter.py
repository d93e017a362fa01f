"""BAMLAdapter: JSONAdapter answers, with output types described as compact BAML-style schemas.

Where JSONAdapter shows a pydantic output type as its JSON schema, this adapter writes it the way
BAML's prompt renderer does (DSPy 3.4.1's wording, byte for byte)::

    Output field `patient` should be of type: # A patient.
    {
      # Full name of the patient
      name: string,
      age: int,
      address:   {
        street: string,
      } or null,
    }

(The gap after ``address:`` is DSPy's: a nested object keeps the indentation of its own lines.)

Descriptions become ``#`` comments, ``Optional`` becomes ``or null``, ``Literal`` choices are
listed as JSON values and lists of models are written in brackets. Pydantic values given as inputs
are shown as indented JSON. The answer is still one JSON object, parsed as JSONAdapter parses it.

    from dspex.adapters.baml_adapter import BAMLAdapter
    dspex.configure(lm=lm, adapter=BAMLAdapter())
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Union

import pydantic
from pydantic.fields import FieldInfo

from dspex.adapters._render import STRUCTURE_INTRO, format_value
from dspex.adapters.base import SignatureLike
from dspex.adapters.json_adapter import JSONAdapter
from dspex.errors import AdapterParseError, SignatureError
from dspex.signatures import Signature

__all__ = ["COMMENT_SYMBOL", "INDENTATION", "BAMLAdapter"]

# Python's `#` (rather than `//`) as the comment marker reads better to LMs, DSPy found.
COMMENT_SYMBOL = "#"
INDENTATION = "  "

_SCALARS: dict[Any, str] = {str: "string", int: "int", float: "float", bool: "boolean"}
_RECURSIVE = "BAMLAdapter cannot handle recursive pydantic models, please use a different adapter."
# Parse errors that are not about one field's value carry JSONAdapter's name, as in DSPy (where
# BAMLAdapter inherits JSONAdapter.parse, which names itself).
_JSON_PARSER = JSONAdapter()


class BAMLAdapter(JSONAdapter):
    """JSONAdapter with output structures described as BAML-style schemas (token-efficient, with
    field descriptions as comments), which smaller LMs follow more reliably than a JSON schema.

    Recursive pydantic models cannot be written this way: formatting them raises
    :class:`~dspex.errors.SignatureError` (a ``ValueError``).
    """

    name: ClassVar[str] = "baml"

    def format_field_structure(self, signature: type[Signature]) -> str:
        """Inputs as ``{name}`` placeholders; each output with its type written as a simplified schema."""
        lines = [STRUCTURE_INTRO + "\n"]
        for name in signature.input_fields:
            lines += [f"[[ ## {name} ## ]]", f"{{{name}}}", ""]
        for name, spec in signature.output_fields.items():
            lines.append(f"[[ ## {name} ## ]]")
            lines.append(f"Output field `{name}` should be of type: {_render_type(spec.annotation)}\n")
        lines.append("[[ ## completed ## ]]")
        return "\n".join(lines)

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        """As ChatAdapter's, but a pydantic value is shown as indented JSON (by alias)."""
        parts = [prefix]
        parts += [
            f"[[ ## {name} ## ]]\n{_input_text(spec.annotation, inputs[name])}"
            for name, spec in signature.input_fields.items()
            if name in inputs
        ]
        if main_request:
            reminder = self.cached_text(
                "requirements", signature, lambda: self.user_message_output_requirements(signature)
            )
            parts.append(reminder)
        parts.append(suffix)
        return "\n\n".join(part for part in parts if part).strip()

    def parse(self, signature: SignatureLike, completion: str) -> dict[str, Any]:
        """JSONAdapter's parsing. Errors name JSONAdapter, as DSPy's do, except a value that does
        not fit its field's type, which names this adapter."""
        try:
            return super().parse(signature, completion)
        except AdapterParseError as error:
            if error.field is not None:
                raise
        return _JSON_PARSER.parse(signature, completion)  # raises the same error, under JSONAdapter's name

    def __repr__(self) -> str:
        return f"BAMLAdapter(structured_outputs={self.structured_outputs})"


def _input_text(annotation: Any, value: Any) -> str:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json(indent=2, by_alias=True)
    return format_value(annotation, value)


# -- the simplified schema ---------------------------------------------------------------------
def _render_type(annotation: Any, indent: int = 0, enclosing: frozenset[type] = frozenset()) -> str:
    """``annotation`` as the schema text: ``string``, ``int[]``, ``"a" or "b"``, ``{ ... }``.

    ``indent`` is the nesting level of the line the type starts on; ``enclosing`` the models being
    rendered around it (a model inside itself is an error).
    """
    if isinstance(annotation, type) and annotation in _SCALARS:  # exactly these: not subclasses
        return _SCALARS[annotation]
    if _is_model(annotation):
        return _render_model(annotation, indent, enclosing)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return _render_union(args, indent, enclosing)
    if origin is Literal:
        return " or ".join(_literal_member(arg) for arg in args)
    if origin is list and args:
        return _render_list(args[0], indent, enclosing)
    if origin is dict and len(args) == 2:
        key, value = (_render_type(arg, indent, enclosing) for arg in args)
        return f"dict[{key}, {value}]"
    return str(getattr(annotation, "__name__", annotation))


def _render_model(
    model: type[pydantic.BaseModel], indent: int = 0, enclosing: frozenset[type] = frozenset()
) -> str:
    """A pydantic model as ``{ name: type, ... }`` lines, each field's description as a comment.

    At the top level (``indent`` 0) the model's docstring comes first; a nested model's docstring
    is written by its parent, above the field that holds it.
    """
    if model in enclosing:
        raise SignatureError(_RECURSIVE)  # a ValueError, as DSPy raises
    inside = enclosing | {model}
    here, deeper = INDENTATION * indent, INDENTATION * (indent + 1)
    lines = _doc_comments(model, here) if indent == 0 else []
    lines.append(here + "{")
    if not model.model_fields:
        lines.append(f"{deeper}{COMMENT_SYMBOL} No fields defined")
    for name, field in model.model_fields.items():
        lines += _field_comments(name, field, deeper)
        lines.append(f"{deeper}{name}: {_render_type(field.annotation, indent + 1, inside)},")
    lines.append(here + "}")
    return "\n".join(lines)


def _field_comments(name: str, field: FieldInfo, indentation: str) -> list[str]:
    """The description (or else the alias) of a field, then the docstring of the model it holds."""
    comments = []
    if field.description:
        comments.append(f"{indentation}{COMMENT_SYMBOL} {field.description}")
    elif field.alias and field.alias != name:
        comments.append(f"{indentation}{COMMENT_SYMBOL} alias: {field.alias}")
    held = _without_none(field.annotation)
    if _is_model(held):
        comments += _doc_comments(held, indentation)
    return comments


def _doc_comments(model: type, indentation: str) -> list[str]:
    doc = (model.__doc__ or "").strip()
    return [f"{indentation}{COMMENT_SYMBOL} {line.strip()}" for line in doc.split("\n") if line.strip()]


def _render_union(args: tuple[Any, ...], indent: int, enclosing: frozenset[type]) -> str:
    present = [arg for arg in args if arg is not type(None)]
    text = " or ".join(_render_type(arg, indent, enclosing) for arg in present)
    return f"{text} or null" if len(present) < len(args) else text


def _render_list(item: Any, indent: int, enclosing: frozenset[type]) -> str:
    if not _is_model(item):
        return f"{_render_type(item, indent, enclosing)}[]"
    # A list of objects: the object one level in, between brackets on their own lines.
    return f"[\n{_render_model(item, indent + 1, enclosing)}\n{INDENTATION * indent}]"


def _literal_member(value: Any) -> str:
    """A Literal choice as the JSON value the LM should write."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None`` (one type besides None); any other annotation as it is."""
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        return annotation
    present = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return present[0] if len(present) == 1 else annotation


def _is_model(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel)
