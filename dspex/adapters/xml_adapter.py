"""XMLAdapter: DSPy 3.4.1's XML wire format; each field travels inside ``<name>...</name>`` tags.

Plain values are written as ChatAdapter writes them, between the tags on their own lines. Outputs
whose type is structured (a pydantic model, a TypedDict, a list or a dict, optionally ``| None``)
are written and read as nested XML: a model's fields as child elements, list items as ``<item>``,
dict keys that are not valid tag names as ``<entry key="...">``. A JSON value inside the outer tag
is still read, as DSPy reads it. Like ChatAdapter, a failed parse is retried once with JSONAdapter.
"""

from __future__ import annotations

import types
import typing
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar, Union
from xml.sax.saxutils import quoteattr

import pydantic
from pydantic import TypeAdapter
from typing_extensions import is_typeddict

from dspex.adapters._render import STRUCTURE_INTRO, to_jsonable
from dspex.adapters._values import parse_value, validator_for
from dspex.adapters.base import SignatureLike
from dspex.adapters.chat import ChatAdapter, FieldInfoWithName
from dspex.adapters.utils import apply_output_field_defaults, format_field_value, translate_field_type
from dspex.signatures import FieldSpec, Signature, ensure_signature

__all__ = ["XMLAdapter"]

_ROOT = "dspy_root"
Schema = dict[str, Any]


class XMLAdapter(ChatAdapter):
    """Fields as XML elements (``<answer>Paris</answer>``); structured outputs as nested XML."""

    name: ClassVar[str] = "xml"

    # -- formatting -------------------------------------------------------------------------
    def format_field_with_value(self, fields_with_values: Mapping[FieldInfoWithName, Any]) -> str:
        return "\n\n".join(_element(field, value) for field, value in fields_with_values.items()).strip()

    def format_field_structure(self, signature: type[Signature]) -> str:
        groups = (
            "\n\n".join(self._structure_of(name, info) for name, info in fields.items())
            for fields in (signature.input_fields, signature.output_fields)
        )
        return "\n\n".join((STRUCTURE_INTRO, *groups))

    def _structure_of(self, name: str, info: FieldSpec) -> str:
        if _is_output(info) and uses_nested_xml(info.annotation):
            return xml_schema(name, info.annotation)
        return self.format_field_with_value({FieldInfoWithName(name, info): translate_field_type(name, info)})

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        present = {
            FieldInfoWithName(name, info): inputs[name]
            for name, info in signature.input_fields.items()
            if name in inputs
        }
        parts = [prefix, self.format_field_with_value(present)]
        if main_request:
            parts.append(
                self.cached_text(
                    "requirements", signature, lambda: self.user_message_output_requirements(signature)
                )
            )
        parts.append(suffix)
        return "\n\n".join(parts).strip()

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: Mapping[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        values = {
            FieldInfoWithName(name, info): outputs.get(name, missing_field_message)
            for name, info in signature.output_fields.items()
        }
        return self.format_field_with_value(values)

    def user_message_output_requirements(self, signature: type[Signature]) -> str:
        tags = ", then ".join(f"`<{name}>`" for name in signature.output_fields)
        nested = [
            xml_schema(name, info.annotation)
            for name, info in signature.output_fields.items()
            if uses_nested_xml(info.annotation)
        ]
        shape = f" Use this nested XML structure: {' '.join(nested)}" if nested else ""
        return f"Respond with the corresponding output fields wrapped in XML tags {tags}.{shape}"

    # -- parsing ----------------------------------------------------------------------------
    def parse(self, signature: SignatureLike, completion: str) -> dict[str, Any]:
        """The output fields among the top-level XML elements of ``completion`` (the first of each name)."""
        sig = ensure_signature(signature)
        try:
            root = ET.fromstring(f"<{_ROOT}>{completion}</{_ROOT}>")
        except ET.ParseError as exc:
            raise self.parse_error(sig, completion, f"Failed to parse XML: {exc}") from exc
        elements = _children_by_name(root)
        found = {
            name: self._read_field(sig, spec, elements[name], completion)
            for name, spec in sig.output_fields.items()
            if name in elements
        }
        outputs = apply_output_field_defaults(sig, found)
        if outputs.keys() != sig.output_fields.keys():
            raise self.parse_error(sig, completion, parsed=outputs)
        return outputs

    def _read_field(
        self, signature: type[Signature], spec: FieldSpec, elements: list[ET.Element], text: str
    ) -> Any:
        """The field's value from its elements, trying the whole schema, then each union branch."""
        schema = _json_schema(spec.annotation)
        definitions = schema.get("$defs", {})
        error: ValueError | None = None
        value: Any = None
        for candidate in [schema, *schema.get("anyOf", [])]:
            try:
                value = _elements_value(elements, candidate, definitions)
                return _typed(spec, value)
            except ValueError as exc:  # pydantic's ValidationError is one
                error = exc
        detail = f"Failed to parse field {spec.name} with value {value}: {error}"
        raise self.parse_error(signature, text, detail, field=spec.name) from error


# -- writing ---------------------------------------------------------------------------------


def _element(field: FieldInfoWithName, value: Any) -> str:
    """One field as XML: nested elements for a structured output, else its text between the tags."""
    is_output = _is_output(field.info)
    if is_output and uses_nested_xml(field.info.annotation):
        data = to_jsonable(value)
        if isinstance(data, dict | list):
            return value_to_xml(data, field.name)
    text = format_field_value(field.info, value)
    if is_output and field.info.annotation is str:
        text = _escape(str(text))  # so the answer's own "</name>" or "&" cannot break the XML
    return f"<{field.name}>\n{text}\n</{field.name}>"


def value_to_xml(value: Any, tag: str, key: str | None = None) -> str:
    """JSON data as XML: lists as ``<item>`` children, dicts as children named by key (``<entry
    key="...">`` when the key is not a valid tag), scalars as escaped text, None as an empty element."""
    attrs = f" key={quoteattr(key)}" if key is not None else ""
    if isinstance(value, list):
        inner = "".join(value_to_xml(item, "item") for item in value)
    elif isinstance(value, dict):
        inner = "".join(_dict_entry(str(name), child) for name, child in value.items())
    elif value is None:
        inner = ""
    else:
        return f"<{tag}{attrs}>{_escape(str(value))}</{tag}>"
    if not inner and not isinstance(value, dict):
        return f"<{tag}{attrs} />"
    return f"<{tag}{attrs}>{inner}</{tag}>"


def _dict_entry(name: str, value: Any) -> str:
    tag_like = name[:1] + name[1:].replace("-", "_").replace(".", "_")
    return value_to_xml(value, name) if tag_like.isidentifier() else value_to_xml(value, "entry", name)


def xml_schema(tag: str, annotation: Any) -> str:
    """The nested-XML shape of a type, with ``...`` for values (a recursive model stops at itself)."""
    schema = _json_schema(annotation)
    return _schema_xml(tag, schema, schema.get("$defs", {}), frozenset())


def _schema_xml(tag: str, schema: Schema, definitions: Schema, seen: frozenset[str]) -> str:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            return f"<{tag}>...</{tag}>"
        return _schema_xml(tag, definitions[name], definitions, seen | {name})
    choices = schema.get("anyOf")
    if choices:
        chosen = next((choice for choice in choices if choice.get("type") != "null"), choices[0])
        return _schema_xml(tag, chosen, definitions, seen)
    if schema.get("type") == "array":
        return f"<{tag}>{_schema_xml('item', schema.get('items', {}), definitions, seen)}</{tag}>"
    properties = schema.get("properties", {})
    inner = "".join(_schema_xml(name, child, definitions, seen) for name, child in properties.items())
    return f"<{tag}>{inner or '...'}</{tag}>"


def uses_nested_xml(annotation: Any) -> bool:
    """Whether an output of this type is written as nested XML: a model, a TypedDict, a list or a
    dict (or one of them ``| None``), but not dspex's own special types."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    item = typing.get_args(annotation)[0] if origin is list and typing.get_args(annotation) else annotation
    if _is_model(item) and item.__module__.startswith(("dspex.", "dspy.")):
        return False
    return origin in (list, dict) or is_typeddict(annotation) or _is_model(annotation)


# -- reading ---------------------------------------------------------------------------------


def _elements_value(elements: list[ET.Element], schema: Schema, definitions: Schema) -> Any:
    """JSON-like data from the elements of one name, guided by the JSON schema expected of them."""
    schema = _resolve(schema, definitions)
    first = elements[0]
    choices = schema.get("anyOf")
    if choices:
        if {"type": "null"} in choices and _is_empty(first):
            return None
        kept = [choice for choice in choices if choice.get("type") != "null"]
        schema = kept[0]
        if len(first):  # child elements: a structured branch rather than text
            schema = next((choice for choice in kept if choice.get("type") != "string"), schema)
    if schema.get("type") == "array":
        return _array_value(elements, schema, definitions)
    if schema.get("type") == "string" and len(first):
        # A text value that itself holds markup: keep it as written.
        return (first.text or "") + "".join(ET.tostring(child, encoding="unicode") for child in first)
    children = _children_by_name(first)
    if not children:
        if schema.get("type") == "object" and not (first.text or "").strip():
            return {}
        texts = [(element.text or "").strip() for element in elements]
        return texts[0] if len(texts) == 1 else texts
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", {})
    default = extra if isinstance(extra, dict) else {}
    return {
        name: _elements_value(items, properties.get(name, default), definitions)
        for name, items in children.items()
    }


def _array_value(elements: list[ET.Element], schema: Schema, definitions: Schema) -> Any:
    if len(elements) == 1 and not len(elements[0]):
        text = (elements[0].text or "").strip()
        if not text:
            return []
        if text.startswith("["):
            return text  # a JSON list inside the tag: parse_value reads it
    if len(elements) == 1:
        items = _children_by_name(elements[0]).get("item")
        if items:
            elements = items
    item_schema = schema.get("items", {})
    return [_elements_value([element], item_schema, definitions) for element in elements]


def _children_by_name(element: ET.Element) -> dict[str, list[ET.Element]]:
    """Child elements grouped by tag (an ``<entry key="k">`` by its key), in document order."""
    groups: defaultdict[str, list[ET.Element]] = defaultdict(list)
    for child in element:
        name = child.attrib.get("key", child.tag) if child.tag == "entry" else child.tag
        groups[name].append(child)
    return groups


def _typed(spec: FieldSpec, value: Any) -> Any:
    """``value`` as the field's type; by field name when the model's aliases do not match the tags."""
    try:
        parsed = parse_value(value, spec.annotation)
    except pydantic.ValidationError:
        annotation: Any = spec.annotation
        parsed = TypeAdapter(annotation).validate_python(value, by_name=True)
    if spec.constraints:
        parsed = validator_for(spec).validate_python(parsed)
    return parsed


# -- helpers ---------------------------------------------------------------------------------


def _json_schema(annotation: Any) -> Schema:
    try:
        return TypeAdapter(annotation).json_schema(by_alias=False)
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticInvalidForJsonSchema):
        return {}  # a type without a JSON schema is read as text


def _resolve(schema: Schema, definitions: Schema) -> Schema:
    ref = schema.get("$ref", "")
    resolved: Schema = definitions.get(ref.rsplit("/", 1)[-1], schema)
    return resolved


def _is_empty(element: ET.Element) -> bool:
    return not len(element) and not (element.text or "").strip()


def _is_output(info: Any) -> bool:
    extra = getattr(info, "json_schema_extra", None)
    return isinstance(extra, dict) and extra.get("__dspy_field_type") == "output"


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")
