"""wan-tiny's torch graphs (wan_paths, the session's wan-tiny build, is in tests/conftest.py)."""

from __future__ import annotations


import pytest

from t2vtrt.build.artifacts import ArtifactPaths


@pytest.fixture(scope="session")
def wan_loaded(wan_paths: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """wan-tiny's torch graphs (the family loader) and their specs at the embedded ranges."""
    from t2vtrt.build.families import get_family
    from t2vtrt.build.models import EMBEDDED

    family = get_family("wan")
    model = family.load(wan_paths.model_dir, tmp_path_factory.mktemp("wan-work"))
    return model, family.component_specs(model.config, EMBEDDED["wan-tiny"].ranges)
