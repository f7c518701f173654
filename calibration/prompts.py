"""The calibration prompt sets shipped with the project: one prompt per line."""

from __future__ import annotations

from pathlib import Path

from t2vtrt.runtime.errors import T2VError

HERE = Path(__file__).parent
PROMPT_FILES = {"calibration": HERE / "prompts.txt", "eval": HERE / "prompts_eval.txt"}


def read_prompts(path: Path) -> list[str]:
    """Non-empty lines of a prompt file; a one-line error when there are none."""
    if not path.is_file():
        raise T2VError(f"prompt file {path} does not exist")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise T2VError(f"prompt file {path} holds no prompts: write one prompt per line")
    return prompts


def load_prompts(which: str, limit: int | None = None, file: str | None = None) -> list[str]:
    """The first `limit` prompts of a shipped set ('calibration' or 'eval'), or of `file` in calibration/."""
    return read_prompts(HERE / file if file else PROMPT_FILES[which])[:limit]
