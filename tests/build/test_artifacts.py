"""Two builds of one model never interleave their writes: the second waits for the first's lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from t2vtrt.build.artifacts import ArtifactPaths, build_lock


def test_second_build_waits_for_the_lock(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """While a build holds the model's lock, `t2vtrt surgery` on it waits, says so, then runs once released."""
    cmd = [str(Path(sys.executable).with_name("t2vtrt")), "--quiet", "surgery", "--model", "tiny", "--artifacts", str(tiny_paths.root.parent)]
    with build_lock(tiny_paths.root):
        waiting = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None, waiting.communicate()  # still blocked on the lock
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert "waiting for another build" in err


def test_bad_model_name_leaves_no_folder(tmp_path: Path) -> None:
    """The lock lives in artifacts/.locks/, so a refused model name leaves no artifacts/<name>/ behind."""
    cmd = [str(Path(sys.executable).with_name("t2vtrt")), "--quiet", "export", "--model", "no-such-model", "--artifacts", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error:"), result.stderr
    assert not (tmp_path / "no-such-model").exists()
