"""Load a target directory's manifest.json, validate it against the schema, verify file hashes.

Schema version 2 (docs/manifest.md); a version 1 manifest (unet3d only, no tensor roles) is read by
mapping its tensor names to roles (`upgrade_v1`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Iterable

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file

SCHEMA_PATH = Path(__file__).parent / "schema" / "manifest.schema.json"
SCHEMA_VERSION = 2
REBUILD = "rebuild it with `t2vtrt engines`"
# Version 1 manifests were all unet3d; its tensor names say which role each plays.
V1_ROLES: dict[str, dict[str, str]] = {
    "text_encoder": {"input_ids": "token_ids", "last_hidden_state": "context"},
    "denoiser": {"sample": "latent", "timestep": "timestep", "encoder_hidden_states": "context", "noise_pred": "prediction"},
    "vae_decoder": {"latent": "latent", "image": "frames"},
}
SINGLE_DENOISER: list[dict[str, Any]] = [{"component": "denoiser", "until_timestep": None}]


@lru_cache(maxsize=1)
def _validator() -> Any:
    """A jsonschema validator for the manifest schema (built once)."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def validate_manifest(data: dict[str, Any], source: str = "manifest.json") -> None:
    """Raise a one-line T2VError naming the first schema violation, then the first broken role contract."""
    error = next(iter(sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise T2VError(f"{source} is not a valid t2v-trt manifest at {where}: {error.message}; {REBUILD}")
    check_roles(data, source)


def upgrade_v1(data: dict[str, Any], source: str = "manifest.json") -> dict[str, Any]:
    """A version 1 manifest as version 2: roles from the unet3d tensor names, one denoiser; unknown names are refused."""
    data = copy.deepcopy(data)
    components = data.get("components")
    for component, entry in components.items() if isinstance(components, dict) else []:
        names = V1_ROLES.get(component, {})
        for tensor in [*entry.get("inputs", []), *entry.get("outputs", [])] if isinstance(entry, dict) else []:
            name = tensor.get("name") if isinstance(tensor, dict) else None
            if name not in names:
                raise T2VError(f"{source} is a version 1 manifest whose {component} tensor {name!r} has no known role; {REBUILD}")
            tensor.setdefault("role", names[name])
    data["schema_version"] = SCHEMA_VERSION
    data.setdefault("denoisers", copy.deepcopy(SINGLE_DENOISER))
    return data


def _roles(entry: dict[str, Any], kind: str) -> list[str]:
    """The roles of a component's inputs or outputs, in order."""
    return [t["role"] for t in entry[kind]]


def _require(source: str, component: str, entry: dict[str, Any], kind: str, needed: tuple[str, ...], allowed: tuple[str, ...] = ()) -> None:
    """Each needed role exactly once among `kind`, nothing outside needed + allowed (+ cache:<k> when allowed)."""
    roles = _roles(entry, kind)
    for role in needed:
        if roles.count(role) != 1:
            raise T2VError(f"{source}: {component} needs exactly one {kind[:-1]} with role {role!r}, found {roles.count(role)}; {REBUILD}")
    caches = "cache:*" in allowed
    extra = [r for r in roles if r not in needed and r not in allowed and not (caches and r.startswith("cache:"))]
    if extra:
        raise T2VError(f"{source}: {component} has {kind} with roles the runtime cannot feed or read here: {', '.join(extra)}; {REBUILD}")
    if len(set(roles)) != len(roles):
        raise T2VError(f"{source}: {component} has two {kind} with the same role; {REBUILD}")


def _component(data: dict[str, Any], source: str, name: str, named_by: str) -> dict[str, Any]:
    """A component another field names; a one-line error when it is missing."""
    if name not in data["components"]:
        raise T2VError(f"{source}: {named_by} names component {name!r}, which the manifest does not have; {REBUILD}")
    return data["components"][name]


def check_roles(data: dict[str, Any], source: str = "manifest.json") -> None:
    """What the schema cannot say: the components the loop uses exist and carry the roles it feeds and reads."""
    _require(source, "text_encoder", data["components"]["text_encoder"], "inputs", ("token_ids",), ("token_mask",))
    _require(source, "text_encoder", data["components"]["text_encoder"], "outputs", ("context",))
    denoisers = data["denoisers"]
    for index, entry in enumerate(denoisers):
        component = _component(data, source, entry["component"], f"denoisers[{index}]")
        _require(source, entry["component"], component, "inputs", ("latent", "timestep", "context"))
        _require(source, entry["component"], component, "outputs", ("prediction",))
        last = index == len(denoisers) - 1
        if (entry["until_timestep"] is None) != last:
            want = "null (the last entry runs every remaining step)" if last else "a timestep (only the last entry is open-ended)"
            raise T2VError(f"{source}: denoisers[{index}].until_timestep must be {want}; {REBUILD}")
        if not last and index > 0 and entry["until_timestep"] >= denoisers[index - 1]["until_timestep"]:
            raise T2VError(f"{source}: denoisers' until_timestep must decrease (the sampler runs from high noise to low); {REBUILD}")
    latent = data["latent"]
    if latent["vae_decode"] != "streaming":
        _require(source, "vae_decoder", data["components"]["vae_decoder"], "inputs", ("latent",))
        _require(source, "vae_decoder", data["components"]["vae_decoder"], "outputs", ("frames",))
        return
    first_name, next_name = latent["stream"]["first"], latent["stream"]["next"]
    first = _component(data, source, first_name, "latent.stream.first")
    following = _component(data, source, next_name, "latent.stream.next")
    _require(source, first_name, first, "inputs", ("latent",))
    _require(source, first_name, first, "outputs", ("frames",), ("cache:*",))
    _require(source, next_name, following, "inputs", ("latent",), ("cache:*",))
    _require(source, next_name, following, "outputs", ("frames",), ("cache:*",))
    made = {r for r in _roles(first, "outputs") if r.startswith("cache:")}
    for what, roles in ((f"{next_name} inputs", _roles(following, "inputs")), (f"{next_name} outputs", _roles(following, "outputs"))):
        caches = {r for r in roles if r.startswith("cache:")}
        if caches != made:
            raise T2VError(
                f"{source}: the streaming decoder's caches do not line up: {first_name} outputs {sorted(made)}, {what} {sorted(caches)}; {REBUILD}"
            )


@dataclass
class Manifest:
    """A validated manifest and the directory its file names are relative to."""

    data: dict[str, Any]
    root: Path

    def component(self, name: str) -> dict[str, Any]:
        """The component entry (inputs, outputs, axes, variants)."""
        return self.data["components"][name]

    def variant(self, component: str, precision: str | None = None) -> dict[str, Any]:
        """The variant to run: the requested precision if built, else the component's fp32/default."""
        variants = self.component(component)["variants"]
        wanted = self.data["defaults"]["precision"] if precision is None else precision  # "" is a mistake, not the default
        if wanted in variants:
            return variants[wanted]
        # Precision is per graph: e.g. only the denoiser has an int8 variant; the others stay float.
        if precision is not None and not any(precision in self.component(c)["variants"] for c in self.data["components"]):
            built = sorted({p for c in self.data["components"].values() for p in c["variants"]})
            raise T2VError(f"precision {precision!r} was not built in {self.root}: built precisions are {', '.join(built)}")
        for fallback in ("fp16", "fp32"):
            if fallback in variants:
                return variants[fallback]
        return next(iter(variants.values()))

    def tensor(self, component: str, role: str, kind: str = "inputs") -> dict[str, Any]:
        """The input (or output) of a component that plays `role`."""
        for tensor in self.component(component)[kind]:
            if tensor.get("role") == role:
                return tensor
        raise T2VError(f"{self.root / 'manifest.json'}: {component} has no {kind[:-1]} with role {role!r}; {REBUILD}")

    def caches(self, component: str, kind: str) -> dict[str, str]:
        """A streaming decoder graph's cache tensors: role cache:<k> -> tensor name."""
        return {t["role"]: t["name"] for t in self.component(component)[kind] if t["role"].startswith("cache:")}

    @cached_property
    def denoisers(self) -> list[tuple[str, float | None]]:
        """(component, until_timestep) in the sampler's order; one denoiser named `denoiser` unless the manifest says more."""
        entries = self.data.get("denoisers", SINGLE_DENOISER)
        return [(e["component"], None if e["until_timestep"] is None else float(e["until_timestep"])) for e in entries]

    def denoiser_at(self, timestep: float) -> str:
        """The denoiser component that runs the step at `timestep`."""
        for component, until in self.denoisers:
            if until is None or timestep >= until:
                return component
        return self.denoisers[-1][0]  # unreachable for a validated manifest (the last entry's bound is null)

    @cached_property
    def stages(self) -> dict[str, str]:
        """Each component's stage (text_encoder, denoiser or vae_decoder): what timings and --low-vram group by."""
        return component_stages(self.data["components"], [name for name, _ in self.denoisers], self.data["latent"])

    def path(self, file: str) -> Path:
        """A manifest-relative file name as a path."""
        return self.root / file

    @property
    def backend(self) -> str:
        """onnxruntime or tensorrt."""
        return self.data["target"]["backend"]


def load_manifest(target_dir: str | Path, verify_hashes: bool = True) -> Manifest:
    """Read, validate and (by default) hash-check every file the manifest names."""
    root = Path(target_dir)
    path = root / "manifest.json"
    if not path.is_file():
        raise T2VError(f"{path} does not exist: pass --engines <artifacts/<model>/engines/<target>> built by `make engines`")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise T2VError(f"{path} is not valid JSON ({exc}); rebuild it with `make engines`") from exc
    data = _current(data, str(path))
    validate_manifest(data, source=str(path))
    manifest = Manifest(data, root)
    for file, _ in _named_files(data):
        _check_inside(root, file, path)
    if verify_hashes:
        for file, expected in _named_files(data):
            _verify(root / file, expected)
    return manifest


def component_stages(components: Iterable[str], denoisers: Iterable[str], latent: dict[str, Any]) -> dict[str, str]:
    """Each component's stage: the denoisers are the denoiser stage, a streaming decoder's two graphs the vae_decoder's.

    Manifests and export.json (the build's GPU precision step) both describe components this way.
    """
    stages = {name: name for name in components}
    stages.update(dict.fromkeys(denoisers, "denoiser"))
    stream = latent.get("stream")
    if stream:
        stages.update({stream["first"]: "vae_decoder", stream["next"]: "vae_decoder"})
    return stages


def _current(data: Any, source: str) -> Any:
    """The manifest as the current version: version 1 (or none) upgraded, a newer one refused in one line."""
    if not isinstance(data, dict):
        return data  # the schema names the problem
    version = data.get("schema_version", 1)
    if version == 1:
        return upgrade_v1(data, source)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise T2VError(f"{source} is manifest schema version {version}; this runtime reads versions 1-{SCHEMA_VERSION}: upgrade t2v-trt or {REBUILD}")
    return data


def _check_inside(root: Path, file: str, source: Path) -> None:
    """A manifest names files inside its own folder only: a target directory must be self-contained and movable."""
    if Path(file).is_absolute() or not (root / file).resolve().is_relative_to(root.resolve()):
        raise T2VError(
            f"{source} names {file!r}, which is outside its folder: a manifest may only name files beside it; rebuild the target with `make engines`"
        )


def _named_files(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (file, sha256) the manifest names."""
    files = [(data["tokenizer"]["file"], data["tokenizer"]["sha256"])]
    for component in data["components"].values():
        for variant in component["variants"].values():
            files.append((variant["file"], variant["sha256"]))
            files += [(extra["file"], extra["sha256"]) for extra in variant.get("external_data", [])]
    return files


def _verify(path: Path, expected: str) -> None:
    """Refuse a missing file or one whose sha256 differs from the manifest's."""
    if not path.is_file():
        raise T2VError(f"{path} is named in the manifest but missing: rebuild the target with `make engines`")
    actual = sha256_file(path)
    if actual != expected:
        raise T2VError(
            f"{path} does not match its manifest hash (sha256 {actual[:12]}... != {expected[:12]}...): "
            "the file changed after the build; rebuild with `make engines`"
        )
