"""INT8 error attribution: the mixed denoiser answers exactly the chosen calls from the quantized graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .conftest import copy_artifacts


def test_mixed_denoiser_routes_calls(calibrated) -> None:  # type: ignore[no-untyped-def]
    """No steps = the FP32 video; every step = the INT8 video; one branch alone differs from both."""
    from t2vtrt.calibration.attribution import Case, MixedDenoiser, generate_all
    from t2vtrt.calibration.paths import CalibPaths
    from t2vtrt.calibration.reference import onnx_pipeline

    paths, _, _ = calibrated
    pipe = onnx_pipeline(paths)
    quantized = onnx_pipeline(paths, CalibPaths(paths).u8s8_graph, "int8", schedule=False)
    cases = [Case("a red balloon", 3)]
    fp32, int8 = generate_all(pipe, cases)[0], generate_all(quantized, cases)[0]
    assert not np.array_equal(fp32, int8)
    mix = lambda **kw: generate_all(pipe, cases, MixedDenoiser(pipe.sessions["denoiser"], quantized.sessions["denoiser"], **kw))[0]  # noqa: E731
    assert np.array_equal(mix(steps=set()), fp32)
    assert np.array_equal(mix(), int8)
    one_branch = mix(branch=1)
    assert not np.array_equal(one_branch, fp32) and not np.array_equal(one_branch, int8)
    assert pipe.sessions["denoiser"] is not None and type(pipe.sessions["denoiser"]).__name__ != "MixedDenoiser"


def test_attribution_report(calibrated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """run_attribution writes one row per step alone, per first-k schedule and per branch, plus the markdown table."""
    from t2vtrt.calibration.attribution import run_attribution

    paths = copy_artifacts(calibrated[0], tmp_path)
    run_attribution(paths, "u8s8", prompt_count=1)
    rows = json.loads((paths.reports_dir / "int8_attribution.json").read_text())
    steps = len(rows["timesteps"])
    assert [r["step"] for r in rows["only_step"]] == list(range(steps))
    assert [r["float_steps"] for r in rows["first_float"]] == list(range(steps))
    assert [r["branch"] for r in rows["branch"]] == ["unconditional", "conditional"]
    assert all(r["psnr_min"] > 0 for kind in ("only_step", "first_float", "branch") for r in rows[kind])
    table = (paths.reports_dir / "int8_attribution.md").read_text()
    assert table.count("\n| ") == 1 + 2 * steps + 2
