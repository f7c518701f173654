"""The Makefile: `make engines` is incremental, and its stage sources agree with the surgery registry."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2vtrt.build.surgery.registry import PASSES, PIPELINES, TARGET_PIPELINES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a whole `make engines` of the tiny model: about 2 minutes on 2 cores
@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_second_make_engines_is_a_no_op(tmp_path: Path) -> None:
    """First run builds every stage; the second runs none and returns in seconds."""
    venv = Path(sys.executable).parent.parent
    if not (venv / ".installed").is_file():
        pytest.skip(f"{venv} was not set up by `make setup` (no .installed stamp)")
    # MODEL=tiny: the mechanism is the same for every model, and tiny's stages are the quickest (CI builds the default).
    args = ["make", "-C", str(REPO), "engines", "MODEL=tiny", f"ARTIFACTS={tmp_path}", f"VENV={venv}", "QUIET=1"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "t2vtrt --quiet export" in first.stdout and (tmp_path / "tiny" / "samples" / "sample.mp4").is_file()
    start = time.perf_counter()
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert second.returncode == 0, second.stderr[-2000:]
    for stage in ("export", "surgery", "engines", "generate"):
        assert f"t2vtrt --quiet {stage}" not in second.stdout, second.stdout
    assert elapsed < 5, elapsed
    # make agrees: every file target is up to date (`engines` itself is phony: it prints the summary).
    sample = tmp_path / "tiny" / "samples" / "sample.mp4"
    assert subprocess.run([*args[:3], "-q", str(sample), *args[4:]]).returncode == 0


def make_variable(name: str) -> list[str]:
    """The words of a `NAME := ...` line of the Makefile, backslash continuations joined."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(f"{name} :="))
    return line.split(":=", 1)[1].split()


def pass_file(name: str) -> str:
    """The repo-relative source file of a registered pass."""
    return str(Path(sys.modules[PASSES[name].fn.__module__].__file__).resolve().relative_to(REPO))


def test_target_pass_sources_are_the_target_only_passes() -> None:
    """TARGET_PASS_SRC lists exactly the modules of passes that only TARGET_PIPELINES run."""
    shared = {pass_file(n) for names in PIPELINES.values() for n in names}
    target_only = {pass_file(n) for names in TARGET_PIPELINES.values() for n in names} - shared
    assert set(make_variable("TARGET_PASS_SRC")) == target_only


def test_shared_passes_do_not_import_target_only_modules() -> None:
    """Editing a target-only module cannot change the shared graphs (so calibration need not re-run)."""
    target_only = {Path(p).stem for p in make_variable("TARGET_PASS_SRC")}
    for path in (REPO / "build" / "surgery").glob("*.py"):
        if path.stem in target_only or path.stem == "registry":
            continue  # the registry imports every pass but runs only a stage's own list
        imported = {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m.rsplit(".", 1)[-1] for m in imported} & target_only, path.name


def make_model_name(model: str) -> str:
    """The Makefile's MODEL_NAME for MODEL (what its file targets are under)."""
    rule = "print-model-name: ; @echo $(MODEL_NAME)"
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), f"--eval={rule}", "print-model-name", f"MODEL={model}", "VENV=/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_model_name_is_the_cli_artifact_name(tmp_path: Path) -> None:
    """MODEL_NAME restates build.models.artifact_name in Make: both name every kind of MODEL alike."""
    from t2vtrt.build.models import artifact_name

    model = tmp_path / "my-model.v2"
    model.mkdir()
    (tmp_path / "linked").symlink_to(model, target_is_directory=True)
    for given in ("shapes", "tiny", str(model), f"{model}/", str(tmp_path / "linked")):
        assert make_model_name(given) == artifact_name(given), given


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_setup_keeps_a_gpu_venvs_onnxruntime_gpu(tmp_path: Path) -> None:
    """make setup installs the CPU onnxruntime, except into a venv `make gpu-check` moved to onnxruntime-gpu."""
    root = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"

    def setup_install() -> str:
        out = subprocess.run(["make", "-n", "-C", str(root), "setup", f"VENV={venv}"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return next(line for line in out.stdout.splitlines() if " -e '" in line)

    assert setup_install().endswith("-e '.[build-tools,dev,cpu]'")
    venv.mkdir()
    (venv / ".installed-gpu-cu13").touch()
    assert setup_install().endswith("-e '.[build-tools,dev]'")
