"""`make realsize`'s driver: stage order, measured wall time and peak RSS of real processes, the plan tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from t2vtrt.build import realsize_report as rr
from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.engines import tensorrt as trtmod
from t2vtrt.runtime.errors import T2VError

import synthetic_artifacts as synthetic  # tests/support (pytest pythonpath)


def test_stages_run_in_build_order_with_and_without_int8(tmp_path: Path) -> None:
    """export, surgery, [calibrate, quantize], cpu engines, then each GPU's dry-run plan, resident and --low-vram."""
    with_int8 = [name for name, _ in rr.stage_commands(tmp_path / "m", tmp_path / "a", True, ("rtx3060",))]
    assert with_int8 == ["export", "surgery", "calibrate", "quantize", "engines cpu", "plan rtx3060", "plan rtx3060 --low-vram"]
    without = rr.stage_commands(tmp_path / "m", tmp_path / "a", False, ("rtx4060",))
    assert not {"calibrate", "quantize"} & {name for name, _ in without}
    assert without[-1][1][-3:] == ["rtx4060", "--dry-run", "--low-vram"]


def test_peak_rss_is_the_processs_own_measured_peak(tmp_path: Path) -> None:
    """A child that touches 400 MiB reports at least that and not several times more, whatever this process holds."""
    ballast = bytearray(1200 * 2**20)  # a large parent: a plain fork-and-exec child would report >= 1.2 GiB
    code = "b = bytearray(400 * 2**20); print('touched', len(b))"
    log = tmp_path / "run.log"
    run = rr.run_measured("alloc", [sys.executable, "-c", code], log, lambda _: None)
    assert run.returncode == 0 and run.wall_s >= 0
    assert 400 * 2**20 <= run.peak_rss < 1200 * 2**20, run.peak_rss
    assert "touched 419430400" in log.read_text()
    small = rr.run_measured("small", [sys.executable, "-c", "pass"], log, lambda _: None)
    assert small.peak_rss < run.peak_rss - 300 * 2**20
    del ballast


def test_a_failing_stage_keeps_its_exit_code(tmp_path: Path) -> None:
    """A stage that exits non-zero is recorded with its code, and what it printed is in the log."""
    run = rr.run_measured("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path / "l.log", lambda _: None)
    assert run.returncode == 3 and "boom" in (tmp_path / "l.log").read_text()


def test_vram_table_reads_a_real_dry_run_plan(tmp_path: Path) -> None:
    """The table comes from the plan.json a dry run writes: per component runs/built/weights/activations, totals."""
    paths: ArtifactPaths = synthetic.make_artifacts(tmp_path / "artifacts", "tiny")
    plan_file = trtmod.build_gpu_target(paths, "rtx4060", dry_run=True, quiet=True)
    table = rr.vram_table(plan_file)
    assert set(table["components"]) == {"text_encoder", "denoiser", "vae_decoder"}
    assert all(c["weights_gib"] >= 0 and c["built"] for c in table["components"].values())
    assert table["gib"]["total"] > 0 and isinstance(table["fits"], bool)
    report = {
        "model": "m",
        "host": {"cpu": "cpu", "cores": 2},
        "weights_fp32_bytes": 2**30,
        "int8": False,
        "stages": [{"name": "export", "wall_s": 12.0, "peak_rss": 2**31, "returncode": 0}],
        "plans": {"rtx4060": table},
    }
    text = "\n".join(rr.markdown(report))
    assert "| export | 12 s | 2.00 GiB | 2.00 | ok |" in text and "## rtx4060:" in text and "| denoiser |" in text


def test_a_directory_without_a_model_is_refused_in_one_line(tmp_path: Path) -> None:
    """No model_index.json: the error names the make target that writes one."""
    with pytest.raises(T2VError, match="make realsize-model") as raised:
        rr.run_all(tmp_path / "nothing", tmp_path / "artifacts")
    assert "\n" not in str(raised.value)
