"""Prompt sets, budgets, capture scheduling and the capture file: small, fast checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.calibration.capture import Capture, select_steps
from t2vtrt.calibration.prompts import PROMPT_FILES, load_prompts, read_prompts
from t2vtrt.calibration.reader import crop_feeds
from t2vtrt.calibration.settings import BUDGETS_FILE, load_budget
from t2vtrt.runtime.errors import T2VError


def test_prompt_sets() -> None:
    """>= 64 distinct calibration prompts and a disjoint held-out set."""
    calibration, held_out = load_prompts("calibration"), load_prompts("eval")
    assert len(calibration) >= 64 and len(set(calibration)) == len(calibration)
    assert len(held_out) >= 8 and not set(calibration) & set(held_out)
    assert load_prompts("eval", 3) == held_out[:3]


def test_empty_prompt_file(tmp_path: Path) -> None:
    """A prompt file without prompts is a one-line error."""
    (tmp_path / "p.txt").write_text("\n  \n")
    with pytest.raises(T2VError, match="holds no prompts"):
        read_prompts(tmp_path / "p.txt")
    assert PROMPT_FILES["calibration"].is_file()


def test_budgets() -> None:
    """tiny overrides the defaults; bad keys are refused."""
    tiny, default = load_budget("tiny"), load_budget("some-checkpoint")
    assert tiny.samples < default.samples and tiny.num_bins == 2048 and default.num_quantized_bins == 128
    assert tiny.with_overrides(samples=7, seed=None).samples == 7


def test_shapes_model_calibrates_on_its_own_captions() -> None:
    """The trained shapes model's prompt files are its training captions and its held-out ones, from data.py."""
    from t2vtrt.build.shapes import data

    shapes = load_budget("shapes")
    assert load_prompts("calibration", None, shapes.prompt_file("calibration")) == data.prompt_set("train")
    held_out = load_prompts("eval", None, shapes.prompt_file("eval"))
    assert sorted(held_out) == sorted(data.prompt_set("heldout"))
    # Background-major order: any prefix of up to 18 prompts covers distinct held-out combinations.
    assert len({p.split(" on a ")[0] for p in held_out[:18]}) == 18
    assert load_budget("tiny").prompt_file("eval") == PROMPT_FILES["eval"].name


def test_tool_frames_below_two_are_refused(tmp_path: Path) -> None:
    """One frame would change which MatMuls ModelOpt quantizes: the budget says so in one line."""
    path = tmp_path / "b.json"
    default = json.loads(BUDGETS_FILE.read_text())["default"]
    path.write_text(json.dumps({"default": {**default, "tool_frames": 1}}))
    with pytest.raises(T2VError, match="tool_frames"):
        load_budget("tiny", path=path)
    assert load_budget("bench").tool_frames == 2 and load_budget("some-checkpoint").tool_frames is None


def test_crop_feeds_keeps_the_leading_entries_of_the_named_axes() -> None:
    """sample (B, C, F, h, w) loses frames and latent rows/columns; inputs without crops pass through untouched."""
    sample = np.arange(2 * 3 * 5 * 4 * 4, dtype=np.float32).reshape(2, 3, 5, 4, 4)
    context = np.ones((2, 7, 4), np.float32)
    feeds = [{"sample": sample, "encoder_hidden_states": context}]
    cropped = crop_feeds(feeds, {"sample": {2: 2, 3: 3, 4: 3}})[0]
    assert cropped["sample"].shape == (2, 3, 2, 3, 3) and np.array_equal(cropped["sample"], sample[:, :, :2, :3, :3])
    assert cropped["encoder_hidden_states"] is context
    assert crop_feeds(feeds, {"sample": {2: 9}})[0]["sample"].shape == sample.shape  # fewer frames than asked: all
    assert crop_feeds(feeds, {})[0]["sample"] is sample


def test_tool_crops_name_the_frames_and_latent_axes(tmp_path: Path) -> None:
    """The budget's tool_frames / tool_latent land on the denoiser inputs' frames / latent_height / latent_width axes."""
    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.calibration.stage import tool_crops

    paths = ArtifactPaths(tmp_path)
    paths.onnx_dir.mkdir(parents=True)
    inputs = [
        {"name": "sample", "shape": ["batch", 4, "frames", "latent_height", "latent_width"]},
        {"name": "timestep", "shape": ["batch"]},
    ]
    paths.export_info.write_text(json.dumps({"components": {"denoiser": {"inputs": inputs}}}))
    budget = load_budget("tiny").with_overrides(tool_frames=2, tool_latent=8)
    assert tool_crops(paths, budget) == {"sample": {2: 2, 3: 8, 4: 8}}
    assert tool_crops(paths, load_budget("some-checkpoint")) == {}


def test_bad_budget_file(tmp_path: Path) -> None:
    """Unknown keys name themselves."""
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"default": {"samples": 1, "bogus": 2}}))
    with pytest.raises(T2VError, match="bogus"):
        load_budget("tiny", path=path)


@pytest.mark.parametrize("prompts, steps, samples", [(16, 10, 64), (4, 10, 16), (68, 25, 128), (3, 5, 100)])
def test_select_steps_spreads_samples(prompts: int, steps: int, samples: int) -> None:
    """Exactly `samples` calls (or all), every timestep as evenly as possible, many prompts."""
    keep = select_steps(prompts, steps, samples)
    total = min(samples, prompts * steps)
    assert sum(len(k) for k in keep) == total
    per_step = np.bincount([s for k in keep for s in k], minlength=steps)
    assert per_step.max() - per_step.min() <= 1
    assert sum(bool(k) for k in keep) == min(prompts, total)


@pytest.mark.parametrize(
    "prompts, steps, samples, expected", [(1, 10, 4, [0, 3, 6, 9]), (2, 10, 8, [0, 1, 3, 4, 5, 6, 8, 9]), (1, 10, 2, [0, 9]), (3, 25, 1, [0])]
)
def test_select_steps_fewer_samples_than_steps(prompts: int, steps: int, samples: int, expected: list[int]) -> None:
    """Fewer calls than steps still span the trajectory, the last (cleanest) step included, one call per step."""
    keep = select_steps(prompts, steps, samples)
    assert sorted(s for k in keep for s in k) == expected
    assert sum(bool(k) for k in keep) == min(prompts, samples)


def test_spread_picks_calls_over_timesteps() -> None:
    """A sweep's subset spans the timesteps whatever order the capture holds them in."""
    feeds = [{"timestep": np.full((2,), t, np.float32)} for t in (901, 701, 501, 301, 801, 601, 401, 201)]
    picked = [float(f["timestep"][0]) for f in Capture(feeds).spread(3)]
    assert picked == [901, 501, 201]
    assert len(Capture(feeds).spread(20)) == 8


def _feeds(count: int) -> list[dict[str, np.ndarray]]:
    """Small fake denoiser feeds."""
    rng = np.random.default_rng(0)
    return [{"sample": rng.standard_normal((2, 4, 1, 2, 2), dtype=np.float32), "timestep": np.full((2,), i, np.float32)} for i in range(count)]


def test_capture_file_round_trip(tmp_path: Path) -> None:
    """Arrays and meta survive; the file is written atomically (no temp files left)."""
    Capture(_feeds(3), {"seed": 5}).save(tmp_path / "d.npz")
    loaded = Capture.load(tmp_path / "d.npz")
    assert loaded.meta == {"seed": 5} and len(loaded.feeds) == 3
    np.testing.assert_array_equal(loaded.feeds[2]["sample"], _feeds(3)[2]["sample"])
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]


def test_missing_empty_and_corrupt_capture(tmp_path: Path) -> None:
    """Each is one line that says what to run; an empty capture is never written."""
    with pytest.raises(T2VError, match="is missing: run `t2vtrt calibrate`"):
        Capture.load(tmp_path / "none.npz")
    with pytest.raises(T2VError, match="no samples"):
        Capture([], {}).save(tmp_path / "empty.npz")
    assert not (tmp_path / "empty.npz").exists()
    np.savez(tmp_path / "zero.npz", sample=np.zeros((0, 2, 4)))
    with pytest.raises(T2VError, match="holds no samples"):
        Capture.load(tmp_path / "zero.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(T2VError, match="not a readable .npz"):
        Capture.load(tmp_path / "bad.npz")


def test_size_tiers_and_generation_settings(tmp_path: Path) -> None:
    """A denoiser past a tier's size takes that tier's entry; the model's own entry still wins; bad values name themselves."""
    path = tmp_path / "b.json"
    default = json.loads(BUDGETS_FILE.read_text())["default"]
    tiers = [{"budget": "big", "from_denoiser_mib": 100}, {"budget": "huge", "from_denoiser_mib": 1000}]
    data = {
        "default": default,
        "size_tiers": tiers,
        "big": {"samples": 8, "frames": "min", "steps": 6},
        "huge": {"samples": 4},
        "mine": {"samples": 2},
    }
    path.write_text(json.dumps(data))
    assert load_budget("x", 99 << 20, path).samples == default["samples"]
    big = load_budget("x", 100 << 20, path)
    assert big.samples == 8 and big.generation() == {"frames": "min", "steps": 6}
    assert load_budget("x", 5000 << 20, path).samples == 4 and load_budget("mine", 5000 << 20, path).samples == 2
    assert load_budget("x", 0, path).generation() == {}
    for key, bad in (("steps", "min"), ("frames", 0), ("height", "max")):
        path.write_text(json.dumps({**data, "mine": {key: bad}}))
        with pytest.raises(T2VError, match=f"{key} for 'mine'"):
            load_budget("mine", 0, path)


def test_shipped_large_tier_calibrates_at_the_profile_minimum() -> None:
    """The shipped budgets: a real-size denoiser (GiBs of weights) gets the reduced tier, embedded models never."""
    data = json.loads(BUDGETS_FILE.read_text())
    smallest = min(t["from_denoiser_mib"] for t in data["size_tiers"])
    large = load_budget("some-checkpoint", smallest << 20)
    assert large.generation()["frames"] == "min" and large.samples < load_budget("some-checkpoint").samples
    assert load_budget("shapes", smallest << 20).samples == load_budget("shapes").samples


def test_named_budgets_and_the_plan_record() -> None:
    """--budget NAME takes that entry over the defaults; a plan's asdict() record round-trips; unknown names are listed."""
    from dataclasses import asdict

    from t2vtrt.calibration.settings import budget_from_json, budget_names, load_named_budget

    large = load_named_budget("large")
    assert large == load_budget("large") and "large" in budget_names() and "size_tiers" not in budget_names()
    assert budget_from_json(json.loads(json.dumps(asdict(large)))) == large
    with pytest.raises(T2VError, match="choose one of .*large"):
        load_named_budget("huge")
