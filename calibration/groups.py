"""Layer groups for the sensitivity sweep, from the family's patterns (data, never code per family)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from t2vtrt.build.families.contract import Family


@dataclass
class Group:
    """Quantized nodes that share a block and a layer kind (or a default-FP16 pattern)."""

    name: str
    nodes: list[str]
    default_pattern: str | None = None  # set when the family keeps this group in FP16 by default
    metrics: dict[str, float] = field(default_factory=dict)
    decision: str = "int8"
    reason: str = ""


def matches_pattern(node_name: str, op_type: str, pattern: str) -> bool:
    """A family sensitivity pattern matches a node whose name contains it or whose op type equals it."""
    return pattern in node_name or pattern == op_type


def default_pattern(node_name: str, op_type: str, patterns: tuple[str, ...]) -> str | None:
    """The first sensitive pattern that matches the node, if any."""
    return next((p for p in patterns if matches_pattern(node_name, op_type, p)), None)


def block_and_kind(node_name: str, family: "Family") -> tuple[str, str]:
    """The node's block (BLOCK_PATTERN) and layer kind (first LAYER_KINDS match), 'other' when unknown."""
    found = re.search(family.BLOCK_PATTERN, node_name)
    block = found.group(1) if found else "other"
    kind = next((k for k, pattern in family.LAYER_KINDS if re.search(pattern, node_name)), "other")
    return block, kind


def layer_groups(nodes: dict[str, str], family: "Family") -> list[Group]:
    """Group quantized nodes (name -> op type): one group per default pattern, then per block/kind."""
    patterns = tuple(family.SENSITIVE_LAYERS)
    by_name: dict[str, Group] = {}
    for name, op_type in nodes.items():
        pattern = default_pattern(name, op_type, patterns)
        if pattern is not None:
            key = f"default:{pattern}"
            by_name.setdefault(key, Group(key, [], default_pattern=pattern)).nodes.append(name)
        else:
            key = "/".join(block_and_kind(name, family))
            by_name.setdefault(key, Group(key, [])).nodes.append(name)
    return list(by_name.values())
