"""The base classes every message model stands on, and the schema-version rule.

Every value on every topic is a :class:`Message`: frozen, strict about types (a string where an
int is expected is an error, not a coercion; JSON-natural widenings such as an int for a float
are allowed), tolerant of fields it does not know (a newer writer may add some during a rolling
upgrade), and stamped with ``schema_version`` ``"MAJOR.MINOR"``. A reader accepts any minor
version of the major it knows and rejects every other major with a message naming the model,
the version it got and the one it supports.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "WIRE_CONTEXT",
    "Message",
    "Timestamp",
    "WireModel",
    "known_or_none",
    "parse_version",
    "utc_now",
]

# Passed as validation context by serde.decode: on the wire a missing schema_version is an error,
# while Python code building a message may leave it out and get the current version.
WIRE_CONTEXT: dict[str, Any] = {"dspex_wire": True}

_VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")

# Timestamps are timezone-aware; lax so that an ISO string from JSON (or a dict from
# ``model_dump(mode="json")``) validates, which strict mode would refuse outside JSON input.
Timestamp = Annotated[AwareDatetime, Field(strict=False)]


def utc_now() -> datetime:
    """The current time in UTC, timezone-aware (what every ``*_at`` field expects)."""
    return datetime.now(UTC)


def known_or_none(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Wrap validator of an optional Literal field that a later minor version may extend: a string
    this reader does not know reads as None (absent), so a newer writer's value never makes the
    whole message unreadable; a value of the wrong type is still an error.

        _reason = field_validator("stop_reason", mode="wrap")(known_or_none)
    """
    try:
        return handler(value)
    except ValidationError:
        if isinstance(value, str):
            return None
        raise


def parse_version(version: str) -> tuple[int, int]:
    """``"1.2"`` -> ``(1, 2)``; raises ValueError for anything that is not ``MAJOR.MINOR``."""
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"schema_version {version!r} is not of the form MAJOR.MINOR")
    return int(match.group(1)), int(match.group(2))


@functools.lru_cache(maxsize=64)
def _major_of(version: str) -> int:
    return parse_version(version)[0]


class WireModel(BaseModel):
    """A part of a message (nested model): same reading rules, no version of its own."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        strict=True,
        allow_inf_nan=False,
        validate_default=False,
    )


class Message(WireModel):
    """A top-level value on a topic, carrying its ``schema_version``."""

    SCHEMA_VERSION: ClassVar[str] = "1.0"

    schema_version: str = Field(
        default="1.0",
        pattern=_VERSION.pattern,
        description="MAJOR.MINOR of the writer's model; readers accept any minor of a major they know.",
    )

    @classmethod
    def supported_major(cls) -> int:
        """The major version this reader understands."""
        return _major_of(cls.SCHEMA_VERSION)

    @model_validator(mode="before")
    @classmethod
    def _check_schema_version(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        if "schema_version" not in data:
            if info.context and info.context.get("dspex_wire"):
                raise _version_error(cls, None)
            return {**data, "schema_version": cls.SCHEMA_VERSION}
        version = data["schema_version"]
        if not isinstance(version, str) or not _is_supported(version, cls.supported_major()):
            raise _version_error(cls, version)
        return data


@functools.lru_cache(maxsize=256)  # every message passes here; writers use a handful of versions
def _is_supported(version: str, major: int) -> bool:
    try:
        return parse_version(version)[0] == major
    except ValueError:
        return False


def _version_error(cls: type[Message], version: object) -> PydanticCustomError:
    if version is None:
        return PydanticCustomError(
            "missing_schema_version",
            "{model} has no schema_version: every dspex message carries one (this reader writes {known})",
            {"model": cls.__name__, "known": cls.SCHEMA_VERSION},
        )
    return PydanticCustomError(
        "unsupported_schema_version",
        "{model} with schema_version {got} is not supported: this reader knows {model} {major}.x "
        "(up to {known}); upgrade dspex to read a newer major version",
        {
            "model": cls.__name__,
            "got": repr(version),
            "major": cls.supported_major(),
            "known": cls.SCHEMA_VERSION,
        },
    )
