"""What the CLI writes: JSON lines on stdout, messages and a progress bar on stderr.

stdout stays machine-readable (one JSON object per line) whatever the command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

WIDTH = 30
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def print_json(value: Any) -> None:
    print(json.dumps(value, sort_keys=True), flush=True)


def error(message: str) -> None:
    print(f"quantserve: {message}", file=sys.stderr, flush=True)


def output_folder(path: str, option: str = "--out") -> Path:
    """The folder ``path``, made if missing; ``ValueError`` (a usage error) naming ``option``
    where a file is in the way or the folder cannot be made."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{option} {path}: a file is there, not a folder") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise ValueError(f"{option} {path}: cannot make the folder: {reason}") from None
    return folder


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
