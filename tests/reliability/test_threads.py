"""One Pipeline shared by 8 threads: each call's frames, timings and engines are its own (the thread-safety contract)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.runtime.pipeline import Pipeline

PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle moving right", "a yellow star"]
THREADS = 8


def _kwargs(index: int) -> dict:
    """Call `index`'s request: different prompts, seeds and step counts, so mixed-up state would show."""
    return {"prompt": PROMPTS[index % len(PROMPTS)], "seed": index, "steps": 1 + index % 3, "frames": 2, "height": 32, "width": 32}


@pytest.fixture()
def engine_spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Watch the real sessions: how many each component opened, and any close() while a run of it was in flight."""
    import threading

    import t2vtrt.runtime.pipeline as pipeline_module
    from t2vtrt.runtime.backends import CheckedSession

    seen: dict[str, list] = {"opened": [], "closed_in_use": []}
    lock, running = threading.Lock(), {}
    real_open, real_run, real_close = pipeline_module.open_session, CheckedSession.run, CheckedSession.close

    def open_session(manifest, component, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen["opened"].append(component)
        return real_open(manifest, component, *args, **kwargs)

    def run(self, feeds):  # type: ignore[no-untyped-def]
        with lock:
            running[id(self)] = running.get(id(self), 0) + 1
        try:
            return real_run(self, feeds)
        finally:
            with lock:
                running[id(self)] -= 1

    def close(self):  # type: ignore[no-untyped-def]
        with lock:
            if running.get(id(self)):
                seen["closed_in_use"].append(self.name)
        real_close(self)

    monkeypatch.setattr(pipeline_module, "open_session", open_session)
    monkeypatch.setattr(CheckedSession, "run", run)
    monkeypatch.setattr(CheckedSession, "close", close)
    return seen


@pytest.mark.parametrize("low_vram", [False, True], ids=["resident", "low-vram"])
def test_eight_threads_share_one_pipeline(tiny_engines: Path, low_vram: bool, engine_spy: dict[str, list]) -> None:
    """Frames equal serial ones bit for bit; each call's timings count only its own engine time; no engine closed under a call."""
    serial = Pipeline.from_dir(tiny_engines)
    expected = [serial.generate(**_kwargs(i)) for i in range(THREADS)]
    shared = Pipeline.from_dir(tiny_engines, low_vram=low_vram)
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda i: shared.generate(**_kwargs(i)), range(THREADS)))
    for want, got in zip(expected, results):
        np.testing.assert_array_equal(got.frames, want.frames)
        engine = sum(got.timings.engine_s.values())
        assert 0 < engine <= got.timings.total_s  # its own engine time only: never more than the call's wall time
    assert len({id(r.timings) for r in results}) == THREADS
    assert engine_spy["closed_in_use"] == []
    if low_vram:
        assert shared.sessions == {}  # every call released what it held, and the last one out closed each engine


def test_low_vram_session_stays_open_while_another_call_uses_it(tiny_engines: Path, engine_spy: dict[str, list]) -> None:
    """A call releasing the denoiser does not close it under a call still denoising (reference counts)."""
    pipe = Pipeline.from_dir(tiny_engines, low_vram=True)
    started, other = [], []

    def slow_callback(step: int, total: int) -> None:
        if step == 1 and not started:
            started.append(True)
            other.append(pipe.generate(**_kwargs(1)))  # a whole second call runs and releases, mid-denoise of the first

    first = pipe.generate(**{**_kwargs(0), "steps": 2}, callback=slow_callback)
    assert engine_spy["opened"].count("denoiser") == 1  # the inner call's release left the outer call's engine open
    reference = Pipeline.from_dir(tiny_engines)
    np.testing.assert_array_equal(first.frames, reference.generate(**{**_kwargs(0), "steps": 2}).frames)
    np.testing.assert_array_equal(other[0].frames, reference.generate(**_kwargs(1)).frames)
    assert pipe.sessions == {}
