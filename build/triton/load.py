"""Load behaviour on Triton, measured: throughput and p50/p95 latency per client count, vs Pipeline in one process.

    python -m t2vtrt.build.triton.load --engines artifacts/shapes/engines/cpu --out artifacts/shapes/reports
    (make serve-load [MODEL=] [LOAD_ARGS=...])

Phases, one after the other so none competes with another for the cores: (1) Pipeline called directly in this
process by N threads sharing it; (2) the same requests through a local tritonserver with dynamic batching, then
(3) without it; (4) past capacity: a small queue bound and more clients than it holds, counting rejections and
their message. Every request has its own seed (no cache hit can flatter a figure; the cache is off anyway). Every
loop is bounded by a request count and a deadline. Writes serve-load.{json,md} into --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.build.triton.client import generate, http_module
from t2vtrt.build.triton.config import ServeSettings, max_batch_size
from t2vtrt.build.triton.repository import resolve_python_env, write_repository
from t2vtrt.build.triton.server import LocalServer
from t2vtrt.runtime.errors import T2VError, os_error
from t2vtrt.runtime.files import atomic_path, write_json
from t2vtrt.runtime.manifest import load_manifest
from t2vtrt.runtime.pipeline import Pipeline

PROMPTS = (
    "a red circle moving left on a dark background",
    "a blue square moving up on a light background",
    "a green triangle moving right on a dark background",
    "a yellow circle moving down on a light background",
)
Call = Callable[[int], None]  # request number -> None (raises on failure)


@dataclass
class Level:
    """One side at one client count."""

    side: str
    clients: int
    requests: int
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # distinct message -> count
    mean_batch: float | None = None  # videos per model execution (server statistics)
    cut_by_deadline: bool = False

    def summary(self) -> dict[str, Any]:
        """The figures without the raw latencies."""
        lat = np.asarray(self.latencies_s) if self.latencies_s else np.asarray([np.nan])
        out = {k: v for k, v in asdict(self).items() if k != "latencies_s"}
        out.update(
            throughput_per_s=self.ok / self.seconds if self.seconds else 0.0, p50_s=float(np.percentile(lat, 50)), p95_s=float(np.percentile(lat, 95))
        )
        return out


def drive(call: Call, level: Level, deadline: float) -> Level:
    """`level.clients` threads issue `level.requests` calls between them, each waiting for its answer (closed loop)."""
    counter, lock = itertools.count(), threading.Lock()

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                number = next(counter)
            if number >= level.requests:
                return
            start = time.perf_counter()
            try:
                call(number)
            except Exception as exc:  # noqa: BLE001 - a failed request is a figure here, not a crash
                with lock:
                    level.failed += 1
                    message = " ".join(str(exc).split())[:300]
                    level.errors[message] = level.errors.get(message, 0) + 1
                continue
            with lock:
                level.ok += 1
                level.latencies_s.append(time.perf_counter() - start)
        level.cut_by_deadline = True

    threads = [threading.Thread(target=client, daemon=True) for _ in range(level.clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 60)  # bounded: a stuck request cannot hang the run
    level.seconds = time.perf_counter() - start
    return level


def request_args(number: int, settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Request `number`: a prompt from the set and its own seed (so no two requests are identical)."""
    return PROMPTS[number % len(PROMPTS)], {**settings, "seed": 1000 + number}


def pipeline_levels(engines: Path, clients: list[int], requests: int, settings: dict[str, Any], deadline: float) -> list[Level]:
    """Phase 1: Pipeline.generate in this process, shared by `c` threads."""
    pipe = Pipeline.from_dir(engines)
    try:
        pipe.generate(PROMPTS[0], **settings)  # warm-up, as the server's first request is below
        levels = []
        for count in clients:

            def call(number: int) -> None:
                prompt, kwargs = request_args(number, settings)
                pipe.generate(prompt, **kwargs)

            levels.append(drive(call, Level("pipeline", count, requests), deadline))
        return levels
    finally:
        pipe.close()


def server_levels(
    server: LocalServer, model: str, side: str, clients: list[int], requests: int, settings: dict[str, Any], deadline: float
) -> list[Level]:
    """Phases 2-4: the same requests as HTTP clients of the server, one connection per client thread."""
    http = http_module()
    local, opened = threading.local(), []

    def call(number: int) -> None:
        if not hasattr(local, "client"):
            local.client = http.InferenceServerClient(server.http_url, network_timeout=600, connection_timeout=60)
            opened.append(local.client)
        prompt, kwargs = request_args(number, settings)
        generate(local.client, model, prompt, **kwargs)

    stats = http.InferenceServerClient(server.http_url)
    opened.append(stats)
    try:
        generate(stats, model, PROMPTS[0], **settings)  # warm-up
        levels = []
        for count in clients:
            before = _counts(stats, model)
            level = drive(call, Level(side, count, requests), deadline)
            after = _counts(stats, model)
            executions = after[1] - before[1]
            level.mean_batch = (after[0] - before[0]) / executions if executions else None
            levels.append(level)
        return levels
    finally:
        for client in opened:  # an open keep-alive connection holds the server's shutdown until its exit timeout
            client.close()


def _counts(client: Any, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) from the server's statistics: their ratio is the mean batch."""
    stats = client.get_inference_statistics(model)["model_stats"]
    return sum(int(s.get("inference_count", 0)) for s in stats), sum(int(s.get("execution_count", 0)) for s in stats)


def serve(engines: Path, work: Path, tag: str, settings: ServeSettings, log_dir: Path) -> LocalServer:
    """A repository for this phase and a started server over it (the caller stops it)."""
    write_repository(engines, work / tag, replace(settings, python_env=resolve_python_env("auto")))
    return LocalServer(work / tag, log_dir / f"serve-load-{tag}.log", cache_mb=0).start()


def measure(
    engines: Path,
    out: Path,
    clients: list[int],
    requests: int,
    settings: dict[str, Any],
    overload_clients: int,
    overload_queue: int,
    max_seconds: float,
    instances: int = 1,
    threads: int = 0,
) -> dict[str, Any]:
    """Every phase; the report."""
    from t2vtrt.build.bench.host import host_info

    manifest = load_manifest(engines)
    name = manifest.data["model"]["name"]
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max_seconds
    report: dict[str, Any] = {
        "model": name,
        "engines": str(engines),
        "settings": settings,
        "clients": clients,
        "requests_per_level": requests,
        "max_batch_size": max_batch_size(manifest),
        "server": {"instances": instances, "threads": threads},
        "host": host_info(),
    }
    levels = pipeline_levels(engines, clients, requests, settings, deadline)
    with tempfile.TemporaryDirectory(prefix="serve-load-", dir=out) as tmp:
        work = Path(tmp)
        for tag, batching in (("batching", True), ("no-batching", False)):
            phase = ServeSettings(dynamic_batching=batching, max_queue_size=0, cache=False, instances=instances, threads=threads)
            with serve(engines, work, tag, phase, out) as server:
                report.setdefault("tritonserver", _server_version(server))
                levels += server_levels(server, name, f"triton {tag}", clients, requests, settings, deadline)
        overload = ServeSettings(max_queue_size=overload_queue, cache=False, instances=instances, threads=threads)
        with serve(engines, work, "overload", overload, out) as server:
            over = server_levels(server, name, "triton overload", [overload_clients], overload_clients * 2, settings, deadline)
    report["levels"] = [level.summary() for level in levels]
    report["overload"] = {**over[0].summary(), "max_queue_size": overload_queue}
    report["ratios"] = _ratios(report["levels"])
    return report


def _server_version(server: LocalServer) -> str:
    """The server's version string from its metadata."""
    client = http_module().InferenceServerClient(server.http_url)
    try:
        return str(client.get_server_metadata().get("version", "?"))
    finally:
        client.close()


def _ratios(levels: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per server side and client count: its throughput over Pipeline's at the same count."""
    base = {lv["clients"]: lv["throughput_per_s"] for lv in levels if lv["side"] == "pipeline"}
    ratios: dict[str, dict[str, float]] = {}
    for lv in levels:
        if lv["side"] != "pipeline" and base.get(lv["clients"]):
            ratios.setdefault(lv["side"], {})[str(lv["clients"])] = lv["throughput_per_s"] / base[lv["clients"]]
    return ratios


def markdown(report: dict[str, Any]) -> str:
    """The report as a table."""
    lines = [
        f"# serve-load: {report['model']} ({report['engines']})",
        "",
        f"settings {json.dumps(report['settings'])}; {report['requests_per_level']} requests per level; "
        f"max_batch_size {report['max_batch_size']}; server instances {report['server']['instances']}, "
        f"threads {report['server']['threads'] or 'default'}; tritonserver {report.get('tritonserver', '?')}; "
        f"host {report['host'].get('cpu')} x{report['host'].get('cores')}",
        "",
        "| side | clients | ok | failed | videos/s | vs Pipeline | p50 s | p95 s | mean batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in report["levels"]:
        ratio = report["ratios"].get(lv["side"], {}).get(str(lv["clients"]))
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        batch_text = "-" if lv["mean_batch"] is None else f"{lv['mean_batch']:.2f}"
        lines.append(
            f"| {lv['side']} | {lv['clients']} | {lv['ok']} | {lv['failed']} | {lv['throughput_per_s']:.3f} | "
            f"{ratio_text} | {lv['p50_s']:.3f} | {lv['p95_s']:.3f} | {batch_text} |"
        )
    over = report["overload"]
    lines += [
        "",
        f"past capacity: {over['clients']} clients, max_queue_size {over['max_queue_size']}: {over['ok']} served "
        f"(p50 {over['p50_s']:.3f} s, p95 {over['p95_s']:.3f} s), {over['failed']} rejected at once",
    ]
    lines += [f"- rejected with: `{message}` ({count}x)" for message, count in over["errors"].items()]
    cut = [f"{lv['side']} x{lv['clients']}" for lv in [*report["levels"], over] if lv["cut_by_deadline"]]
    if cut:
        lines.append(f"- cut by --max-seconds: {', '.join(cut)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, measure, write serve-load.{json,md}; a T2VError is one line and exit 2."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, required=True, help="a built target directory")
    parser.add_argument("--out", type=Path, required=True, help="where serve-load.{json,md} and the server logs go")
    parser.add_argument("--clients", default="1,2,4,8", help="client counts, comma-separated")
    parser.add_argument("--requests", type=int, default=16, help="requests per level (all clients together)")
    parser.add_argument("--overload-clients", type=int, default=16, help="clients in the past-capacity phase")
    parser.add_argument("--overload-queue", type=int, default=2, help="max_queue_size in the past-capacity phase")
    parser.add_argument("--max-seconds", type=float, default=1800, help="deadline for the whole run; later requests are not sent")
    parser.add_argument("--instances", type=int, default=1, help="server model instances (processes)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per server instance (0: every core)")
    for name in ("steps", "frames", "height", "width"):
        parser.add_argument(f"--{name}", type=int, default=None, help="default: the manifest's")
    args = parser.parse_args(argv)
    try:
        clients = [int(c) for c in args.clients.split(",") if c.strip()]
        if not clients or min(clients) < 1 or min(args.requests, args.overload_clients, args.overload_queue, args.instances) < 1 or args.threads < 0:
            raise ValueError
    except ValueError:
        print(
            "error: --clients takes counts >= 1 such as 1,2,4,8; --requests, --overload-clients, --overload-queue and "
            "--instances must be >= 1, --threads >= 0",
            file=sys.stderr,
        )
        sys.exit(2)
    settings = {k: getattr(args, k) for k in ("steps", "frames", "height", "width") if getattr(args, k) is not None}
    try:
        report = measure(
            args.engines,
            args.out,
            clients,
            args.requests,
            settings,
            args.overload_clients,
            args.overload_queue,
            args.max_seconds,
            args.instances,
            args.threads,
        )
        write_json(args.out / "serve-load.json", report)
        with atomic_path(args.out / "serve-load.md") as tmp:
            tmp.write_text(markdown(report))
    except T2VError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {os_error(exc, 'writing the load report')}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(markdown(report))


if __name__ == "__main__":
    main()
