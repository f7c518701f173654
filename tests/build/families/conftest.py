"""wan-tiny built once per session through the real stages: export, surgery, the cpu target."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2vtrt.build.artifacts import ArtifactPaths


@pytest.fixture(scope="session")
def wan_paths(artifacts_root: Path) -> ArtifactPaths:
    """wan-tiny exported (the dynamo exporter), patched and built for the cpu target."""
    from t2vtrt.build.engines.cpu import build_cpu_target
    from t2vtrt.build.export import run_export
    from t2vtrt.build.surgery.stage import run_surgery_stage

    run_export("wan-tiny", artifacts_root)
    paths = ArtifactPaths(artifacts_root / "wan-tiny")
    run_surgery_stage(paths)
    build_cpu_target(paths)
    return paths


@pytest.fixture(scope="session")
def wan_loaded(wan_paths: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """wan-tiny's torch graphs (the family loader) and their specs at the embedded ranges."""
    from t2vtrt.build.families import get_family
    from t2vtrt.build.models import EMBEDDED

    family = get_family("wan")
    model = family.load(wan_paths.model_dir, tmp_path_factory.mktemp("wan-work"))
    return model, family.component_specs(model.config, EMBEDDED["wan-tiny"].ranges)
