"""GPU profiles as data: one TOML file per GPU in this folder, loaded and validated here.

Adding a GPU is adding a file; nothing else changes. Every problem with a file is one
T2VError line that names the file and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2vtrt.build.families.spec import ShapeRanges
from t2vtrt.runtime.errors import T2VError

PROFILES_DIR = Path(__file__).parent
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
HARDWARE_COMPAT = ("none", "ampere_plus", "same_compute_capability")
MEMORY_POOLS = ("workspace_mib", "tactic_shared_memory_mib")
REQUIRED = ("compute_capability", "vram_gb", "shapes")
FIELDS = {
    "description": str,
    "compute_capability": str,
    "vram_gb": (int, float),
    "reserve_gb": (int, float),
    "match": list,
    "precisions": list,
    "builder_optimization_level": int,
    "hardware_compatibility": str,
    "memory_pool_limits": dict,
    "shapes": dict,
}
# Minimum compute capability of a precision (TensorRT's hardware support).
PRECISION_MIN_CC = {"bf16": (8, 0), "fp8": (8, 9)}


@dataclass(frozen=True)
class GpuProfile:
    """One GPU: capability, memory, builder settings and default shape ranges per family."""

    name: str
    path: Path
    compute_capability: str
    vram_gb: float
    description: str = ""
    reserve_gb: float = 1.0
    match: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    builder_optimization_level: int = 3
    hardware_compatibility: str = "none"
    memory_pool_limits: dict[str, int] = field(default_factory=dict)  # pool name -> MiB
    shapes: dict[str, ShapeRanges] = field(default_factory=dict)  # family -> ranges

    @property
    def sm(self) -> str:
        """The compute capability as TensorRT and CUDA name it: 8.6 -> sm86."""
        return "sm" + self.compute_capability.replace(".", "")

    @property
    def capability(self) -> tuple[int, int]:
        """(major, minor)."""
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    def ranges_for(self, family: str) -> ShapeRanges | None:
        """The profile's [shapes.<family>] ranges, else the family's own default for this VRAM (None: the model's)."""
        if family in self.shapes:
            return self.shapes[family]
        from t2vtrt.build.families import get_family

        return get_family(family).gpu_ranges(self.vram_gb)

    def to_json(self) -> dict[str, Any]:
        """The plan's record of the profile."""
        return {
            "name": self.name,
            "file": self.path.name,
            "description": self.description,
            "compute_capability": self.compute_capability,
            "vram_gb": self.vram_gb,
            "reserve_gb": self.reserve_gb,
            "precisions": list(self.precisions),
            "builder_optimization_level": self.builder_optimization_level,
            "hardware_compatibility": self.hardware_compatibility,
            "memory_pool_limits": dict(self.memory_pool_limits),
            "shapes": {family: ranges.to_json() for family, ranges in self.shapes.items()},
        }


def profile_paths(folder: Path = PROFILES_DIR) -> list[Path]:
    """Every profile file, sorted; files starting with '_' hold other data, not GPUs."""
    return sorted(p for p in folder.glob("*.toml") if not p.name.startswith("_"))


def profile_names(folder: Path = PROFILES_DIR) -> list[str]:
    """Names of the known profiles (file stems)."""
    return [p.stem for p in profile_paths(folder)]


def list_profiles(folder: Path = PROFILES_DIR) -> list[GpuProfile]:
    """Every profile, loaded and validated."""
    return [parse_profile(p) for p in profile_paths(folder)]


def load_profile(name: str, folder: Path = PROFILES_DIR) -> GpuProfile:
    """A profile by name (or by the path of a .toml file); a one-line error for an unknown name."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        return parse_profile(candidate)
    path = folder / f"{name}.toml"
    if name.startswith("_") or not path.is_file():
        raise T2VError(
            f"unknown GPU profile {name!r}: known profiles are {', '.join(profile_names(folder))} "
            f"(or add {folder / (name + '.toml')}, see `t2vtrt gpus`)"
        )
    return parse_profile(path)


def profile_table(profiles: list[GpuProfile], detected: str | None = None) -> list[str]:
    """`t2vtrt gpus`: one aligned line per profile (the detected one marked with *)."""
    from t2vtrt.build.families import FAMILIES

    header = ("", "name", "sm", "VRAM", "precisions", "hw compat", "max per family (frames x HxW)", "description")
    rows = [header]
    for p in profiles:
        maxima = {family: p.ranges_for(family) for family in sorted(FAMILIES)}
        max_shape = ", ".join(f"{family} {r.frames[2]} x {r.height[2]}x{r.width[2]}" for family, r in maxima.items() if r) or "-"
        rows.append(
            (
                "*" if p.name == detected else "",
                p.name,
                p.sm,
                f"{p.vram_gb:g} GiB",
                ",".join(p.precisions),
                p.hardware_compatibility,
                max_shape,
                p.description,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def parse_profile(path: Path) -> GpuProfile:
    """Read and validate one profile file."""
    data = read_toml(path)
    _check_fields(path, data)
    cc = _check_capability(path, data["compute_capability"])
    precisions = tuple(data.get("precisions", ("fp32", "fp16", "int8")))
    _check_precisions(path, precisions, cc)
    hw = data.get("hardware_compatibility", "none")
    _check_hardware_compat(path, hw, cc)
    level = data.get("builder_optimization_level", 3)
    if not 0 <= level <= 5:
        _fail(path, f"builder_optimization_level must be 0..5, got {level}")
    return GpuProfile(
        name=path.stem,
        path=path,
        compute_capability=data["compute_capability"],
        vram_gb=float(_positive(path, "vram_gb", data["vram_gb"])),
        description=data.get("description", ""),
        reserve_gb=float(data.get("reserve_gb", 1.0)),
        match=tuple(_check_match(path, data.get("match", []))),
        precisions=precisions,
        builder_optimization_level=level,
        hardware_compatibility=hw,
        memory_pool_limits=_check_pools(path, data.get("memory_pool_limits", {})),
        shapes=_check_shapes(path, data["shapes"]),
    )


def _fail(path: Path, problem: str) -> None:
    """Raise the one-line error every check uses: file, problem, fix."""
    raise T2VError(f"GPU profile {path}: {problem}; fix the file (see {PROFILES_DIR / 'rtx3060.toml'} for a complete example)")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse TOML; a syntax error names the file and the line."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise T2VError(f"{path} is not valid TOML ({exc}); fix its syntax") from exc


def _check_fields(path: Path, data: dict[str, Any]) -> None:
    """Refuse unknown fields (typos), missing required fields and wrong types."""
    for key in data:
        if key not in FIELDS:
            _fail(path, f"unknown field {key!r} (known fields: {', '.join(FIELDS)})")
    for key in REQUIRED:
        if key not in data:
            example = {
                "compute_capability": 'compute_capability = "8.6"',
                "vram_gb": "vram_gb = 12",
                "shapes": "[shapes.unet3d] with batch/frames/height/width",
            }[key]
            _fail(path, f"missing required field {key!r} (e.g. {example})")
    for key, value in data.items():
        expected = FIELDS[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            name = expected.__name__ if isinstance(expected, type) else "number"
            _fail(path, f"field {key!r} must be a {name}, got {value!r}")


def _check_capability(path: Path, value: str) -> tuple[int, int]:
    """'8.6' -> (8, 6)."""
    if not re.fullmatch(r"[0-9]+\.[0-9]", value):
        _fail(path, f'compute_capability must look like "8.6", got {value!r}')
    major, minor = value.split(".")
    return int(major), int(minor)


def _check_precisions(path: Path, precisions: tuple[str, ...], cc: tuple[int, int]) -> None:
    """Known precisions only, each supported by the compute capability."""
    for precision in precisions:
        if precision not in PRECISIONS:
            _fail(path, f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
        needed = PRECISION_MIN_CC.get(precision)
        if needed and cc < needed:
            _fail(path, f"precision {precision!r} needs compute capability {needed[0]}.{needed[1]}+, this GPU is {cc[0]}.{cc[1]}")
    if "fp32" not in precisions:
        _fail(path, "precisions must include 'fp32' (the reference graphs)")


def _check_hardware_compat(path: Path, level: str, cc: tuple[int, int]) -> None:
    """A TensorRT hardware-compatibility level this GPU can build."""
    if level not in HARDWARE_COMPAT:
        _fail(path, f"hardware_compatibility must be one of {', '.join(HARDWARE_COMPAT)}, got {level!r}")
    if level == "ampere_plus" and cc < (8, 0):
        _fail(path, "hardware_compatibility 'ampere_plus' needs compute capability 8.0+")


def _check_match(path: Path, patterns: list[Any]) -> list[str]:
    """Regular expressions for the NVML device name."""
    for pattern in patterns:
        try:
            re.compile(str(pattern))
        except re.error as exc:
            _fail(path, f"match pattern {pattern!r} is not a regular expression ({exc})")
    return [str(p) for p in patterns]


def _check_pools(path: Path, pools: dict[str, Any]) -> dict[str, int]:
    """Memory-pool limits in MiB."""
    for key, value in pools.items():
        if key not in MEMORY_POOLS:
            _fail(path, f"unknown memory pool {key!r} (known: {', '.join(MEMORY_POOLS)})")
        _positive(path, f"memory_pool_limits.{key}", value)
    return {k: int(v) for k, v in pools.items()}


def _check_shapes(path: Path, shapes: dict[str, Any]) -> dict[str, ShapeRanges]:
    """[shapes.<family>] tables of [min, opt, max] per user-level axis, for known families."""
    from t2vtrt.build.families import FAMILIES

    out: dict[str, ShapeRanges] = {}
    for family, table in shapes.items():
        if family not in FAMILIES:
            _fail(path, f"[shapes.{family}] names an unknown model family (known: {', '.join(sorted(FAMILIES))})")
        if not isinstance(table, dict):
            _fail(path, f"[shapes.{family}] must be a table")
        axes = ("batch", "frames", "height", "width")
        for key in table:
            if key not in axes:
                _fail(path, f"unknown field {key!r} in [shapes.{family}] (known: {', '.join(axes)})")
        for axis in axes:
            _check_range(path, f"shapes.{family}.{axis}", table.get(axis))
        out[family] = ShapeRanges.from_json(table)
    if not out:
        _fail(path, "[shapes] needs at least one family table, e.g. [shapes.unet3d]")
    return out


def _check_range(path: Path, where: str, value: Any) -> None:
    """[min, opt, max] positive integers with min <= opt <= max."""
    if value is None:
        _fail(path, f"missing {where} (a [min, opt, max] list)")
    ok = isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok or not value[0] <= value[1] <= value[2]:
        _fail(path, f"{where} must be [min, opt, max] positive integers with min <= opt <= max, got {value!r}")


def _positive(path: Path, where: str, value: Any) -> float:
    """A number > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        _fail(path, f"{where} must be a positive number, got {value!r}")
    return value
