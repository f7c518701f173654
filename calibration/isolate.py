"""Run quantizers in fresh processes: ModelOpt's setup patches onnxruntime's quantization classes process-wide,
and both tools print freely; children keep the build process clean and their chatter in log files."""

from __future__ import annotations

import importlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple

from t2vtrt.runtime.errors import T2VError


class Call(NamedTuple):
    """module:function, its keyword arguments, and the log file its output goes to."""

    target: str
    kwargs: dict[str, Any]
    log: Path


def _call(target: str, kwargs: dict[str, Any], log: str) -> Any:
    """Child body: send stdout/stderr to `log`, then call module:function(**kwargs)."""
    with open(log, "wb", buffering=0) as handle:  # the last run's log only
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(**kwargs)


def run_isolated(*calls: Call) -> list[Any]:
    """Run each call in its own spawned process, concurrently; errors come back as one line."""
    for call in calls:
        call.log.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(calls), mp_context=context) as pool:
        futures = [pool.submit(_call, c.target, c.kwargs, str(c.log)) for c in calls]
        return [_result(future, call) for future, call in zip(futures, calls)]


def _result(future: Any, call: Call) -> Any:
    """A child's return value, or its failure as a T2VError naming the log."""
    try:
        return future.result()
    except T2VError:
        raise
    except BrokenProcessPool as exc:  # killed from outside: no exception of its own to report
        raise T2VError(
            f"{call.target.split(':')[1]} failed: its process was killed before it finished, most often by the kernel's "
            "out-of-memory killer (onnxruntime.quantization holds several copies of the graph and its "
            f"weights; see `dmesg`): free memory or run this stage on a host with more RAM (log so far: {call.log})"
        ) from exc
    except Exception as exc:  # any failure inside the tool: one line plus where its full log is
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise T2VError(f"{call.target.split(':')[1]} failed: {type(exc).__name__}: {first} (full log: {call.log})") from exc
