"""precision_plan.json: every layer group, its measured error, its decision (int8 | fp16) and why.

A hand-edited plan is accepted as long as every group names nodes that exist in the graph; the
FP16-fallback nodes are the union of the fp16 groups' nodes, every other quantizable node is INT8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2vtrt.calibration.groups import Group
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import write_json

PLAN_VERSION = 1
DECISIONS = ("int8", "fp16")


def plan_json(groups: list[Group], header: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The plan document: header (model, source, calibration, target), groups, and the result."""
    return {
        "version": PLAN_VERSION,
        **header,
        "groups": [
            {"name": g.name, "default_pattern": g.default_pattern, "decision": g.decision, "reason": g.reason, "metrics": g.metrics, "nodes": g.nodes}
            for g in groups
        ],
        "result": result,
    }


def save_plan(path: Path, plan: dict[str, Any]) -> None:
    """Write the plan atomically."""
    write_json(path, plan)


def load_plan(path: Path) -> dict[str, Any]:
    """Read and shape-check a plan; one-line errors for anything a hand edit can break."""
    if not Path(path).is_file():
        raise T2VError(f"precision plan {path} does not exist: run `t2vtrt calibrate` first, or pass an existing --plan")
    try:
        plan = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise T2VError(f"precision plan {path} is not valid JSON: {exc}") from exc
    groups = plan.get("groups") if isinstance(plan, dict) else None
    if not isinstance(groups, list) or not groups:
        raise T2VError(f"precision plan {path} has no 'groups' list")
    for index, group in enumerate(groups):
        name = group.get("name", f"#{index}") if isinstance(group, dict) else f"#{index}"
        if not isinstance(group, dict) or not isinstance(group.get("nodes"), list):
            raise T2VError(f"precision plan {path}: group {name} needs a 'nodes' list")
        if group.get("decision") not in DECISIONS:
            raise T2VError(f"precision plan {path}: group {name} has decision {group.get('decision')!r}; use one of {', '.join(DECISIONS)}")
    return plan


def check_plan_nodes(plan: dict[str, Any], graph_nodes: set[str], source: str) -> None:
    """Refuse a plan naming nodes the graph does not have (a typo would silently quantize a layer)."""
    unknown = sorted({n for g in plan["groups"] for n in g["nodes"] if n not in graph_nodes})
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise T2VError(f"precision plan names nodes that {source} does not have: {unknown[0]!r}{more}; fix the plan or re-run `t2vtrt calibrate`")


def fp16_nodes(plan: dict[str, Any]) -> list[str]:
    """The FP16-fallback nodes: every node of every fp16 group, sorted."""
    return sorted({n for g in plan["groups"] if g["decision"] == "fp16" for n in g["nodes"]})
