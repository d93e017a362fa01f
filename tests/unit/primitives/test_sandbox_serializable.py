"""SandboxSerializable: an RLM input that rebuilds itself in the REPL, and how the prompt lists it."""

from __future__ import annotations

import pytest

import dspex
from dspex.primitives import SandboxSerializable
from dspex.primitives.sandbox_serializable import build_repl_variable


class Rows(SandboxSerializable):
    def __init__(self, rows: list[int]) -> None:
        self.rows = rows

    def sandbox_setup(self) -> str:
        return "import json\n"

    def to_sandbox(self) -> bytes:
        return str(self.rows).encode()

    def sandbox_assignment(self, var_name: str, data_expr: str) -> str:
        return f"{var_name} = json.loads({data_expr})"

    def rlm_preview(self, max_chars: int = 500) -> str:
        return f"Rows: {len(self.rows)}"[:max_chars]


def test_all_four_methods_are_required() -> None:
    class Partial(SandboxSerializable):
        def sandbox_setup(self) -> str:
            return ""

    with pytest.raises(TypeError, match="abstract"):
        Partial()  # type: ignore[abstract]


def test_only_subclasses_count() -> None:
    class Lookalike:
        sandbox_setup = Rows.sandbox_setup
        to_sandbox = Rows.to_sandbox

    assert isinstance(Rows([1]), SandboxSerializable)
    assert not isinstance(Lookalike(), SandboxSerializable)


def test_the_variable_shows_the_preview_and_the_setup() -> None:
    var = build_repl_variable(Rows([1, 2]), "rows", field_info=dspex.InputField(desc="Some rows"))
    assert var.preview == "Rows: 2"
    assert var.total_length == len("Rows: 2")
    assert var.desc == "Some rows\nSandbox imports available:\nimport json"
    assert Rows([1]).to_repl_variable("r").type_name == "Rows"


def test_a_subclass_can_annotate_a_signature_field() -> None:
    class Task(dspex.Signature):
        rows: Rows = dspex.InputField()
        total: int = dspex.OutputField()

    assert Task.input_fields["rows"].annotation is Rows
