"""JSON Schema export: a valid schema file per model and union, which accepts what we write."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

from dspex.cli.schemas import register
from dspex.schemas import MESSAGE_MODELS, UNION_TYPES, encode, export_json_schemas

EXPECTED = {model.__name__ for model in MESSAGE_MODELS} | set(UNION_TYPES)


def _load(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_export_writes_one_valid_schema_per_model_and_union(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path / "out")
    assert {path.name.removesuffix(".schema.json") for path in written} == EXPECTED
    for path in written:
        schema = _load(path)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["title"] == path.name.removesuffix(".schema.json")


def test_exported_schemas_accept_what_we_encode(tmp_path: Path, samples: list[BaseModel]) -> None:
    export_json_schemas(tmp_path)
    for item in samples:
        schema = _load(tmp_path / f"{type(item).__name__}.schema.json")
        jsonschema.validate(json.loads(encode(item)), schema)


def test_exported_task_schema_types_the_example_index(tmp_path: Path) -> None:
    export_json_schemas(tmp_path)
    schema = _load(tmp_path / "Task.schema.json")
    assert schema["x-dspex-schema-version"] == "1.3" and schema["x-dspex-topics"] == ["tasks"]
    properties = schema["properties"]
    assert isinstance(properties, dict) and properties["example_index"]["type"] == "integer"
    assert {"example_index", "schema_version"} <= set(schema["required"])  # type: ignore[call-overload]
    union = _load(tmp_path / "JobMessage.schema.json")
    assert union["x-dspex-topics"] == ["jobs"] and "discriminator" in union
    definitions = union["$defs"]
    assert isinstance(definitions, dict)
    assert "schema_version" in definitions["EvalJob"]["required"]


def test_exported_schemas_refuse_what_readers_refuse(tmp_path: Path, samples: list[BaseModel]) -> None:
    export_json_schemas(tmp_path)
    task = json.loads(encode(next(item for item in samples if type(item).__name__ == "Task")))
    schema = _load(tmp_path / "Task.schema.json")
    with pytest.raises(jsonschema.ValidationError, match="'3' is not of type 'integer'"):
        jsonschema.validate({**task, "example_index": "3"}, schema)
    del task["schema_version"]
    with pytest.raises(jsonschema.ValidationError, match="'schema_version' is a required property"):
        jsonschema.validate(task, schema)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Root for the test, as dspex's own CLI root."""

    register(app)
    return app


def test_cli_export_writes_the_schemas(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "schemas"
    result = CliRunner().invoke(_app(), ["schemas", "export", str(target)])
    assert result.exit_code == 0, result.output
    assert {path.name.removesuffix(".schema.json") for path in target.iterdir()} == EXPECTED
    assert str(target / "Task.schema.json") in result.stdout
    assert f"wrote {len(EXPECTED)} schemas" in result.stderr


def test_cli_export_help_shows_an_example() -> None:
    result = CliRunner().invoke(_app(), ["schemas", "export", "--help"])
    assert result.exit_code == 0
    assert "dspex schemas export build/schemas" in result.output


def test_cli_export_into_an_unwritable_place_fails_with_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = CliRunner().invoke(_app(), ["schemas", "export", str(blocker / "sub")])
    assert result.exit_code == 1
    assert "cannot write schemas to" in result.stderr


def test_cli_export_without_a_directory_is_bad_usage() -> None:
    assert CliRunner().invoke(_app(), ["schemas", "export"]).exit_code == 2


def test_cli_list_names_each_topic_model() -> None:
    result = CliRunner().invoke(_app(), ["schemas", "list"])
    assert result.exit_code == 0
    assert "tasks" in result.stdout and "JobMessage" in result.stdout and "DeadLetter" in result.stdout
