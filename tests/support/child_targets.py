"""Functions run_isolated calls in a child process in tests (importable by name there: tests/support is on the path)."""

from __future__ import annotations

import os


def die(signal_number: int) -> None:
    """Send this process `signal_number` (9: what the out-of-memory killer sends)."""
    os.kill(os.getpid(), signal_number)
