"""The one user-facing error type: a one-line message that names the problem and the fix."""

from __future__ import annotations

import errno

# What to do about an OS error, by errno: the message must name a fix, not only the symptom.
_OS_FIXES = {
    errno.ENOSPC: "free disk space (or write to a disk with room) and run it again",
    errno.EDQUOT: "free space under your quota (or write elsewhere) and run it again",
    errno.EFBIG: "the file system refuses a file this large: write to another disk and run it again",
    errno.EACCES: "pick a location you can write to (or fix its permissions)",
    errno.EPERM: "pick a location you can write to (or fix its permissions)",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "the path is a folder: name a file",
}


class T2VError(Exception):
    """An error the user can fix; the CLI prints `error: <message>` and exits 2, no traceback."""

    def __init__(self, message: str) -> None:
        # Keep it one line: services log it, CI greps it.
        super().__init__(" ".join(str(message).split()))


def os_error(exc: OSError, doing: str, name_file: bool = True) -> T2VError:
    """An OSError as a one-line T2VError: what was being done, the system's reason, the fix."""
    where = f" ({exc.filename})" if name_file and getattr(exc, "filename", None) else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    fix = _OS_FIXES.get(exc.errno or 0, "check the path and free space, then run it again")
    return T2VError(f"{doing} failed: {reason}{where}; {fix}")
