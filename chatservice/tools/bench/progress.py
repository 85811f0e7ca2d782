"""The benchmark's progress display on standard error: in place on a terminal."""

from typing import Any


class Progress:
    """The progress display on standard error: in place on a terminal."""

    def __init__(self, stream: Any, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._shown = False

    def update(self, text: str) -> None:
        """Show C{text} as the current progress."""
        if not self.enabled:
            return
        if self.tty:
            self._write(f"\r{text}\x1b[K")
            self._shown = True
        else:
            self._write(text + "\n")

    def clear(self) -> None:
        """End the in-place line, so that what follows starts on its own."""
        if self._shown:
            self._write("\n")
            self._shown = False

    def error(self, text: str) -> None:
        """Write an error line."""
        self.clear()
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # nowhere left to say it
