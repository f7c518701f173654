"""`t2vtrt triton-repo` without a server: config.pbtxt from the manifest, the repository layout, versions, one-line
errors, and the Python-backend model.py run against a stand-in for Triton's `triton_python_backend_utils`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli_run import assert_one_line_error, snapshot, t2vtrt

from t2vtrt.build.triton.config import INPUTS, ServeSettings, build_config
from t2vtrt.build.triton.load import Level, drive, markdown
from t2vtrt.build.triton.repository import TEMPLATE, write_repository
from t2vtrt.runtime.files import sha256_file
from t2vtrt.runtime.manifest import load_manifest
from t2vtrt.runtime.pipeline import Pipeline

SMALL = {"steps": 3, "frames": 4, "height": 32, "width": 32}


def test_config_follows_the_manifest(tiny_engines: Path) -> None:
    """Batch size from the engines' range, every generate argument as an input, batching/priority/queue/cache knobs."""
    manifest = load_manifest(tiny_engines)
    text = build_config(manifest, ServeSettings(max_queue_size=5, queue_timeout_ms=7, python_env=Path("/env")), "ab" * 32)
    assert f"max_batch_size: {manifest.data['ranges']['batch'][2]}" in text
    assert 'name: "tiny"' in text and 'backend: "python"' in text and "ab" * 32 in text
    for name, dtype, optional, _ in INPUTS:
        line = next(line for line in text.splitlines() if f'name: "{name}"' in line)
        assert dtype in line and ("optional: true" in line) == optional
    for fragment in (
        "kind: KIND_CPU",
        "priority_levels: 2",
        "default_priority_level: 2",
        "max_queue_size: 5",
        "default_timeout_microseconds: 7000",
        "timeout_action: REJECT",
        "response_cache { enable: true }",
        "version_policy: { all { } }",
        '"EXECUTION_ENV_PATH" value: { string_value: "/env" }',
        'name: "video" data_type: TYPE_UINT8 dims: [ -1, -1, -1, 3 ]',
    ):
        assert fragment in text, fragment
    plain = build_config(manifest, ServeSettings(dynamic_batching=False, cache=False, name="other"), "0" * 64)
    assert "dynamic_batching" not in plain and "response_cache { enable: false }" in plain and 'name: "other"' in plain
    assert "EXECUTION_ENV_PATH" not in plain


def test_repository_layout_and_provenance(tiny_engines: Path, tmp_path: Path) -> None:
    """A version folder holds model.py, the target's files byte for byte and version.json naming the manifest's hash."""
    repo = tmp_path / "repo"
    written = write_repository(tiny_engines, repo, ServeSettings())
    version = repo / "tiny" / "1"
    assert written.version_dir == version and written.config == repo / "tiny" / "config.pbtxt"
    assert (version / "model.py").read_bytes() == TEMPLATE.read_bytes()
    copied, source = snapshot(version / "engines"), snapshot(tiny_engines)
    assert copied and all(source[name] == digest for name, digest in copied.items())
    load_manifest(version / "engines")  # self-contained: the copy passes the runtime's hash checks
    record = json.loads((version / "version.json").read_text())
    assert record["made_from"]["manifest_sha256"] == sha256_file(tiny_engines / "manifest.json")
    assert record["made_from"]["manifest_sha256"] in written.config.read_text()
    assert record["config"]["max_batch_size"] == load_manifest(tiny_engines).data["ranges"]["batch"][2]


def test_rewrite_replaces_whole_and_versions_coexist(tiny_engines: Path, tmp_path: Path) -> None:
    """Writing version 1 again swaps it whole (no temp leftovers); version 2 joins it; a mismatched version is refused."""
    repo = tmp_path / "repo"
    write_repository(tiny_engines, repo, ServeSettings())
    (repo / "tiny" / "1" / "stale.txt").write_text("from an older write")
    write_repository(tiny_engines, repo, ServeSettings(instances=2))
    write_repository(tiny_engines, repo, ServeSettings(version=2, instances=2))
    model = repo / "tiny"
    assert sorted(p.name for p in model.iterdir()) == ["1", "2", "config.pbtxt"]
    assert not (model / "1" / "stale.txt").exists() and "count: 2" in (model / "config.pbtxt").read_text()
    record = model / "1" / "version.json"
    data = json.loads(record.read_text())
    data["config"]["max_batch_size"] = 99
    record.write_text(json.dumps(data))
    from t2vtrt.runtime.errors import T2VError

    with pytest.raises(T2VError, match="version 1 of tiny shares config.pbtxt but differs .*max_batch_size 99"):
        write_repository(tiny_engines, repo, ServeSettings(version=3))
    assert not (model / "3").exists()


def test_cli_writes_a_repository(tiny_engines: Path, tmp_path: Path) -> None:
    """`t2vtrt triton-repo` prints the version folder it wrote."""
    result = t2vtrt(
        "triton-repo",
        "--engines",
        str(tiny_engines),
        "-o",
        str(tmp_path / "repo"),
        "--name",
        "t2v",
        "--version",
        "3",
        "--no-cache",
        "--python-env",
        "none",
    )
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "repo" / "t2v" / "3") in result.stdout
    assert "response_cache { enable: false }" in (tmp_path / "repo" / "t2v" / "config.pbtxt").read_text()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--engines", "{missing}"], ["manifest.json does not exist", "make engines"]),
        (["-o", "{file}"], ["is a file", "pass a folder"]),
        (["--precision", "int4"], ["precision 'int4' was not built", "built precisions are"]),
        (["--python-env", "{tmp}"], ["has no bin/activate", "make serve-setup"]),
        (["--name", "a/b"], ["cannot be a Triton model name", "--name"]),
    ],
)
def test_cli_bad_input_is_one_line(tiny_engines: Path, tmp_path: Path, args: list[str], words: list[str]) -> None:
    """Bad input: exit 2, one `error:` line naming the problem and the fix, nothing written."""
    (tmp_path / "file").write_text("")
    fill = {"{missing}": str(tmp_path / "nowhere"), "{file}": str(tmp_path / "file"), "{tmp}": str(tmp_path)}
    base = {"--engines": str(tiny_engines), "-o": str(tmp_path / "repo")}
    pairs = dict(zip(args[::2], (fill.get(v, v) for v in args[1::2])))
    argv = [x for k, v in {**base, **pairs}.items() for x in (k, v)]
    assert_one_line_error(t2vtrt("triton-repo", *argv), *words)
    assert not (tmp_path / "repo").exists()


def test_triton_serve_needs_a_repository(tmp_path: Path) -> None:
    """`t2vtrt triton-serve` over a folder with no model: one line naming triton-repo."""
    assert_one_line_error(t2vtrt("triton-serve", "--repo", str(tmp_path)), "holds no model", "t2vtrt triton-repo")


# --- model.py against a stand-in for triton_python_backend_utils (the real server runs it in test_server.py)


class _Tensor:
    """pb_utils.Tensor: a name and a numpy array."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Error:
    """pb_utils.TritonError with its codes."""

    INVALID_ARG, INTERNAL = 3, 13

    def __init__(self, message: str, code: int = 13) -> None:
        self.message, self.code = message, code


class _Response:
    """pb_utils.InferenceResponse."""

    def __init__(self, output_tensors: list[_Tensor] | None = None, error: _Error | None = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors or []}
        self.error = error


def _fake_pb_utils() -> types.ModuleType:
    """The parts of triton_python_backend_utils model.py uses."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.TritonError, module.InferenceResponse = _Tensor, _Error, _Response  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: request.get(name)  # type: ignore[attr-defined]
    return module


def _request(prompt: bytes, **values: Any) -> dict[str, _Tensor]:
    """A one-row request as Triton hands it over: (1, 1) arrays of the config's dtypes."""
    dtypes = {"seed": np.int64, "guidance": np.float32, "negative_prompt": np.object_, "sampler": np.object_}
    inputs = {"prompt": prompt, **values}
    return {k: _Tensor(k, np.array([[v]], dtype=dtypes.get(k, np.object_ if isinstance(v, bytes) else np.int32))) for k, v in inputs.items()}


@pytest.fixture()
def model_module(monkeypatch: pytest.MonkeyPatch, tiny_engines: Path, tmp_path: Path) -> Any:
    """The template loaded from a written version folder, as the backend stub loads it."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    written = write_repository(tiny_engines, tmp_path / "repo", ServeSettings())
    spec = importlib.util.spec_from_file_location("t2v_triton_model", written.version_dir / "model.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_model_batches_only_matching_settings(model_module: Any, tiny_engines: Path) -> None:
    """One execute: matching videos share Pipeline calls (at most the engines' batch), each equal to its lone call."""
    model = model_module.TritonPythonModel()
    model.initialize({"model_config": json.dumps({"parameters": {"threads": {"string_value": "0"}}})})
    calls: list[int] = []
    real = model.pipe.generate
    model.pipe.generate = lambda prompts, *a, **k: calls.append(len(prompts)) or real(prompts, *a, **k)
    requests = [
        _request(b"a red circle", seed=1, **SMALL),
        _request(b"a blue square", seed=2, **SMALL),
        _request(b"a green circle", seed=3, negative_prompt=b"blurry", **SMALL),
        _request(b"a red circle", seed=1, **{**SMALL, "steps": 2}),
        _request(b"", **SMALL),
    ]
    responses = model.execute(requests)
    assert calls == [2, 1, 1]  # three matching (batch max 2), then the 2-step one; the bad one never ran
    pipe = Pipeline.from_dir(tiny_engines)
    expected = [
        ("a red circle", 1, "", SMALL),
        ("a blue square", 2, "", SMALL),
        ("a green circle", 3, "blurry", SMALL),
        ("a red circle", 1, "", {**SMALL, "steps": 2}),
    ]
    for response, (prompt, seed, negative, settings) in zip(responses, expected):
        assert response.error is None
        alone = pipe.generate(prompt, negative_prompt=negative, seed=seed, **settings).frames
        assert np.array_equal(response.outputs["video"][0], alone)
    batch_of = [json.loads(r.outputs["timings"][0][0])["batch"] for r in responses[:4]]
    assert batch_of == [2, 2, 1, 1]
    bad = responses[4].error
    assert bad.code == _Error.INVALID_ARG and bad.message.startswith("the prompt is empty")
    model.finalize()


def test_model_reads_undecodable_bytes_as_the_runtime_error(model_module: Any) -> None:
    """A prompt that is not UTF-8 gets the runtime's own message, naming the character."""
    req = model_module.parse
    from t2vtrt.runtime.errors import T2VError

    model = model_module.TritonPythonModel()
    model.initialize({"model_config": "{}"})
    with pytest.raises(T2VError, match="not valid UTF-8 .*character 2"):
        req(model.pipe.manifest, _request(b"ab\xff", **SMALL))


def test_model_imports_without_torch(tiny_engines: Path, tmp_path: Path) -> None:
    """model.py loads with torch, diffusers, transformers and onnx blocked (the serve env has none of them)."""
    code = f"""
import importlib.util, sys, types
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "diffusers", "transformers", "onnx", "polygraphy", "modelopt"):
            raise ImportError(f"model.py imported {{name}}")
sys.meta_path.insert(0, Block())
sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
spec = importlib.util.spec_from_file_location("m", {str(TEMPLATE)!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- the load tool's loop and report (the measurement itself: `make serve-load`)


def test_load_loop_is_bounded_by_count_and_deadline() -> None:
    """drive() sends exactly the requested count, records failures by message, and stops at the deadline."""
    seen: list[int] = []

    def call(number: int) -> None:
        seen.append(number)
        if number % 3 == 0:
            raise RuntimeError("queue full")

    level = drive(call, Level("x", 4, 9), time.monotonic() + 30)
    assert sorted(seen) == list(range(9)) and level.ok == 6 and level.errors == {"queue full": 3}
    slow = drive(lambda n: time.sleep(0.05), Level("y", 2, 10_000), time.monotonic() + 0.3)
    assert slow.cut_by_deadline and 0 < slow.ok < 100 and slow.seconds < 5


def test_load_report_markdown() -> None:
    """The table has a row per side and client count, the ratio to Pipeline, and the rejection message."""
    lv = Level("pipeline", 1, 2, ok=2, seconds=1.0, latencies_s=[0.4, 0.6]).summary()
    sv = Level("triton batching", 1, 2, ok=2, seconds=0.5, latencies_s=[0.2, 0.3], mean_batch=1.0).summary()
    over = {
        **Level("triton overload", 8, 16, ok=4, failed=12, seconds=1.0, latencies_s=[0.5] * 4, errors={"Exceeds maximum queue size": 12}).summary(),
        "max_queue_size": 2,
    }
    report = {
        "model": "tiny",
        "engines": "e",
        "settings": {},
        "requests_per_level": 2,
        "max_batch_size": 2,
        "server": {"instances": 1, "threads": 0},
        "host": {"cpu": "c", "cores": 2},
        "levels": [lv, sv],
        "overload": over,
        "ratios": {"triton batching": {"1": 2.0}},
    }
    text = markdown(report)
    assert "| triton batching | 1 | 2 | 0 | 4.000 | 2.00x |" in text
    assert "12 rejected at once" in text and "Exceeds maximum queue size" in text
