"""A local `tritonserver` on loopback: find the binary, start it on given ports, wait until ready, stop it.

Where the binary comes from, in order: --server / $T2V_TRITONSERVER (a tritonserver binary, e.g. NVIDIA's
/opt/tritonserver/bin/tritonserver), `tritonserver` on PATH (NVIDIA's container), then the copy `make serve-setup`
unpacks from the nvidia-pytriton wheel into <venv>/triton/server (Triton 2.51 with the Python backend, its stub for
this Python, and the local response cache). The wheel's libraries live in nvidia_pytriton.libs/ beside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from t2vtrt.runtime.errors import T2VError

LOOPBACK = "127.0.0.1"
SETUP_HINT = "run `make serve-setup` (the bundled server), or pass --server / set T2V_TRITONSERVER to a tritonserver binary"


@dataclass(frozen=True)
class ServerInstall:
    """A tritonserver binary and the folders it needs."""

    binary: Path
    backends: Path
    caches: Path
    lib_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Ports:
    """The three endpoints' ports."""

    http: int
    grpc: int
    metrics: int


def bundled_server(prefix: str | os.PathLike = sys.prefix) -> Path:
    """Where `make serve-setup` unpacks the nvidia-pytriton wheel: <venv>/triton/server."""
    return Path(prefix) / "triton" / "server"


def find_server(binary: str | os.PathLike | None = None) -> ServerInstall:
    """The tritonserver to run; a one-line error naming the setup step when there is none."""
    chosen = binary or os.environ.get("T2V_TRITONSERVER") or shutil.which("tritonserver")
    if chosen:
        path = Path(chosen).resolve()
        if not path.is_file():
            raise T2VError(f"{chosen} is not a tritonserver binary: {SETUP_HINT}")
        root = path.parent.parent  # NVIDIA's layout: <root>/bin/tritonserver, <root>/backends, <root>/caches
        return ServerInstall(path, root / "backends", root / "caches")
    root = bundled_server() / "pytriton" / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise T2VError(f"no tritonserver found (not on PATH, not in {bundled_server()}): {SETUP_HINT}")
    stub = root / "backends" / "python" / "triton_python_backend_stub"
    if not stub.is_file():
        raise T2VError(f"{stub} is missing (the Python backend's stub for Python {sys.version_info[0]}.{sys.version_info[1]}): {SETUP_HINT}")
    # The backend stub links libpython3.x: this interpreter's, not whichever another Python left on the loader path.
    libpython = Path(sysconfig.get_config_var("LIBDIR") or "/usr/lib")
    return ServerInstall(root / "bin" / "tritonserver", root / "backends", root / "caches", (bundled_server() / "nvidia_pytriton.libs", libpython))


def free_ports(count: int = 3) -> Ports:
    """Ports free on loopback now (the OS picks them; a race with another process is possible but rare)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        http, grpc, metrics = (s.getsockname()[1] for s in sockets)
    finally:
        for sock in sockets:
            sock.close()
    return Ports(http, grpc, metrics)


def server_command(install: ServerInstall, repo: Path, ports: Ports, cache_mb: int = 256, log_verbose: int = 0) -> list[str]:
    """tritonserver's arguments: every endpoint on loopback, the local response cache, a short exit timeout."""
    args = [
        str(install.binary),
        f"--model-repository={repo}",
        f"--backend-directory={install.backends}",
        f"--http-address={LOOPBACK}",
        f"--http-port={ports.http}",
        f"--grpc-address={LOOPBACK}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={LOOPBACK}",
        f"--metrics-port={ports.metrics}",
        "--exit-timeout-secs=10",
        f"--log-verbose={log_verbose}",
    ]
    if cache_mb > 0:
        args += [f"--cache-directory={install.caches}", f"--cache-config=local,size={cache_mb * 1024 * 1024}"]
    return args


def server_env(install: ServerInstall) -> dict[str, str]:
    """The environment: the wheel's libraries and libpython on the loader path (the bundled server only)."""
    env = dict(os.environ)
    if install.lib_dirs:
        env["LD_LIBRARY_PATH"] = ":".join([*map(str, install.lib_dirs), *filter(None, [env.get("LD_LIBRARY_PATH")])])
    return env


def _die_with_parent() -> None:
    """Linux: SIGTERM the server when the thread that started it dies (a killed test run leaves no server behind)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalServer:
    """A tritonserver child process on loopback; a context manager that always stops it.

    Start it from a thread that outlives it (the main thread): on Linux the server gets SIGTERM when that thread ends.
    """

    def __init__(
        self,
        repo: str | os.PathLike,
        log_file: str | os.PathLike,
        ports: Ports | None = None,
        cache_mb: int = 256,
        binary: str | os.PathLike | None = None,
        log_verbose: int = 0,
    ) -> None:
        self.install = find_server(binary)
        self.repo = Path(repo).resolve()
        self.ports = ports or free_ports()
        self.log_file = Path(log_file)
        self.command = server_command(self.install, self.repo, self.ports, cache_mb, log_verbose)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def http_url(self) -> str:
        """host:port of the HTTP endpoint (what tritonclient.http takes)."""
        return f"{LOOPBACK}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus metrics URL."""
        return f"http://{LOOPBACK}:{self.ports.metrics}/metrics"

    def start(self, timeout_s: float = 120.0) -> "LocalServer":
        """Start the server and wait until it and every model are ready; a one-line error with the log's tail if not."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_file, "wb")
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(self.install),
            preexec_fn=_die_with_parent,
        )
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll /v2/health/ready (bounded); an exited server or the timeout is an error naming the log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise T2VError(
                    f"tritonserver exited with code {self.process.returncode} before it was ready: {self.log_tail()} (full log: {self.log_file})"
                )
            if self.ready():
                return
            time.sleep(0.25)
        raise T2VError(f"tritonserver was not ready after {timeout_s:.0f} s: {self.log_tail()} (full log: {self.log_file})")

    def ready(self) -> bool:
        """Whether the server answers ready (every model loaded, with --strict-readiness, Triton's default)."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 3) -> str:
        """The last error-looking lines of the server log, joined on one line."""
        text = self.log_file.read_text(errors="replace") if self.log_file.is_file() else ""
        picked = [line.strip() for line in text.splitlines() if line.startswith("E") or "rror" in line] or text.splitlines()
        return " | ".join(line.strip() for line in picked[-lines:]) or "(empty log)"

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait (bounded), then SIGKILL; the exit code."""
        code = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                code = self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait(10)
        elif self.process is not None:
            code = self.process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> "LocalServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
