"""The Makefile's stage dependencies agree with the surgery registry: which passes the engines stage alone runs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from t2vtrt.build.surgery.registry import PASSES, PIPELINES, TARGET_PIPELINES

ROOT = Path(__file__).resolve().parents[2]


def make_variable(name: str) -> list[str]:
    """The words of a `NAME := ...` line of the Makefile, backslash continuations joined."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(f"{name} :="))
    return line.split(":=", 1)[1].split()


def pass_file(name: str) -> str:
    """The repo-relative source file of a registered pass."""
    return str(Path(sys.modules[PASSES[name].fn.__module__].__file__).resolve().relative_to(ROOT))


def test_target_pass_sources_are_the_target_only_passes() -> None:
    """TARGET_PASS_SRC lists exactly the modules of passes that only TARGET_PIPELINES run."""
    shared = {pass_file(n) for names in PIPELINES.values() for n in names}
    target_only = {pass_file(n) for names in TARGET_PIPELINES.values() for n in names} - shared
    assert set(make_variable("TARGET_PASS_SRC")) == target_only


def test_shared_passes_do_not_import_target_only_modules() -> None:
    """Editing a target-only module cannot change the shared graphs (so calibration need not re-run)."""
    target_only = {Path(p).stem for p in make_variable("TARGET_PASS_SRC")}
    for path in (ROOT / "build" / "surgery").glob("*.py"):
        if path.stem in target_only or path.stem == "registry":
            continue  # the registry imports every pass but runs only a stage's own list
        imported = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m.rsplit(".", 1)[-1] for m in imported} & target_only, path.name
