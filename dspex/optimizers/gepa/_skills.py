"""Skills for the instruction proposer: reference material the reflection LM reads before it writes.

A skill source is a ``Path`` (always a path), or a ``str`` that is a path when something exists
there, else inline text. A ``str`` that names nothing but clearly reads as a path (one line, and
either no spaces plus a separator, a leading ``.``/``~`` or a ``.md``/``.markdown``/``.txt``
ending; or a leading ``./``, ``../``, ``~/``, ``/`` or drive letter; or a separator with an
existing parent folder) is refused as a missing path rather than sent as text, so a typo in a path
is an error and not a strange prompt. Text over several lines is always inline.

A folder must hold ``SKILL.md`` (the Agent Skills layout) and only that file is read; a file is
read as UTF-8. An optional leading YAML block between ``---`` lines gives ``name`` and
``description`` and is left out of the content. Without a ``name``: the folder's name, the file's
stem, or the first line of inline text (at most 60 characters).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dspex.errors import ConfigurationError

__all__ = ["Skill", "load_skill", "render_skills"]

_SKILL_FILE = "SKILL.md"
_TEXT_SUFFIXES = (".md", ".markdown", ".txt")
_PATH_START = re.compile(r"^(?:\.{1,2}[\\/]|~[\\/]|[\\/]|[A-Za-z]:[\\/])")
_NAME_CHARS = 60


@dataclass(frozen=True)
class Skill:
    """One loaded skill: its name, its text and an optional one-line description."""

    name: str
    content: str
    description: str | None = None


def load_skill(source: str | Path) -> Skill:
    """The skill ``source`` names or holds (see the module); ``ConfigurationError`` when it cannot load."""
    if isinstance(source, Path):
        return _from_path(source.expanduser())
    if not isinstance(source, str):
        raise ConfigurationError(f"a skill is a str or a Path, got {type(source).__name__}")
    if not source.strip():
        raise ConfigurationError("a skill is empty")
    existing = _existing(source)
    if existing is not None:
        return _from_path(existing)
    if _reads_as_path(source):
        raise ConfigurationError(
            f"skill {source!r} looks like a path but nothing exists there; give an existing file or "
            "a folder holding SKILL.md (inline skill text that looks like a path: write it on two lines)"
        )
    return _from_text(source, None, "inline skill")


def render_skills(skills: tuple[Skill, ...]) -> str:
    """The skills as the reflection LM's ``reference_skills`` input: one tagged block each."""
    blocks = []
    for skill in skills:
        about = f" description={json.dumps(skill.description)}" if skill.description else ""
        blocks.append(f"<skill name={json.dumps(skill.name)}{about}>\n{skill.content}\n</skill>")
    return "\n\n".join(blocks)


def _from_path(path: Path) -> Skill:
    if not path.exists():
        raise ConfigurationError(f"skill path {path} does not exist")
    if path.is_dir():
        skill_file = path / _SKILL_FILE
        if not skill_file.is_file():
            raise ConfigurationError(f"skill folder {path} has no {_SKILL_FILE}")
        return _from_text(skill_file.read_text(encoding="utf-8"), path.name, str(skill_file))
    return _from_text(path.read_text(encoding="utf-8"), path.stem, str(path))


def _from_text(text: str, default_name: str | None, origin: str) -> Skill:
    meta, body = _front_matter(text.strip(), origin)
    content = body.strip()
    if not content:
        raise ConfigurationError(f"{origin}: the skill has no content")
    if default_name is None:
        first = content.splitlines()[0].lstrip("# ").strip()
        default_name = (first[:_NAME_CHARS] + "…" if len(first) > _NAME_CHARS else first) or "inline skill"
    return Skill(meta.get("name") or default_name, content, meta.get("description"))


def _front_matter(text: str, origin: str) -> tuple[dict[str, str], str]:
    """``name``/``description`` from a leading ``---`` YAML block, and the text after it."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    closing = next((i for i, line in enumerate(lines[1:], start=1) if line.rstrip() == "---"), None)
    if closing is None:
        raise ConfigurationError(f"{origin}: the front matter has no closing '---'")
    try:
        meta: Any = yaml.safe_load("\n".join(lines[1:closing])) or {}
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{origin}: the front matter is not valid YAML ({error})") from error
    if not isinstance(meta, dict):
        raise ConfigurationError(f"{origin}: the front matter must be a YAML mapping")
    kept: dict[str, str] = {}
    for key in ("name", "description"):
        if key in meta:
            if not isinstance(meta[key], str):
                raise ConfigurationError(f"{origin}: the front matter's {key!r} must be a string")
            kept[key] = meta[key]
    return kept, "\n".join(lines[closing + 1 :])


def _existing(source: str) -> Path | None:
    try:
        path = Path(source).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError):  # text too long or odd to be a file name is inline text
        return None


def _reads_as_path(source: str) -> bool:
    if "\n" in source or "\r" in source:
        return False
    text = source.strip()
    separator = "/" in text or "\\" in text
    if not re.search(r"\s", text):
        return separator or text.startswith((".", "~")) or text.lower().endswith(_TEXT_SUFFIXES)
    # With spaces it may still be a path ("./my skills/x"), but a sentence that mentions
    # "notes.txt" must stay text: ask for a stronger sign than a suffix.
    if _PATH_START.match(text):
        return True
    return separator and _parent_exists(text)


def _parent_exists(text: str) -> bool:
    try:
        return Path(text).expanduser().parent.exists()
    except (OSError, ValueError):
        return False
