"""DSPy's ``dspy.utils.magicattr``: read, set and delete by a path such as ``'a.b[0]["k"]'``.

    magicattr.get(program, "predictors[0].signature")
    magicattr.set(config, 'style["width"]', 400)
    magicattr.delete(person, "friends[0]")

A path is attribute names, integer indexes (negative too) and constant keys; anything else (calls,
arithmetic, assignments) is refused, since a path is data and must never run code.
"""

from __future__ import annotations

import ast
from typing import Any

__all__ = ["delete", "get", "lookup", "set"]

_MISSING = object()


def get(obj: Any, attr: str, **kwargs: Any) -> Any:
    """The value at path ``attr`` under ``obj``; ``default=`` is returned for a missing attribute."""
    default = kwargs.get("default", _MISSING)
    try:
        return lookup(obj, _parse(attr))
    except AttributeError:
        if default is _MISSING:
            raise
        return default


def set(obj: Any, attr: str, val: Any) -> None:  # DSPy's name, shadowing the builtin here only
    """Set the value at path ``attr`` under ``obj``."""
    parent, last = _parent_and_last(obj, attr)
    if isinstance(last, ast.Attribute):
        setattr(parent, last.attr, val)
    else:
        parent[_key(last)] = val


def delete(obj: Any, attr: str) -> None:
    """Delete the attribute, item or key at path ``attr`` under ``obj``."""
    parent, last = _parent_and_last(obj, attr)
    if isinstance(last, ast.Attribute):
        delattr(parent, last.attr)
    else:
        del parent[_key(last)]


def lookup(obj: Any, node: ast.AST) -> Any:
    """The value a parsed path (an ``ast`` expression of names, attributes and subscripts) names."""
    if isinstance(node, ast.Name):
        return getattr(obj, node.id)
    if isinstance(node, ast.Attribute):
        return getattr(lookup(obj, node.value), node.attr)
    if isinstance(node, ast.Subscript):
        return lookup(obj, node.value)[_key(node)]
    raise NotImplementedError(f"a path holds names, attributes and constant indexes, not {ast.dump(node)}")


def _parse(attr: object) -> ast.AST:
    if not isinstance(attr, str):
        raise TypeError(f"a path is a string, got {type(attr).__name__}")
    if not attr.strip():
        raise ValueError("an empty path names nothing")
    module = ast.parse(attr.strip())  # a SyntaxError for what is not Python at all
    if len(module.body) != 1 or not isinstance(module.body[0], ast.Expr):
        raise ValueError(f"{attr!r} is not a path (one expression)")
    node = module.body[0].value
    _check(node, attr)
    return node


def _check(node: ast.AST, attr: str) -> None:
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.Attribute):
        _check(node.value, attr)
        return
    if isinstance(node, ast.Subscript):
        _check(node.value, attr)
        _constant(node.slice)
        return
    raise ValueError(f"{attr!r} is not a path: only names, attributes and constant indexes")


def _constant(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _constant(node.operand)
        if isinstance(value, int | float):
            return -value if isinstance(node.op, ast.USub) else value
    raise NotImplementedError(f"an index must be a constant, not {ast.unparse(node)}")


def _key(node: ast.AST) -> Any:
    if not isinstance(node, ast.Subscript):
        raise NotImplementedError(f"not a subscript: {ast.dump(node)}")
    return _constant(node.slice)


def _parent_and_last(obj: Any, attr: str) -> tuple[Any, ast.AST]:
    node = _parse(attr)
    if isinstance(node, ast.Name):
        # a bare name: the parent is obj itself, set/deleted as an attribute
        return obj, ast.Attribute(value=ast.Name(id="_"), attr=node.id)
    if not isinstance(node, ast.Attribute | ast.Subscript):  # _parse allows nothing else
        raise NotImplementedError(f"not a path: {attr!r}")
    return lookup(obj, node.value), node
