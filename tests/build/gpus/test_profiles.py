"""GPU profiles are data: every shipped file validates, and each kind of mistake is one line naming file and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import synthetic_artifacts as synthetic  # tests/support (pytest pythonpath)

from t2vtrt.build.gpus.profiles import PROFILES_DIR, list_profiles, load_profile, parse_profile, profile_names, profile_table
from t2vtrt.runtime.errors import T2VError


ISSUE_GPUS = ("rtx3060", "rtx3090", "rtx4060", "rtx4090", "l4", "t4", "a100-40gb", "a100-80gb", "h100")


def _device_name(pattern: str) -> str:
    """A device name the profile's own NVML pattern accepts ("RTX 3060" -> "NVIDIA GeForce RTX 3060")."""
    return "NVIDIA GeForce " + pattern.replace("\\b", "").replace("\\", "")


def test_each_profile_is_what_detection_picks_for_its_gpu() -> None:
    """A GPU reporting a profile's name, capability and memory resolves to that very profile (no shadowing, no overlap)."""
    from t2vtrt.build.gpus.detect import GpuInfo, match_profile

    profiles = list_profiles()
    assert set(ISSUE_GPUS) <= {p.name for p in profiles}
    for profile in profiles:
        for pattern in profile.match:
            # NVML reports a little under the nominal size (a 12 GB card shows ~11.8 GiB).
            gpu = GpuInfo(0, _device_name(pattern), profile.compute_capability, profile.vram_gb * 0.98)
            assert match_profile(gpu, profiles).name == profile.name, (profile.name, pattern)
        assert profile.sm == "sm" + profile.compute_capability.replace(".", "")


def test_shipped_profiles_are_complete() -> None:
    """Each has unet3d shapes, int8+fp16 precisions, fp8 only on sm89+, and a workspace limit."""
    for profile in list_profiles():
        ranges = profile.ranges_for("unet3d")
        assert ranges is not None and ranges.frames[0] <= ranges.frames[1] <= ranges.frames[2]
        assert {"fp32", "fp16", "int8"} <= set(profile.precisions)
        assert ("fp8" in profile.precisions) == (profile.capability >= (8, 9))
        assert profile.memory_pool_limits["workspace_mib"] > 0
        assert profile.match, f"{profile.name} has no NVML name pattern"


def test_underscore_files_are_not_profiles() -> None:
    """_tolerances.toml sits beside the profiles but is not one."""
    assert (PROFILES_DIR / "_tolerances.toml").is_file()
    assert "_tolerances" not in profile_names()
    with pytest.raises(T2VError, match="unknown GPU profile"):
        load_profile("_tolerances")


def test_unknown_profile_lists_known_names() -> None:
    """A typo gets the list of names and where to add a file."""
    with pytest.raises(T2VError, match=r"unknown GPU profile 'rtx3070'.*rtx3060.*add .*rtx3070\.toml"):
        load_profile("rtx3070")


def test_a_new_file_is_a_new_gpu(tmp_path: Path) -> None:
    """Adding a GPU is adding a file (loaded by name from its folder, or by path)."""
    path = synthetic.write_profile(tmp_path, "a10", 24)
    assert load_profile("a10", folder=tmp_path).vram_gb == 24
    assert load_profile(str(path)).name == "a10"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('compute_capability = "8.6"\nvram_gb = = 12\n', r"is not valid TOML .*line 2"),
        ('compute_capability = "8.6"\nvram_gb = 12\nvram = 12\n[shapes.unet3d]\n', r"unknown field 'vram'"),
        ("vram_gb = 12\n[shapes.unet3d]\n", r"missing required field 'compute_capability' \(e\.g\. compute_capability = \"8\.6\"\)"),
        ('compute_capability = "8.6"\n[shapes.unet3d]\n', r"missing required field 'vram_gb'"),
        ('compute_capability = "86"\nvram_gb = 12\n[shapes.unet3d]\n', r"compute_capability must look like \"8\.6\""),
        ('compute_capability = "8.6"\nvram_gb = "12"\n[shapes.unet3d]\n', r"field 'vram_gb' must be a number"),
        ('compute_capability = "7.5"\nvram_gb = 16\nprecisions = ["fp32", "fp8"]\n[shapes.unet3d]\n', r"'fp8' needs compute capability 8\.9\+"),
        ('compute_capability = "8.6"\nvram_gb = 12\nprecisions = ["fp32", "int4"]\n[shapes.unet3d]\n', r"unknown precision 'int4'"),
        (
            'compute_capability = "7.5"\nvram_gb = 16\nhardware_compatibility = "ampere_plus"\n[shapes.unet3d]\n',
            r"'ampere_plus' needs compute capability 8\.0\+",
        ),
        ('compute_capability = "8.6"\nvram_gb = 12\n[memory_pool_limits]\nworkspace = 1\n[shapes.unet3d]\n', r"unknown memory pool 'workspace'"),
        ('compute_capability = "8.6"\nvram_gb = 12\n[shapes.unet3D]\n', r"\[shapes\.unet3D\] names an unknown model family"),
        ('compute_capability = "8.6"\nvram_gb = 12\n[shapes.unet3d]\nbatch = [1, 1, 2]\n', r"missing shapes\.unet3d\.frames"),
        (
            'compute_capability = "8.6"\nvram_gb = 12\n[shapes.unet3d]\nbatch = [2, 1, 2]\nframes = [1, 1, 1]\n'
            "height = [8, 8, 8]\nwidth = [8, 8, 8]\n",
            r"shapes\.unet3d\.batch must be \[min, opt, max\]",
        ),
        ('compute_capability = "8.6"\nvram_gb = 12\n[shapes]\n', r"\[shapes\] needs at least one family table"),
    ],
    ids=[
        "bad-toml",
        "unknown-field",
        "missing-capability",
        "missing-vram",
        "bad-capability",
        "wrong-type",
        "fp8-on-turing",
        "unknown-precision",
        "ampere-plus-on-turing",
        "unknown-pool",
        "unknown-family",
        "missing-axis",
        "bad-range",
        "no-family",
    ],
)
def test_invalid_profiles_fail_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    """Each mistake: one line naming the file, the problem and the fix."""
    path = tmp_path / "broken.toml"
    path.write_text(content)
    with pytest.raises(T2VError, match=message) as info:
        parse_profile(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    assert "fix" in text


def test_profile_table_lists_every_profile() -> None:
    """`t2vtrt gpus`: a header and one line per profile, the detected one starred."""
    lines = profile_table(list_profiles(), detected="rtx3060")
    assert len(lines) == len(profile_names()) + 1
    starred = [line for line in lines if line.startswith("*")]
    assert len(starred) == 1 and "rtx3060" in starred[0] and "sm86" in starred[0] and "12 GiB" in starred[0]
