"""Where the calibration stage's files live: artifacts/<model>/calib/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from t2vtrt.build.artifacts import ArtifactPaths


@dataclass(frozen=True)
class CalibPaths:
    """The calib/ folder of one model, plus the graphs the quantize stage writes."""

    artifacts: ArtifactPaths

    @property
    def root(self) -> Path:
        """artifacts/<model>/calib."""
        return self.artifacts.calib_dir

    @property
    def data(self) -> Path:
        """Captured denoiser inputs from the calibration prompts."""
        return self.root / "denoiser.npz"

    @property
    def eval_data(self) -> Path:
        """Captured denoiser inputs from the held-out prompts (sweep and gate)."""
        return self.root / "denoiser_eval.npz"

    @property
    def layout(self) -> Path:
        """The Q/DQ placement (ModelOpt's rules) with every quantizable node quantized, FP32 elsewhere."""
        return self.root / "denoiser.qdq-all.onnx"

    @property
    def layout_stamp(self) -> Path:
        """Which source graph the layout was made from (it is reused while that holds)."""
        return self.root / "denoiser.qdq-all.json"

    @property
    def ranges(self) -> Path:
        """Per activation tensor: observed min/max and the entropy amax."""
        return self.root / "ranges.json"

    @property
    def cache(self) -> Path:
        """The activation scales as a legacy TensorRT calibration cache."""
        return self.root / "denoiser.cache"

    @property
    def plan(self) -> Path:
        """Which layer groups stay FP16, with the measurements behind it."""
        return self.root / "precision_plan.json"

    @property
    def gate(self) -> Path:
        """The accuracy gate's last verdict."""
        return self.root / "gate.json"

    @property
    def source(self) -> Path:
        """The FP32 graph that is calibrated and quantized."""
        return self.artifacts.onnx("denoiser", "opt")

    @property
    def trt_graph(self) -> Path:
        """The TensorRT target: Q/DQ + FP16."""
        return self.artifacts.onnx("denoiser", "int8")

    @property
    def cpuverify_graph(self) -> Path:
        """Same scales as the TensorRT target, FP32 elsewhere: what ONNX Runtime gates on."""
        return self.artifacts.onnx("denoiser", "int8-cpuverify")

    @property
    def u8s8_graph(self) -> Path:
        """The cpu target's fast INT8 (uint8 activations, int8 weights)."""
        return self.artifacts.onnx("denoiser", "int8-u8s8")
