"""Write and validate manifest.json, the runtime's only contract (schema: runtime/schema)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file, write_json
from t2vtrt.runtime.manifest import SCHEMA_VERSION, SINGLE_DENOISER, V1_ROLES, validate_manifest

TOOLS = (
    "t2v-trt",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx-graphsurgeon",
    "polygraphy",
    "diffusers",
    "transformers",
    "nvidia-modelopt",
    "tensorrt",
    "tensorrt-lean",
    "numpy",
    "tokenizers",
)


def tool_versions() -> dict[str, str | None]:
    """Installed versions of the tools that shape the artifacts (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def variant_entry(target_dir: Path, file: str, precision: str, backend: str, **extra: Any) -> dict[str, Any]:
    """One file of a component at one precision, hashed."""
    path = target_dir / file
    if not path.is_file():
        raise T2VError(f"manifest names {path}, which does not exist: the engines stage did not finish; run it again")
    return {"file": file, "sha256": sha256_file(path), "bytes": path.stat().st_size, "precision": precision, "backend": backend, **extra}


def build_manifest(
    export_info: dict[str, Any],
    target: dict[str, Any],
    variants: dict[str, dict[str, dict[str, Any]]],
    tokenizer_file: str,
    tokenizer_sha256: str,
    default_precision: str = "fp32",
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the manifest (schema v2) from the export record, the target and each component's variants (+ what they were made from)."""
    components = {}
    for name, spec in export_info["components"].items():
        components[name] = {**_with_roles(name, spec), "variants": variants[name]}
    tokenizer = export_info["tokenizer"]
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": export_info["model"],
        "target": target,
        "tools": tool_versions(),
        "tokenizer": {"file": tokenizer_file, "sha256": tokenizer_sha256, "max_length": tokenizer["max_length"], "pad_id": tokenizer["pad_id"]},
        "scheduler": export_info["scheduler"],
        "latent": export_info["latent"],
        "defaults": {**export_info["defaults"], "precision": default_precision},
        "ranges": export_info["ranges"],
        # A family with several denoisers (experts switched at a timestep) records them in export.json.
        "denoisers": export_info.get("denoisers") or [dict(e) for e in SINGLE_DENOISER],
        "components": components,
        **({"provenance": provenance} if provenance is not None else {}),
    }


def _with_roles(component: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A component's spec with a role on every tensor: export.json's own, else (an export from before roles) the unet3d name's."""
    names = V1_ROLES.get(component, {})
    out = dict(spec)
    for kind in ("inputs", "outputs"):
        tensors = []
        for tensor in spec[kind]:
            role = tensor.get("role") or names.get(tensor["name"])
            if role is None:
                raise T2VError(
                    f"export.json's {component} {kind[:-1]} {tensor['name']!r} has no role (the family's TensorSpec.role): "
                    "give it one in the family's component_specs, then run `t2vtrt export` again"
                )
            tensors.append({**tensor, "role": role})
        out[kind] = tensors
    return out


def write_manifest(target_dir: Path, manifest: dict[str, Any]) -> Path:
    """Validate against the schema, then write atomically: the manifest is the last file of a build."""
    validate_manifest(manifest, source=str(target_dir / "manifest.json"))
    path = target_dir / "manifest.json"
    write_json(path, manifest)
    return path
