"""The numpy samplers against diffusers' schedulers, step by step, to float32 rounding."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from t2vtrt.runtime.errors import T2VError  # noqa: E402
from t2vtrt.runtime.schedulers import SAMPLERS, make_scheduler  # noqa: E402

# diffusers' own DPM set_timesteps trips a numpy 2 DeprecationWarning; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# float32 rounding, not a looser algorithm: torch's kernels round differently per CPU (1e-6 held on the
# earlier machines; an AVX2-only AMD Zen 3 gave up to 4.7e-6 at t=999 of DDPM's schedule, where dividing by
# sqrt(alpha_bar) ~ 6e-3 magnifies one rounding ~150x). A DDIM step taken one timestep off (25 steps, modelscope
# config) is off by >= 1.3e-4, still 13x this bound.
RTOL = 1e-5
SHAPE = (1, 4, 2, 6, 6)  # (batch, channels, frames, height, width), kept tiny: this is about arithmetic
STEP_COUNTS = [1, 2, 7, 25, 50]
SPACINGS = ["leading", "trailing", "linspace"]

# damo-vilab/text-to-video-ms-1.7b scheduler_config.json
MODELSCOPE = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.15.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
DDPM_DEFAULT: dict[str, Any] = {}  # diffusers' defaults: linear 1e-4..0.02, clip_sample, set_alpha_to_one
COSINE = {"beta_schedule": "squaredcos_cap_v2", "clip_sample": False}
CONFIGS = {"modelscope": MODELSCOPE, "ddpm": DDPM_DEFAULT, "cosine": COSINE}


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """Max abs difference relative to the reference's max abs."""
    return float(np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def compare(ours: Any, ref: Any, steps: int, seed: int = 0, noises: bool = False) -> float:
    """Step both schedulers on shared random inputs; assert equal timesteps and every step within RTOL."""
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy().astype(np.float32))
    if len(ref.timesteps) > 1 and ref.timesteps[0] == ref.timesteps[1]:
        # diffusers would place its first step at the repeat and run off the end; start it at 0 as we do.
        ref.set_begin_index(0)
    assert ours.timesteps.dtype == np.float32
    rng = np.random.default_rng(seed)
    sample = rng.standard_normal(SHAPE, dtype=np.float32)
    worst = 0.0
    for t_ours, t_ref in zip(ours.timesteps, ref.timesteps):
        model_output = rng.standard_normal(SHAPE, dtype=np.float32)
        extra = {"variance_noise": torch.from_numpy(rng.standard_normal(SHAPE, dtype=np.float32))} if noises else {}
        expected = ref.step(torch.from_numpy(model_output), t_ref, torch.from_numpy(sample), **extra).prev_sample
        expected = expected.numpy()
        noise = extra["variance_noise"].numpy() if noises else None
        got = ours.step(model_output, t_ours, sample, noise=noise)
        assert got.dtype == np.float32 and got.shape == SHAPE
        err = rel_err(got, expected)
        assert err <= RTOL, f"t={t_ours}: relative error {err:.3g}"
        worst = max(worst, err)
        # Both continue from the reference sample, so each step's error is measured alone.
        sample = expected
    return worst


def pair(name: str, ref_cls: type, config: dict, prediction_type: str | None = None, **options: Any) -> tuple:
    """(our scheduler via make_scheduler, diffusers' via from_config) for one config."""
    ref_options = dict(options)
    if prediction_type is not None:
        ref_options["prediction_type"] = prediction_type
    if name == "dpm++karras":
        ref_options["use_karras_sigmas"] = True
    return make_scheduler(name, config, prediction_type, **options), ref_cls.from_config(config, **ref_options)


# --- DDIM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_ddim_matches_diffusers(config_name: str, spacing: str, steps: int, prediction_type: str) -> None:
    config = {**CONFIGS[config_name], "timestep_spacing": spacing}
    ours, ref = pair("ddim", diffusers.DDIMScheduler, config, prediction_type)
    compare(ours, ref, steps)


@pytest.mark.parametrize(
    "options",
    [
        {"prediction_type": "sample"},
        {"clip_sample": True, "clip_sample_range": 0.5},
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        {"num_train_timesteps": 500, "timestep_spacing": "trailing"},
        {"trained_betas": np.linspace(1e-4, 0.03, 1000).tolist()},
    ],
    ids=["sample", "clip-range", "zero-snr", "500-train-steps", "trained-betas"],
)
def test_ddim_options_match_diffusers(options: dict) -> None:
    config = {**MODELSCOPE, **options}
    ours, ref = pair("ddim", diffusers.DDIMScheduler, config)
    compare(ours, ref, 25)


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_ddim_eta_with_given_noise_matches_diffusers(eta: float) -> None:
    ours, ref = make_scheduler("ddim", MODELSCOPE, eta=eta), diffusers.DDIMScheduler.from_config(MODELSCOPE)
    ref_step = ref.step
    ref.step = lambda *args, **kwargs: ref_step(*args, eta=eta, **kwargs)
    compare(ours, ref, 7, noises=True)


def test_ddim_eta_draws_from_generator_reproducibly() -> None:
    runs = []
    for _ in range(2):
        scheduler = make_scheduler("ddim", MODELSCOPE, eta=1.0, generator=np.random.default_rng(7))
        scheduler.set_timesteps(3)
        sample = np.ones(SHAPE, dtype=np.float32)
        for t in scheduler.timesteps:
            sample = scheduler.step(np.zeros(SHAPE, dtype=np.float32), t, sample)
        runs.append(sample)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_ddim_thresholding_is_refused() -> None:
    with pytest.raises(ValueError, match="thresholding"):
        make_scheduler("ddim", {**MODELSCOPE, "thresholding": True})


def test_ddim_add_noise_matches_diffusers() -> None:
    ours, ref = pair("ddim", diffusers.DDIMScheduler, MODELSCOPE)
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((3, *SHAPE[1:]), dtype=np.float32)
    noise = rng.standard_normal(x0.shape, dtype=np.float32)
    t = np.array([1, 500, 999])
    expected = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
    assert rel_err(ours.add_noise(x0, noise, t), expected) <= RTOL


# --- DPM-Solver++ 2M ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dpm++", "dpm++karras"])
@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_dpm_matches_diffusers(config_name: str, spacing: str, steps: int, name: str) -> None:
    config = {**CONFIGS[config_name], "timestep_spacing": spacing}
    ours, ref = pair(name, diffusers.DPMSolverMultistepScheduler, config)
    compare(ours, ref, steps)


@pytest.mark.parametrize("name", ["dpm++", "dpm++karras"])
@pytest.mark.parametrize("steps", [7, 25])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_dpm_prediction_and_solver_types_match_diffusers(prediction_type: str, solver_type: str, steps: int, name: str) -> None:
    config = {**MODELSCOPE, "solver_type": solver_type}
    ours, ref = pair(name, diffusers.DPMSolverMultistepScheduler, config, prediction_type)
    compare(ours, ref, steps)


@pytest.mark.parametrize(
    "options",
    [
        {"final_sigmas_type": "sigma_min"},
        {"final_sigmas_type": "sigma_min", "lower_order_final": False},
        {"euler_at_final": True, "final_sigmas_type": "sigma_min"},
        {"solver_order": 1},
        {"lambda_min_clipped": -5.1},
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
    ],
    ids=["sigma-min", "sigma-min-no-lower-final", "euler-at-final", "order-1", "lambda-clip", "zero-snr"],
)
@pytest.mark.parametrize("steps", [7, 25])
def test_dpm_options_match_diffusers(options: dict, steps: int) -> None:
    config = {**MODELSCOPE, **options}
    ours, ref = pair("dpm++", diffusers.DPMSolverMultistepScheduler, config)
    compare(ours, ref, steps)


def test_dpm_set_timesteps_resets_history() -> None:
    first, ref = pair("dpm++", diffusers.DPMSolverMultistepScheduler, MODELSCOPE)
    compare(first, ref, 7, seed=1)
    again = diffusers.DPMSolverMultistepScheduler.from_config(MODELSCOPE)
    compare(first, again, 7, seed=2)


@pytest.mark.parametrize(
    "options",
    [
        {"thresholding": True},
        {"algorithm_type": "sde-dpmsolver++"},
        {"solver_order": 3},
        {"use_flow_sigmas": True},
        {"prediction_type": "flow_prediction"},
    ],
)
def test_dpm_unsupported_options_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        make_scheduler("dpm++", {**MODELSCOPE, **options})


def assert_add_noise_matches(ours: Any, ref: Any) -> None:
    """add_noise at two of 20 timesteps (one per batch item) against diffusers'."""
    ours.set_timesteps(20)
    ref.set_timesteps(20)
    rng = np.random.default_rng(4)
    x0 = rng.standard_normal((2, *SHAPE[1:]), dtype=np.float32)
    noise = rng.standard_normal(x0.shape, dtype=np.float32)
    t = ref.timesteps[[3, 11]]
    expected = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), t).numpy()
    assert rel_err(ours.add_noise(x0, noise, t.numpy()), expected) <= RTOL


def test_dpm_add_noise_matches_diffusers() -> None:
    assert_add_noise_matches(*pair("dpm++karras", diffusers.DPMSolverMultistepScheduler, MODELSCOPE))


# --- flow-matching Euler ------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_flow_euler_matches_diffusers(shift: float, steps: int) -> None:
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": shift}
    ours, ref = pair("flow-euler", diffusers.FlowMatchEulerDiscreteScheduler, config)
    compare(ours, ref, steps)


def test_flow_euler_other_train_length_matches_diffusers() -> None:
    config = {"num_train_timesteps": 500, "shift": 3.0}
    ours, ref = pair("flow-euler", diffusers.FlowMatchEulerDiscreteScheduler, config)
    compare(ours, ref, 25)


def test_flow_euler_reads_flow_shift_of_unipc_style_configs() -> None:
    # Wan's own config is a UniPC one that names the shift flow_shift.
    wan = {
        "_class_name": "UniPCMultistepScheduler",
        "flow_shift": 5.0,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
    }
    ours = make_scheduler("flow-euler", wan)
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    compare(ours, ref, 7)


def test_flow_euler_scale_noise_matches_diffusers() -> None:
    ours, ref = pair("flow-euler", diffusers.FlowMatchEulerDiscreteScheduler, {"shift": 3.0})
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal(SHAPE, dtype=np.float32)
    noise = rng.standard_normal(SHAPE, dtype=np.float32)
    t = ref.timesteps[4:5]
    expected = ref.scale_noise(torch.from_numpy(x0), t, torch.from_numpy(noise)).numpy()
    assert rel_err(ours.scale_noise(x0, t.numpy()[0], noise), expected) <= RTOL


@pytest.mark.parametrize("options", [{"use_dynamic_shifting": True}, {"prediction_type": "epsilon"}, {"stochastic_sampling": True}])
def test_flow_euler_unsupported_options_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        make_scheduler("flow-euler", {"shift": 3.0, **options})


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("flow_shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize(
    "options", [{}, {"solver_order": 1}, {"solver_type": "heun"}, {"final_sigmas_type": "sigma_min"}], ids=["2m", "order-1", "heun", "sigma-min"]
)
def test_dpm_flow_sigmas_match_diffusers(options: dict, flow_shift: float, steps: int) -> None:
    """DPM-Solver++ over flow sigmas (a flow-matching model such as Wan's), as diffusers offers it."""
    config = {"use_flow_sigmas": True, "flow_shift": flow_shift, "prediction_type": "flow_prediction", **options}
    ours, ref = pair("dpm++", diffusers.DPMSolverMultistepScheduler, config)
    compare(ours, ref, steps)


@pytest.mark.parametrize(("name", "prediction_type"), [("dpm++", "epsilon"), ("dpm++karras", "flow_prediction")])
def test_dpm_flow_sigmas_refuse_what_does_not_fit(name: str, prediction_type: str) -> None:
    with pytest.raises(ValueError):
        make_scheduler(name, {"use_flow_sigmas": True, "flow_shift": 5.0, "prediction_type": prediction_type})


# --- UniPC (Wan's default sampler with flow sigmas; the VP schedule for UNet3D) -----------------------

# Wan2.2-TI2V-5B scheduler/scheduler_config.json (Wan2.1 T2V uses flow_shift 3.0 at 480p)
WAN = {
    "_class_name": "UniPCMultistepScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 5.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("solver_order", [1, 2, 3])
@pytest.mark.parametrize("flow_shift", [1.0, 3.0, 5.0])
def test_unipc_flow_matches_diffusers(flow_shift: float, solver_order: int, steps: int) -> None:
    config = {**WAN, "flow_shift": flow_shift, "solver_order": solver_order}
    ours, ref = pair("unipc", diffusers.UniPCMultistepScheduler, config)
    compare(ours, ref, steps)


@pytest.mark.parametrize(
    "options",
    [
        {"solver_type": "bh1", "final_sigmas_type": "sigma_min"},
        {"final_sigmas_type": "sigma_min"},
        {"final_sigmas_type": "sigma_min", "lower_order_final": False},
        {"solver_order": 3, "final_sigmas_type": "sigma_min"},
        {"disable_corrector": [0, 3]},
        {"num_train_timesteps": 500},
    ],
    ids=["bh1", "sigma-min", "sigma-min-no-lower-final", "order-3-sigma-min", "no-corrector-0-3", "train-500"],
)
@pytest.mark.parametrize("steps", [7, 25])
def test_unipc_flow_options_match_diffusers(options: dict, steps: int) -> None:
    ours, ref = pair("unipc", diffusers.UniPCMultistepScheduler, {**WAN, **options})
    compare(ours, ref, steps)


def test_unipc_bh1_reaches_x0_where_diffusers_gives_nan() -> None:
    """bh1 to a zero final sigma: B(h) = -inf, and diffusers multiplies it by its empty correction term (0)."""
    ours, ref = pair("unipc", diffusers.UniPCMultistepScheduler, {**WAN, "solver_type": "bh1"})
    ours.set_timesteps(7)
    ref.set_timesteps(7)
    rng = np.random.default_rng(3)
    sample = rng.standard_normal(SHAPE, dtype=np.float32)
    for step, (t_ours, t_ref) in enumerate(zip(ours.timesteps, ref.timesteps)):
        output = rng.standard_normal(SHAPE, dtype=np.float32)
        expected = ref.step(torch.from_numpy(output), t_ref, torch.from_numpy(sample)).prev_sample.numpy()
        got = ours.step(output, t_ours, sample)
        if step < 6:
            assert rel_err(got, expected) <= RTOL
            sample = expected
    assert np.isnan(expected).all()
    # The last step lands on the data prediction of the corrected sample, as bh2 does.
    assert np.isfinite(got).all()


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_unipc_vp_matches_diffusers(config_name: str, spacing: str, steps: int) -> None:
    config = {**CONFIGS[config_name], "timestep_spacing": spacing}
    ours, ref = pair("unipc", diffusers.UniPCMultistepScheduler, config)
    compare(ours, ref, steps)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
@pytest.mark.parametrize("solver_order", [2, 3])
def test_unipc_vp_prediction_and_solver_types_match_diffusers(prediction_type: str, solver_type: str, solver_order: int) -> None:
    config = {**MODELSCOPE, "solver_type": solver_type, "solver_order": solver_order, "final_sigmas_type": "sigma_min"}
    ours, ref = pair("unipc", diffusers.UniPCMultistepScheduler, config, prediction_type)
    compare(ours, ref, 25)


def test_unipc_set_timesteps_resets_history() -> None:
    first, ref = pair("unipc", diffusers.UniPCMultistepScheduler, WAN)
    compare(first, ref, 7, seed=1)
    compare(first, diffusers.UniPCMultistepScheduler.from_config(WAN), 7, seed=2)


def test_unipc_add_noise_matches_diffusers() -> None:
    assert_add_noise_matches(*pair("unipc", diffusers.UniPCMultistepScheduler, WAN))


@pytest.mark.parametrize(
    "options",
    [
        {"predict_x0": False},
        {"thresholding": True},
        {"use_karras_sigmas": True},
        {"use_dynamic_shifting": True},
        {"solver_order": 4},
        {"solver_type": "midpoint"},
        {"prediction_type": "epsilon"},
    ],
)
def test_unipc_unsupported_options_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        make_scheduler("unipc", {**WAN, **options})


# --- registry and import hygiene ----------------------------------------------------------------------


def test_unknown_sampler_is_a_one_line_t2v_error() -> None:
    with pytest.raises(T2VError) as raised:
        make_scheduler("nope", MODELSCOPE)
    message = str(raised.value)
    assert "\n" not in message and "nope" in message
    assert all(name in message for name in SAMPLERS)


@pytest.mark.parametrize(
    ("name", "kind", "karras"),
    [
        ("ddim", "DDIMScheduler", None),
        ("dpm++", "DPMSolverMultistepScheduler", False),
        ("dpm++karras", "DPMSolverMultistepScheduler", True),
        ("flow-euler", "FlowMatchEulerScheduler", None),
        ("unipc", "UniPCMultistepScheduler", None),
    ],
)
def test_each_name_builds_the_sampler_it_promises(name: str, kind: str, karras: bool | None) -> None:
    """The registry wires each documented name to its solver (a swapped or half-wired entry fails), and it samples."""
    scheduler = make_scheduler(name, MODELSCOPE, "flow" if name == "flow-euler" else None)
    assert type(scheduler).__name__ == kind
    if karras is not None:
        assert scheduler.use_karras_sigmas is karras
    scheduler.set_timesteps(5)
    rng = np.random.default_rng(0)
    sample = rng.standard_normal(SHAPE).astype(np.float32)
    for t in scheduler.timesteps:
        sample = scheduler.step(rng.standard_normal(SHAPE).astype(np.float32), t, sample)
    assert sample.shape == SHAPE and np.isfinite(sample).all()


def test_prediction_type_argument_overrides_config() -> None:
    assert make_scheduler("ddim", MODELSCOPE, "v_prediction").prediction_type == "v_prediction"
    assert make_scheduler("ddim", MODELSCOPE).prediction_type == "epsilon"


def test_schedulers_import_without_torch_or_diffusers() -> None:
    code = textwrap.dedent(
        """
        import sys
        BLOCKED = {"torch", "diffusers", "transformers"}

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import numpy as np
        from t2vtrt.runtime.schedulers import SAMPLERS, make_scheduler

        for name in SAMPLERS:
            scheduler = make_scheduler(name, {"shift": 3.0} if name == "flow-euler" else {})
            scheduler.set_timesteps(3)
            x = np.zeros((1, 2), np.float32)
            for t in scheduler.timesteps:
                x = scheduler.step(np.ones_like(x), t, scheduler.scale_model_input(x, t))
            assert x.dtype == np.float32 and np.isfinite(x).all(), name
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
