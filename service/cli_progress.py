"""A one-line progress bar for the CLI, drawn on stderr so stdout stays machine-readable."""

from __future__ import annotations

from typing import TextIO

WIDTH = 30


class ProgressBar:
    """``[#########.....]  45%  quantizing`` redrawn in place; silent when disabled.

    On a terminal the line is redrawn with a carriage return; elsewhere (a log file, a CI
    job) a line is written only when the label or the whole percent changes.
    """

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self.shown: tuple[int, str] | None = None

    def update(self, fraction: float, label: str) -> None:
        if not self.enabled:
            return
        fraction = min(1.0, max(0.0, fraction))
        state = (int(fraction * 100), label)
        if state == self.shown:
            return
        self.shown = state
        filled = round(fraction * WIDTH)
        line = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {state[0]:3d}%  {label}"
        self.stream.write(f"\r{line:<60}" if self.tty else f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.shown is not None:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = None
