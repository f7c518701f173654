"""The one user-facing error type: a one-line message that names the problem and the fix."""


class T2VError(Exception):
    """An error the user can fix; the CLI prints `error: <message>` and exits 2, no traceback."""

    def __init__(self, message: str) -> None:
        # Keep it one line: services log it, CI greps it.
        super().__init__(" ".join(str(message).split()))
