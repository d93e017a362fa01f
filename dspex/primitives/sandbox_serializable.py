"""Values that rebuild themselves inside an ``RLM``'s REPL (a DataFrame, a table, an image...).

``RLM`` passes plain inputs to the interpreter as variables. A value of a :class:`SandboxSerializable`
subclass instead says how to travel: its bytes (:meth:`~SandboxSerializable.to_sandbox`), the setup
code they need (:meth:`~SandboxSerializable.sandbox_setup`, usually imports), the statement that
rebuilds it from those bytes (:meth:`~SandboxSerializable.sandbox_assignment`), and how the prompt
describes it (:meth:`~SandboxSerializable.rlm_preview`)::

    class Table(SandboxSerializable):
        def __init__(self, rows: list[dict]) -> None:
            self.rows = rows

        def sandbox_setup(self) -> str:
            return "import json"

        def to_sandbox(self) -> bytes:
            return json.dumps(self.rows).encode()

        def sandbox_assignment(self, var_name: str, data_expr: str) -> str:
            return f"{var_name} = json.loads({data_expr})"

        def rlm_preview(self, max_chars: int = 500) -> str:
            return f"Table: {len(self.rows)} rows"[:max_chars]

A subclass can annotate a signature field (``data: Table = dspex.InputField()``): pydantic takes
the value as it is and serializes it with ``str``; the real transport is the four methods above.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from dspex.primitives.repl_types import REPLVariable

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

__all__ = ["SandboxSerializable", "build_repl_variable"]


class SandboxSerializable(ABC):
    """Base class for an ``RLM`` input that is rebuilt inside the REPL from bytes (see the module doc).

    Only subclasses count: an object with the same four methods that does not subclass this is
    passed as a plain variable.
    """

    @abstractmethod
    def sandbox_setup(self) -> str:
        """Statements run once before the assignment (imports); also shown to the LM as what is in scope."""

    @abstractmethod
    def to_sandbox(self) -> bytes:
        """The value's payload: UTF-8 text travels as a string, other bytes as base64."""

    @abstractmethod
    def sandbox_assignment(self, var_name: str, data_expr: str) -> str:
        """A statement that binds ``var_name`` to the value rebuilt from the expression ``data_expr``."""

    @abstractmethod
    def rlm_preview(self, max_chars: int = 500) -> str:
        """A short description of the value for the prompt, at most about ``max_chars`` long."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Signature fields validate their values with pydantic: take the object as it is.
        return core_schema.no_info_plain_validator_function(
            lambda value: value,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    def to_repl_variable(self, name: str, field_info: FieldInfo | None = None) -> REPLVariable:
        """How the prompt lists this value as the variable ``name`` (see :func:`build_repl_variable`)."""
        return build_repl_variable(self, name, field_info=field_info)


def build_repl_variable(
    obj: SandboxSerializable,
    name: str,
    field_info: FieldInfo | None = None,
) -> REPLVariable:
    """The :class:`REPLVariable` for ``obj``: its ``rlm_preview()`` as the preview, and its
    ``sandbox_setup()`` added to the description, so the LM knows which names the setup bound."""
    preview = obj.rlm_preview()
    variable = REPLVariable.from_value(name, obj, field_info=field_info)
    desc = variable.desc
    setup = obj.sandbox_setup().strip()
    if setup:
        note = f"Sandbox imports available:\n{setup}"
        desc = f"{desc}\n{note}" if desc else note
    return variable.model_copy(update={"preview": preview, "total_length": len(preview), "desc": desc})
