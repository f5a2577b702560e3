"""The error the API client raises, apart from the client so that catching it loads no HTTP
library (``quantserve quantize`` never talks to a server)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The API answered with an error (or could not be reached: ``status`` 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message}
