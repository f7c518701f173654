"""The generated repository on a real `tritonserver` on loopback (the binary `make serve-setup` installs).

One server for the module, over the tiny model's cpu target written as versions 1 and 2, started on free loopback
ports and stopped by the fixture (also when a test fails). Every client call has a network timeout and every
loop a count; pytest-timeout bounds each test.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from t2vtrt.build.triton.client import generate, make_inputs
from t2vtrt.build.triton.config import ServeSettings
from t2vtrt.build.triton.repository import resolve_python_env, write_repository
from t2vtrt.build.triton.server import LocalServer, find_server
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.pipeline import Pipeline

http = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed: `make serve-setup` (the serve extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "tiny"
SMALL = {"steps": 4, "frames": 4, "height": 32, "width": 32}
pytestmark = pytest.mark.timeout(300)


class Served:
    """The running server and what the tests need beside it."""

    def __init__(self, server: LocalServer, engines: Path) -> None:
        self.server, self.engines = server, engines
        self.clients: list[Any] = []

    def client(self) -> Any:
        """A new HTTP client (one per thread: tritonclient's are not shared across threads)."""
        self.clients.append(http.InferenceServerClient(self.server.http_url, connection_timeout=30, network_timeout=120))
        return self.clients[-1]

    def close(self) -> None:
        """Close every connection: an open keep-alive one holds the server's shutdown until its exit timeout."""
        for client in self.clients:
            client.close()

    def stats(self, version: str = "1") -> dict[str, Any]:
        """One version's statistics (a request without a version goes to the highest, 2)."""
        return self.client().get_inference_statistics(MODEL, version)["model_stats"][0]


@pytest.fixture(scope="module")
def served(tiny_engines: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """tritonserver over versions 1 and 2 of the tiny model; skipped with the reason when there is no server to run."""
    try:
        find_server()
    except T2VError as exc:
        pytest.skip(f"no tritonserver to test against: {exc}")
    env = resolve_python_env("auto")
    if env is None:
        pytest.skip("the backend stub's Python env (numpy<2) is not set up: run `make serve-setup`")
    root = tmp_path_factory.mktemp("triton")
    for version in (1, 2):
        write_repository(tiny_engines, root / "repo", ServeSettings(version=version, python_env=env))
    server = LocalServer(root / "repo", root / "server.log", cache_mb=64)
    server.start(timeout_s=180)
    served = Served(server, tiny_engines)
    try:
        yield served
    finally:
        served.close()
        assert server.stop() == 0, server.log_tail()


@pytest.fixture(scope="module")
def pipe(tiny_engines: Path) -> Pipeline:
    """The in-process reference."""
    return Pipeline.from_dir(tiny_engines)


def test_frames_are_byte_identical_to_pipeline(served: Served, pipe: Pipeline) -> None:
    """The served video equals Pipeline.generate's for the same arguments; absent inputs mean the manifest's defaults."""
    client = served.client()
    args = {"negative_prompt": "blurry", "seed": 7, "sampler": "dpm++", "guidance": 6.0, **SMALL}
    got = generate(client, MODEL, "a red circle moving left", **args)
    assert got.video.dtype == np.uint8 and got.video.shape == (4, 32, 32, 3)
    assert np.array_equal(got.video, pipe.generate("a red circle moving left", **args).frames)
    assert got.timings["batch"] == 1 and got.timings["total_s"] > 0 and got.warnings == []
    default = generate(client, MODEL, "a blue square moving up")
    assert np.array_equal(default.video, pipe.generate("a blue square moving up").frames)
    long_prompt = " ".join(["a red circle"] * 40)
    assert "dropped" in generate(client, MODEL, long_prompt, **SMALL).warnings[0]


def test_eight_concurrent_clients_are_uncrossed_and_batched(served: Served, pipe: Pipeline) -> None:
    """8 clients at once: each gets its own video (equal to its lone Pipeline call), and Triton ran batches of > 1."""
    prompts = [
        f"a {c} {s} moving {d}"
        for c, s, d in zip(["red", "blue", "green", "yellow"] * 2, ["circle", "square"] * 4, ["left", "up", "right", "down"] * 2)
    ]
    before = served.stats()
    results: dict[int, Any] = {}
    barrier = threading.Barrier(8, timeout=60)

    def client(index: int) -> None:
        connection = served.client()
        barrier.wait()
        try:
            results[index] = generate(connection, MODEL, prompts[index], version="1", seed=100 + index, **SMALL).video
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == list(range(8)), results
    expected = [pipe.generate(prompts[i], seed=100 + i, **SMALL).frames for i in range(8)]
    for index in range(8):
        assert isinstance(results[index], np.ndarray), results[index]
        matches = [j for j in range(8) if np.array_equal(results[index], expected[j])]
        assert matches == [index], (index, matches)  # its own video, and no other client's
    after = served.stats()
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 8 and executions < 8, (inferences, executions)
    batched = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in after["batch_stats"]}
    assert max(batched) > 1, after["batch_stats"]


def test_repeated_request_is_served_from_the_cache(served: Served) -> None:
    """The same request twice: the second is a cache hit in the statistics, much faster, and the same video."""
    client = served.client()
    args = {"seed": 11, "steps": 10, "frames": 8, "height": 64, "width": 64}
    before = served.stats()["inference_stats"]
    start = time.perf_counter()
    first = generate(client, MODEL, "a yellow circle moving down", version="1", **args)
    miss_s = time.perf_counter() - start
    start = time.perf_counter()
    second = generate(client, MODEL, "a yellow circle moving down", version="1", **args)
    hit_s = time.perf_counter() - start
    after = served.stats()["inference_stats"]
    assert int(after["cache_hit"]["count"]) == int(before["cache_hit"]["count"]) + 1
    assert int(after["cache_miss"]["count"]) == int(before["cache_miss"]["count"]) + 1
    assert np.array_equal(first.video, second.video)
    assert hit_s < miss_s / 5, (hit_s, miss_s)


def _seed_as_float() -> list[Any]:
    """A request whose seed is FP32 where the config says INT64."""
    inputs = [i for i in make_inputs("a red circle", **SMALL)]
    seed = http.InferInput("seed", [1, 1], "FP32")
    seed.set_data_from_numpy(np.array([[3.0]], dtype=np.float32))
    return [*inputs, seed]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: make_inputs("   ", **SMALL), ["the prompt is empty: pass a text"]),
        (lambda: make_inputs("a red circle", **{**SMALL, "height": 4096}), ["height=4096 is outside the range", "[32, 128]"]),
        (lambda: make_inputs("a red circle", **{**SMALL, "width": 40}), ["must be multiples of", "e.g."]),
        (lambda: make_inputs("a red circle", guidance=float("nan"), **SMALL), ["guidance=nan is not a finite number"]),
        (lambda: make_inputs("a red circle", sampler="euler-x", **SMALL), ["unknown sampler 'euler-x'; choose one of"]),
        (lambda: make_inputs("a red circle", seed=-1, **SMALL), ["seed must be a whole number >= 0"]),
        (_seed_as_float, ["input 'seed' data-type is 'FP32'", "expects 'INT64'"]),  # Triton's own check, before model.py
    ],
    ids=["empty-prompt", "out-of-range", "not-a-multiple", "nan-guidance", "sampler", "negative-seed", "wrong-dtype"],
)
def test_bad_requests_get_one_line_errors_and_the_server_keeps_serving(served: Served, make: Any, words: list[str]) -> None:
    """A bad request gets one line naming the problem (the runtime's own message); the next good one is served."""
    client = served.client()
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, make(), model_version="1")
    message = info.value.message()
    assert "\n" not in message and all(word in message for word in words), message
    assert info.value.status() == "400", info.value.status()
    assert served.server.ready()
    assert generate(client, MODEL, "a red circle", seed=1, **SMALL).video.shape == (4, 32, 32, 3)


def test_undecodable_prompt_bytes(served: Served) -> None:
    """Bytes that are not UTF-8 get the runtime's UTF-8 message, naming the character."""
    prompt = http.InferInput("prompt", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[b"ab\xffc"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not valid UTF-8 .*character 2"):
        served.client().infer(MODEL, [prompt])


def test_versions_priority_and_metrics(served: Served) -> None:
    """Both versions answer (A/B), a real-time (priority 1) request is served, and the Prometheus endpoint answers."""
    client = served.client()
    one = generate(client, MODEL, "a green triangle", version="1", seed=5, **SMALL)
    two = generate(client, MODEL, "a green triangle", version="2", seed=5, priority=1, **SMALL)
    assert np.array_equal(one.video, two.video)
    assert {m["version"] for m in client.get_inference_statistics(MODEL)["model_stats"]} == {"1", "2"}
    with urllib.request.urlopen(served.server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert response.status == 200
    assert f'nv_inference_request_success{{model="{MODEL}",version="2"}}' in text
    assert "nv_cache_num_hits_per_model" in text
