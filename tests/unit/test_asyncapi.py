"""docs/asyncapi.yaml is what scripts/asyncapi.py generates from the schemas, and @asyncapi/parser
(npm, installed by `make asyncapi-tools`) reads it without errors while it does report a broken copy."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "asyncapi.py"
VALIDATE = ROOT / "scripts" / "asyncapi-validate.mjs"
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
PARSER_PREFIX = Path.home() / ".cache" / "dspex" / "npm" / "asyncapi"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dspex_asyncapi_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_document_is_what_the_script_generates() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == generator().render(), "run scripts/asyncapi.py"


def test_the_document_describes_the_submit_channel_from_the_schema() -> None:
    data = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert data["asyncapi"] == "3.0.0"
    assert data["channels"]["submit"]["address"] == "{prefix}submit"
    submit = data["components"]["schemas"]["SubmitJob"]
    assert {"job_id", "examples", "input_keys", "metric"} <= set(submit["required"])
    assert data["operations"]["submitEvaluation"]["action"] == "send"
    assert data["components"]["messages"]["SubmitJob"]["bindings"]["kafka"]["key"]["type"] == "string"


def parse(path: Path) -> tuple[int, list[dict[str, Any]]]:
    missing = [
        what
        for what, ok in (
            ("node", shutil.which("node")),
            ("@asyncapi/parser", (PARSER_PREFIX / "node_modules" / "@asyncapi" / "parser").is_dir()),
        )
        if not ok
    ]
    if missing:
        reason = f"{', '.join(missing)} missing: run `make asyncapi-tools`"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    done = subprocess.run(
        ["node", str(VALIDATE), str(PARSER_PREFIX), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr
    return done.returncode, lines


def test_the_asyncapi_parser_accepts_the_document() -> None:
    code, lines = parse(DOCUMENT)
    errors = [line for line in lines if line.get("severity") == 0]
    assert (code, errors, lines[-1]) == (0, [], {"parsed": True, "errors": 0})


def test_the_asyncapi_parser_reports_a_broken_schema(tmp_path: Path) -> None:
    data = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    data["components"]["schemas"]["SubmitJob"]["properties"]["job_id"]["type"] = "text"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, lines = parse(broken)
    paths = [line.get("path") for line in lines if line.get("severity") == 0]
    assert code == 1 and ["components", "schemas", "SubmitJob", "properties", "job_id", "type"] in paths
