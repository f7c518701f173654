"""Load a target directory's manifest.json, validate it against the schema, verify file hashes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file

SCHEMA_PATH = Path(__file__).parent / "schema" / "manifest.schema.json"


@lru_cache(maxsize=1)
def _validator() -> Any:
    """A jsonschema validator for the manifest schema (built once)."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def validate_manifest(data: dict[str, Any], source: str = "manifest.json") -> None:
    """Raise a one-line T2VError naming the first schema violation."""
    error = next(iter(sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise T2VError(f"{source} is not a valid t2v-trt manifest at {where}: {error.message}; rebuild it with `t2vtrt engines`")


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
    validate_manifest(data, source=str(path))
    manifest = Manifest(data, root)
    for file, _ in _named_files(data):
        _check_inside(root, file, path)
    if verify_hashes:
        for file, expected in _named_files(data):
            _verify(root / file, expected)
    return manifest


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
