"""Synthetic artifacts for plan/engine tests: an export.json from the real family specs and 2-4 node graphs.

Not a test module: test files load it with `load_synthetic()` (pytest's importlib mode puts no
test folder on sys.path). The graphs have each component's real I/O names, dtypes and named
axes, so the plan, the profiles and the manifest see what an export would give them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.families import unet3d
from t2vtrt.build.families.spec import LatentLayout, LoadedModel, SchedulerInfo
from t2vtrt.build.models import EMBEDDED

DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int32": TensorProto.INT32, "int64": TensorProto.INT64}


def stub_model(model: str) -> LoadedModel:
    """A LoadedModel without modules, sized like the embedded model (what component_specs reads)."""
    sizes = EMBEDDED[model].sizes
    return LoadedModel(
        family="unet3d",
        modules={},
        tokenizer_file="tokenizer.json",
        tokenizer_max_length=77,
        tokenizer_pad_id=49407,
        scheduler=SchedulerInfo("epsilon", dict(unet3d.SCHEDULER_CONFIG), ("ddim", "dpm++"), "ddim"),
        latent=LatentLayout(channels=sizes["vae"]["latent_channels"], spatial_factor=2 ** (len(sizes["vae"]["block_out_channels"]) - 1)),
        config={
            "hidden_size": sizes["text_encoder"]["hidden_size"],
            "vocab_size": sizes["text_encoder"]["vocab_size"],
            "latent_channels": sizes["vae"]["latent_channels"],
            "out_channels": sizes["vae"]["latent_channels"],
            "vae_out_channels": 3,
            "spatial_factor": 2 ** (len(sizes["vae"]["block_out_channels"]) - 1),
            "seq_len": 77,
            "num_train_timesteps": 1000,
        },
    )


def value(tensor: dict[str, Any]) -> Any:
    """A graph input/output from a manifest tensor entry (axis names become dim_params)."""
    return helper.make_tensor_value_info(tensor["name"], DTYPES[tensor["dtype"]], tensor["shape"])


def big_weight(name: str, elements: int) -> list[Any]:
    """An external-data fp32 initializer pair feeding a MatMul: counted by dims, never read."""
    tensors = []
    for suffix, dims in (("a", [1, elements]), ("b", [elements, 1])):
        t = helper.make_tensor(f"{name}_{suffix}", TensorProto.FLOAT, dims, vals=[])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", f"{name}.weights"
        tensors.append(t)
    return tensors


def component_graph(name: str, spec: dict[str, Any], extra_weights: int = 0) -> Any:
    """A small graph with the component's I/O: text_encoder Gather+MatMul, denoiser Conv3d, vae Resize+Conv."""
    inputs, outputs = [value(t) for t in spec["inputs"]], [value(t) for t in spec["outputs"]]
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    if name == "text_encoder":
        hidden = spec["outputs"][0]["shape"][-1]
        inits += [
            helper.make_tensor("embed", TensorProto.FLOAT, [64, hidden], rng.standard_normal(64 * hidden).tolist()),
            helper.make_tensor("proj", TensorProto.FLOAT, [hidden, hidden], rng.standard_normal(hidden * hidden).tolist()),
            helper.make_tensor("vocab", TensorProto.INT32, [], [64]),
        ]
        nodes += [
            helper.make_node("Mod", ["input_ids", "vocab"], ["ids"]),
            helper.make_node("Gather", ["embed", "ids"], ["emb"]),
            helper.make_node("MatMul", ["emb", "proj"], [spec["outputs"][0]["name"]]),
        ]
    elif name == "denoiser":
        c = spec["inputs"][0]["shape"][1]
        inits.append(helper.make_tensor("w", TensorProto.FLOAT, [c, c, 1, 1, 1], rng.standard_normal(c * c).tolist()))
        nodes += [
            helper.make_node("Conv", ["sample", "w"], ["conv"]),
            helper.make_node("Relu", ["conv"], ["act"]),
            helper.make_node("Mul", ["act", "sample"], [spec["outputs"][0]["name"]]),
        ]
    else:
        c, out_c = spec["inputs"][0]["shape"][1], spec["outputs"][0]["shape"][1]
        inits += [
            helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 8, 8]),
            helper.make_tensor("w", TensorProto.FLOAT, [out_c, c, 1, 1], rng.standard_normal(out_c * c).tolist()),
        ]
        nodes += [
            helper.make_node("Resize", ["latent", "", "scales"], ["up"], mode="nearest"),
            helper.make_node("Conv", ["up", "w"], [spec["outputs"][0]["name"]]),
        ]
    if extra_weights:
        inits += big_weight(f"{name}_big", extra_weights)
        nodes.append(helper.make_node("MatMul", [f"{name}_big_a", f"{name}_big_b"], [f"{name}_big_out"]))
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def make_artifacts(root: Path, model: str = "tiny", extra_weights: dict[str, int] | None = None, with_config: bool = True) -> ArtifactPaths:
    """artifacts/<model>/onnx/{export.json, tokenizer.json, <component>.opt.onnx} like export + surgery write them."""
    paths = ArtifactPaths(root / model)
    paths.onnx_dir.mkdir(parents=True, exist_ok=True)
    embedded = EMBEDDED[model]
    stub = stub_model(model)
    specs = {n: s.to_json() for n, s in unet3d.component_specs(stub.config, embedded.ranges).items()}
    for name, spec in specs.items():
        onnx.save(component_graph(name, spec, (extra_weights or {}).get(name, 0)), str(paths.onnx(name, "opt")))
    tokenizer = paths.onnx_dir / "tokenizer.json"
    tokenizer.write_text('{"model": {"vocab": {}}}\n')
    info = {
        "components": specs,
        "ranges": embedded.ranges.to_json(),
        "latent": stub.latent.to_json(),
        "scheduler": stub.scheduler.to_json(),
        "defaults": embedded.defaults.to_json(),
        "tokenizer": {"file": "tokenizer.json", "max_length": 77, "pad_id": 49407, "sha256": hashlib.sha256(tokenizer.read_bytes()).hexdigest()},
        "model": {"name": model, "family": "unet3d", "hash": "0" * 64, "source": "synthetic"},
    }
    if with_config:
        info["config"] = stub.config
    paths.export_info.write_text(json.dumps(info, indent=2))
    return paths


def write_profile(folder: Path, name: str, vram_gb: float, reserve_gb: float = 0.25, cc: str = "8.6", **extra: str) -> Path:
    """A GPU profile file for tests (valid unless `extra` says otherwise)."""
    lines = [
        f'compute_capability = "{cc}"',
        f"vram_gb = {vram_gb}",
        f"reserve_gb = {reserve_gb}",
        'precisions = ["fp32", "fp16", "int8"]',
        *extra.values(),
        "[memory_pool_limits]",
        "workspace_mib = 1024",
        "[shapes.unet3d]",
        "batch = [1, 1, 2]",
        "frames = [1, 8, 16]",
        "height = [32, 64, 128]",
        "width = [32, 64, 128]",
    ]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
