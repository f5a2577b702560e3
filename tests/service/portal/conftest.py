"""The portal's browser tests drive Debian's Chromium (``/usr/bin/chromium``) with Playwright
for Python; Playwright's own browser download is never used.

Where Chromium is missing, the session installs it with apt (CI runs as root); where that is
not possible the browser tests are skipped outside CI and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def _find() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install() -> str:
    """What apt said, when it could be run."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "not root, or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    out = []
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900,
                              check=False)
        out.append(done.stdout[-2000:] + done.stderr[-2000:])
        if done.returncode != 0:
            break
    return "\n".join(out)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _find()
    if path is None:
        said = _install()
        path = _find()
        if path is None:
            message = f"Chromium is not installed and could not be installed:\n{said}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, headless=True)
        try:
            yield launched
        finally:
            launched.close()
