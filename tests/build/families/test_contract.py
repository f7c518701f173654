"""The family contract: every registered family implements it; a module that does not is refused in one line."""

from __future__ import annotations

import types

import pytest

from t2vtrt.build.families import FAMILIES, get_family
from t2vtrt.build.families.contract import CONSTANTS, FUNCTIONS, check_family
from t2vtrt.build.families.spec import ComponentSpec, ShapeRanges
from t2vtrt.runtime.errors import T2VError


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_registered_family_implements_the_contract(name: str) -> None:
    """Every member is there, NAME is its key, and its specs come from a config dict alone."""
    family = get_family(name)
    assert family.NAME == name
    ranges = family.default_ranges()
    assert isinstance(ranges, ShapeRanges) and family.defaults().steps >= 1


def test_unet3d_specs_need_only_export_config() -> None:
    """component_specs reads export.json's config: the plan re-derives shapes for a GPU profile without loading the model."""
    config = {
        "hidden_size": 32,
        "vocab_size": 100,
        "latent_channels": 4,
        "out_channels": 4,
        "vae_out_channels": 3,
        "spatial_factor": 8,
        "seq_len": 77,
        "num_train_timesteps": 1000,
    }
    specs = get_family("unet3d").component_specs(config, ShapeRanges(frames=(8, 16, 24), height=(256, 256, 576), width=(256, 320, 576)))
    assert set(specs) == {"text_encoder", "denoiser", "vae_decoder"} and all(isinstance(s, ComponentSpec) for s in specs.values())
    den = specs["denoiser"]
    assert den.axes["latent_height"] == (32, 32, 72) and den.axes["latent_width"] == (32, 40, 72)
    assert den.inputs[1].value_range == (0, 999)


def _module(**members: object) -> types.ModuleType:
    module = types.ModuleType("t2vtrt.build.families.fake")
    for key, value in members.items():
        setattr(module, key, value)
    return module


def test_a_module_missing_members_is_refused_naming_them() -> None:
    """A half-written family names exactly what it lacks and where the contract is."""
    complete = {**{c: None for c in CONSTANTS}, **{f: (lambda *a: None) for f in FUNCTIONS}, "NAME": "fake", "EXPORTER": "dynamo"}
    check_family(_module(**complete), "fake")
    partial = {k: v for k, v in complete.items() if k not in ("LAYER_KINDS", "component_specs")}
    with pytest.raises(T2VError, match=r"lacks LAYER_KINDS, component_specs: implement build/families/contract.py") as raised:
        check_family(_module(**partial), "fake")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("changes", "words"), [({"NAME": "other"}, "calls itself 'other'"), ({"EXPORTER": "tracing"}, "EXPORTER 'tracing'")])
def test_a_misnamed_or_unknown_exporter_family_is_refused(changes: dict, words: str) -> None:
    members = {**{c: None for c in CONSTANTS}, **{f: (lambda *a: None) for f in FUNCTIONS}, "NAME": "fake", "EXPORTER": "dynamo", **changes}
    with pytest.raises(T2VError, match=words):
        check_family(_module(**members), "fake")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_surgery_lists_registered_passes_per_component(name: str) -> None:
    """SURGERY covers exactly the family's COMPONENTS with passes the registry knows; the surgery stage reads it."""
    from t2vtrt.build.surgery.registry import PASSES, pipelines_for

    family = get_family(name)
    assert set(family.SURGERY) == set(family.COMPONENTS)
    assert all(step in PASSES for steps in family.SURGERY.values() for step in steps)
    assert pipelines_for(name) == {c: list(steps) for c, steps in family.SURGERY.items()}


def test_unet3d_surgery_is_the_registry_default() -> None:
    """Moving the pass lists into the family changed nothing for unet3d."""
    from t2vtrt.build.surgery.registry import DEFAULT_PIPELINE, PIPELINES

    assert PIPELINES == {c: list(s) for c, s in get_family("unet3d").SURGERY.items()}
    assert PIPELINES["text_encoder"] == PIPELINES["vae_decoder"] == DEFAULT_PIPELINE
    assert PIPELINES["denoiser"] == DEFAULT_PIPELINE[:-1] + ["split_geglu", "fold_scale_into_weights", "cleanup"]


def test_gpu_profile_without_a_family_table_uses_the_family_default() -> None:
    """A profile's [shapes.<family>] wins; without one the family's gpu_ranges for that VRAM (unet3d: none)."""
    from dataclasses import replace

    from t2vtrt.build.gpus.profiles import load_profile

    profile = load_profile("rtx3060")
    assert profile.ranges_for("unet3d") is profile.shapes["unet3d"]
    assert "wan" not in profile.shapes and profile.ranges_for("wan") == get_family("wan").gpu_ranges(profile.vram_gb)
    bigger = get_family("wan").gpu_ranges(2 * profile.vram_gb)
    assert bigger is not None and bigger.height[2] * bigger.width[2] >= profile.ranges_for("wan").height[2] * profile.ranges_for("wan").width[2]
    assert replace(profile, shapes={}).ranges_for("unet3d") is None
