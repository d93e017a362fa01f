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


# The programming model's core, lowest first: a predictor is a Module, and a program file holds
# Modules. An import (of any kind: at the top, under TYPE_CHECKING, inside a function) from one of
# these to another must never close a circle. serialization knows a module only as a ProgramNode
# protocol; the loaders that return a Module live in dspex.primitives.saving.
CORE = ("dspex.primitives", "dspex.modules.predict", "dspex.serialization")


def _core_of(module: str) -> str | None:
    return next((core for core in CORE if module == core or module.startswith(core + ".")), None)


def _imported_names(path: Path) -> list[str]:
    """Every module or name imported, dotted (``from dspex import x`` gives ``dspex.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _core_edges() -> set[tuple[str, str]]:
    edges: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _core_of(_module_name(path).removesuffix(".__init__"))
        if source is None:
            continue
        for module in _imported_names(path):
            target = _core_of(module)
            if target is not None and target != source:
                edges.add((source, target))
    return edges


def _has_cycle(edges: set[tuple[str, str]]) -> bool:
    remaining = {node for edge in edges for node in edge}
    while remaining:
        # a node with no edge into it from the remaining ones cannot be on a cycle
        free = {node for node in remaining if not any(b == node and a in remaining for a, b in edges)}
        if not free:
            return True
        remaining -= free
    return False


def test_primitives_predict_and_serialization_import_each_other_in_one_direction() -> None:
    edges = _core_edges()
    assert ("dspex.modules.predict", "dspex.primitives") in edges  # the check sees real imports
    assert not _has_cycle(edges), sorted(edges)
    assert ("dspex.primitives", "dspex.modules.predict") not in edges


def test_serialization_sits_below_the_primitives() -> None:
    edges = _core_edges()
    assert ("dspex.primitives", "dspex.serialization") in edges  # Module.dump and Module.save use it
    assert ("dspex.serialization", "dspex.primitives") not in edges
    # the edge that closed the circle before would be caught
    assert _has_cycle(edges | {("dspex.serialization", "dspex.primitives")})


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _has_cycle({("a", "b"), ("b", "c"), ("c", "a")})
    assert not _has_cycle({("a", "b"), ("b", "c"), ("a", "c")})
