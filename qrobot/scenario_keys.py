"""The scenario keys as a table (key, type, accepted range, default), read from the schema
itself, so the documented ranges are the enforced ones. docs/scenario_keys.md is its
output (`python -m qrobot.scenario_keys > docs/scenario_keys.md`; a test keeps it current).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from qrobot.scenario import Scenario

NUMBER = ("number", "integer")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].split("/")[-1]]
    return node


def _range(node: dict[str, Any]) -> str:
    lo = node.get("minimum", node.get("exclusiveMinimum"))
    hi = node.get("maximum", node.get("exclusiveMaximum"))
    if lo is None and hi is None:
        return ""
    left = "(" if "exclusiveMinimum" in node else "["
    right = ")" if "exclusiveMaximum" in node else "]"
    return f"{left}{lo:g}, {hi:g}{right}" if lo is not None and hi is not None else f"{lo} .. {hi}"


def leaves(
    node: dict[str, Any] | None = None, key: str = "", defs: dict[str, Any] | None = None
) -> Iterator[tuple[str, str, str, Any]]:
    """(dotted key, type, range, default) for every leaf of the schema; `[]` marks list items."""
    if node is None:
        schema = Scenario.model_json_schema()
        defs, node = schema.get("$defs", {}), schema
    assert defs is not None
    default = node.get("default")
    node = _resolve(node, defs)
    if "anyOf" in node or "oneOf" in node:
        for option in node.get("anyOf", node.get("oneOf", [])):
            option = _resolve(option, defs)
            if option.get("type") == "null":
                continue
            tag = option.get("properties", {}).get("kind", {}).get("const")
            yield from leaves(option, f"{key}({tag})" if tag else key, defs)
        return
    kind = node.get("type")
    if kind == "object" and "properties" in node:
        for name, child in node["properties"].items():
            if key == "" and name in ("name", "path"):
                continue  # filled in by the loader
            yield from leaves(child, f"{key}.{name}" if key else name, defs)
        return
    if kind == "array":
        items = _resolve(node.get("items", {}), defs)
        if items.get("type") == "object" or "anyOf" in items:
            yield from leaves(items, f"{key}[]", defs)
            return
        size = (
            f"{node['minItems']}"
            if node.get("minItems") == node.get("maxItems")
            else f"{node.get('minItems', 0)}..{node.get('maxItems', 'any')}"
        )
        if items.get("type") in NUMBER:
            yield key, f"list of {size} {items['type']}s", _range(items), default
        elif items.get("type") == "array":  # points: a list of [x, y]
            inner = _resolve(items.get("items", {}), defs)
            yield key, f"list of {size} lists of {items.get('minItems')} {inner.get('type')}s", _range(inner), default
        else:
            yield key, f"list of {size} {items.get('type', 'values')}", _enum(items), default
        return
    if kind == "object":  # a free-form table (limits.overrides)
        yield key, "table", "checked by the limits module", default
        return
    yield key, kind or "value", _range(node) if kind in NUMBER else _enum(node), default


def _enum(node: dict[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(map(str, node["enum"]))
    if "const" in node:
        return str(node["const"])
    if "pattern" in node:
        return f"pattern {node['pattern']}"
    return ""


def markdown() -> str:
    rows = [
        "# Scenario keys",
        "",
        "Generated from the schema (`python -m qrobot.scenario_keys`); every number "
        "has a range, NaN and infinities are refused. `[]` marks a list's items; `task(kind)` the keys "
        "of one task kind. Positions are metres in the world frame.",
        "",
        "| key | type | accepted | default |",
        "|---|---|---|---|",
    ]
    for key, kind, accepted, default in leaves():
        rows.append(f"| `{key}` | {kind} | {accepted} | {'' if default is None else f'`{default}`'} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
