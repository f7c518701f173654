"""Write a Triton model repository over a built target: REPO/<model>/{config.pbtxt, <version>/...}.

A version folder is self-contained and movable like the target directory it copies: model.py (the template),
engines/ (the files the manifest names, hard-linked where the file system allows), version.json (what it was made
from: the manifest's sha256, and the precision it runs). The folder is assembled aside and swapped in whole;
config.pbtxt is written aside and renamed. Versions share one config, so they must agree on its manifest-derived
parts (batch range, device kind, family): another version that does not is refused, naming the fix.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from t2vtrt.build.triton.config import ServeSettings, build_config, model_name, signature
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_dir, atomic_path, sha256_file, write_json
from t2vtrt.runtime.manifest import Manifest, load_manifest

TEMPLATE = Path(__file__).parent / "templates" / "model.py"
VERSION_FILE = "version.json"


@dataclass(frozen=True)
class Written:
    """What write_repository produced."""

    model_dir: Path
    version_dir: Path
    config: Path
    name: str
    version: int


def bundled_env(prefix: str | os.PathLike = sys.prefix) -> Path:
    """Where `make serve-setup` puts the backend stub's Python environment (numpy < 2): <venv>/triton/env."""
    return Path(prefix) / "triton" / "env"


def resolve_python_env(value: str | None) -> Path | None:
    """--python-env: 'auto' = the bundled env when set up, 'none' = the server's own Python, or a virtualenv folder."""
    if value is None or value == "auto":
        env = bundled_env()
        return env if (env / "bin" / "activate").is_file() else None
    if value == "none":
        return None
    env = Path(value).resolve()
    if not (env / "bin" / "activate").is_file():
        raise T2VError(
            f"--python-env {value}: {env} has no bin/activate, so the Python backend cannot run in it; pass a "
            "virtualenv with t2v-trt[cpu] and numpy<2 installed (`make serve-setup` makes one), or 'none'"
        )
    return env


def write_repository(engines_dir: str | os.PathLike, repo: str | os.PathLike, settings: ServeSettings) -> Written:
    """Check the target (schema, hashes), then write or replace one version of its model and the model's config."""
    engines_dir, repo = Path(engines_dir), Path(repo)
    manifest = load_manifest(engines_dir)
    _check_precision(manifest, settings.precision)
    name = model_name(manifest, settings)
    if repo.exists() and not repo.is_dir():
        raise T2VError(f"{repo} is a file: pass a folder for the model repository (-o)")
    model_dir = repo / name
    if model_dir.exists() and not model_dir.is_dir():
        raise T2VError(f"{model_dir} is a file: remove it or pick another --name")
    _check_other_versions(model_dir, settings.version, signature(manifest))
    manifest_sha = sha256_file(engines_dir / "manifest.json")
    version_dir = model_dir / str(settings.version)
    try:
        with atomic_dir(version_dir) as tmp:
            _copy_target(manifest, engines_dir, tmp / "engines")
            shutil.copyfile(TEMPLATE, tmp / "model.py")
            write_json(tmp / VERSION_FILE, _version_record(manifest, engines_dir, manifest_sha, settings))
        config = model_dir / "config.pbtxt"
        with atomic_path(config) as tmp_config:
            tmp_config.write_text(build_config(manifest, replace(settings, name=name), manifest_sha))
    except OSError as exc:
        from t2vtrt.runtime.errors import os_error

        raise os_error(exc, f"writing the Triton model repository {repo}") from exc
    return Written(model_dir, version_dir, config, name, settings.version)


def _check_precision(manifest: Manifest, precision: str | None) -> None:
    """A --precision the target has built (the runtime's own one-line error otherwise)."""
    if precision is not None:
        manifest.variant("denoiser", precision)


def _check_other_versions(model_dir: Path, version: int, wanted: dict[str, Any]) -> None:
    """Refuse a version whose shared config would not fit the model's other versions."""
    if not model_dir.is_dir():
        return
    for other in sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and p.name != str(version)):
        record = other / VERSION_FILE
        try:
            theirs = json.loads(record.read_text())["config"]
        except (OSError, ValueError, KeyError):
            raise T2VError(
                f"{other} is not a version written by `t2vtrt triton-repo` (no readable {VERSION_FILE}): "
                f"remove it, or write this target under another --name"
            ) from None
        if theirs != wanted:
            diff = ", ".join(f"{k} {theirs.get(k)} vs {v}" for k, v in wanted.items() if theirs.get(k) != v)
            raise T2VError(
                f"version {other.name} of {model_dir.name} shares config.pbtxt but differs ({diff}): write "
                f"this target under another --name, or replace version {other.name} with --version {other.name}"
            )


def _copy_target(manifest: Manifest, src: Path, dst: Path) -> None:
    """The files the manifest names plus manifest.json: hard links where possible (no copy of GBs), else copies."""
    files = ["manifest.json", manifest.data["tokenizer"]["file"]]
    for component in manifest.data["components"].values():
        for variant in component["variants"].values():
            files += [variant["file"], *(extra["file"] for extra in variant.get("external_data", []))]
    for file in dict.fromkeys(files):
        target = dst / file
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / file, target)  # the build replaces files by rename, so a link keeps this version's bytes
        except OSError:
            shutil.copy2(src / file, target)


def _version_record(manifest: Manifest, engines_dir: Path, manifest_sha: str, settings: ServeSettings) -> dict[str, Any]:
    """version.json: what this version was made from and how it runs."""
    return {
        "made_from": {
            "manifest_sha256": manifest_sha,
            "engines": str(engines_dir.resolve()),
            "model": manifest.data["model"],
            "target": manifest.data["target"]["name"],
        },
        "precision": settings.precision,
        "config": signature(manifest),
        "written_by": f"t2v-trt {_version()}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _version() -> str:
    """This package's version."""
    try:
        return metadata.version("t2v-trt")
    except metadata.PackageNotFoundError:
        return "unknown"
