"""The runtime stays thin: every module imports with torch, diffusers and transformers blocked."""

from __future__ import annotations

import subprocess
import sys

BLOCKED_IMPORT_CHECK = r"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "diffusers", "transformers", "onnx", "polygraphy", "modelopt"):
            raise ImportError(f"runtime imported {name}")
        return None
sys.meta_path.insert(0, Block())
import t2vtrt.runtime as rt
names = [m.name for m in pkgutil.walk_packages(rt.__path__, "t2vtrt.runtime.")]
for name in names:
    importlib.import_module(name)
import t2vtrt.runtime.pipeline, t2vtrt.runtime.backends.onnxruntime
print(len(names))
"""


def test_runtime_imports_without_torch() -> None:
    """A subprocess with a meta-path blocker imports every t2vtrt.runtime module."""
    result = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT_CHECK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 8


def test_cli_generate_path_imports_without_torch() -> None:
    """The CLI module itself (what `t2vtrt generate` loads) does not pull torch."""
    code = BLOCKED_IMPORT_CHECK.replace("import t2vtrt.runtime as rt", "import t2vtrt.cli\nimport t2vtrt.runtime as rt")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
