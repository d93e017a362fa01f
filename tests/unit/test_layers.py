"""Layering rules read from the source: no package reaches into another package's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

import dspex

PACKAGE_ROOT = Path(dspex.__file__).parent


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)


def _private_owner(module: str) -> str | None:
    """The package ``module`` is private to (``dspex.client._submit`` -> ``dspex.client``), if any."""
    parts = module.split(".")
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def _top_package(name: str) -> str:
    # dspex.adapters.types belongs to dspex.adapters: a package's subpackages share its privates.
    return ".".join(name.split(".")[:2])


def test_no_module_imports_a_private_module_of_another_package() -> None:
    offences = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        importer = _module_name(path)
        for module in _imported_modules(path):
            owner = _private_owner(module) if module.startswith("dspex.") else None
            # dspex's top-level private modules (dspex._sync) are shared by the whole package.
            if owner is None or owner == "dspex":
                continue
            if _top_package(importer) != _top_package(owner):
                offences.append(f"{path.relative_to(PACKAGE_ROOT.parent)} imports {module}")
    assert offences == []
