"""JSON Schema files for every message model and union: the contract for non-Python clients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter

from dspex.schemas.registry import MESSAGE_MODELS, TOPIC_VALUE_MODELS, UNION_TYPES

__all__ = ["JSON_SCHEMA_DIALECT", "export_json_schemas", "json_schemas"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schemas() -> dict[str, dict[str, Any]]:
    """Model or union name -> its JSON Schema (validation mode: what readers accept)."""
    schemas = {model.__name__: _model_schema(model) for model in MESSAGE_MODELS}
    for name, union in UNION_TYPES.items():
        schemas[name] = _union_schema(name, union)
    return schemas


def export_json_schemas(directory: str | Path) -> list[Path]:
    """Write ``<Name>.schema.json`` for every message model and union into ``directory``.

    Creates the directory if needed and overwrites files of the same name; returns the paths
    written, sorted. Example: ``export_json_schemas("build/schemas")``.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in sorted(json_schemas().items()):
        path = target / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = _require_version(model.model_json_schema())
    version = getattr(model, "SCHEMA_VERSION", None)
    return _decorate(schema, model.__name__, version, _topics_of(model))


def _union_schema(name: str, union: Any) -> dict[str, Any]:
    schema = TypeAdapter(union).json_schema()
    for definition in schema.get("$defs", {}).values():
        _require_version(definition)
    return _decorate(schema, name, None, _topics_of(union))


def _require_version(schema: dict[str, Any]) -> dict[str, Any]:
    # schema_version has a default for Python callers, but on the wire a reader requires it.
    if "schema_version" in schema.get("properties", {}):
        schema["required"] = ["schema_version", *schema.get("required", [])]
        schema["properties"]["schema_version"].pop("default", None)
    return schema


def _decorate(schema: dict[str, Any], name: str, version: str | None, topics: list[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{name}.schema.json", "title": name}
    if version is not None:
        extra["x-dspex-schema-version"] = version
    if topics:
        extra["x-dspex-topics"] = topics
    return {**extra, **{key: value for key, value in schema.items() if key != "title"}}


def _topics_of(value: Any) -> list[str]:
    topics = [role for role, model in TOPIC_VALUE_MODELS.items() if model is value]
    for role, model in TOPIC_VALUE_MODELS.items():
        if model in UNION_TYPES.values() and value in _members(model):
            topics.append(role)
    return topics


def _members(union: Any) -> tuple[Any, ...]:
    args = get_args(union)
    return get_args(args[0]) if args else ()
