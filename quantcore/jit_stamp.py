"""numba's cache entries keyed on the kernels' own sources and on the modules they import.

numba keys a cached kernel on its own file's contents alone, yet compiles into it every jitted
function it calls or inlines from other modules: change ``block_kernels._pairwise_leaf`` and
the cached ``block_stats`` (``block_stats_kernels.py``, unchanged) goes on running the old
code, in every process, until its own file changes or the cache is deleted. After an upgrade
that kept the cache (a checkout pulled, a package upgraded in place, a cache folder kept
across images) results would silently stop being those of the code. Here the stamp of a kernel
whose file is in a package also hashes every module of that package its file imports, and
theirs in turn, so any change among them compiles the kernel again.

Imports are read from the source text (``from X import …``, ``import X``, relative forms too),
not executed, and over-approximated: a module imported only for its Python-side code still
counts (a package's ``__init__`` counts only where a name comes from it, not a submodule).
Files outside a package keep numba's own stamp.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any

from numba.core import caching

_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.M)


def _top_package(path: Path) -> Path | None:
    """The folder of the outermost package holding ``path`` (None: not in a package)."""
    top = None
    folder = path.parent
    while (folder / "__init__.py").is_file():
        top = folder
        folder = folder.parent
    return top


def _module_file(root: Path, name: str) -> Path | None:
    """The file of module ``name`` (dotted, from ``root``'s package) if it is in that package."""
    parts = name.split(".")
    if not name or parts[0] != root.name:
        return None
    base = root.parent.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _dotted(root: Path, path: Path) -> str:
    """``path``'s module name (its package, for an ``__init__.py``)."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(root: Path, path: Path, text: str) -> set[Path]:
    """The files of ``root``'s package that ``text`` (the source of ``path``) imports."""
    here = _dotted(root, path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[Path] = set()
    for source, names in _FROM.findall(text):
        dots = len(source) - len(source.lstrip("."))
        module = source[dots:]
        if dots:  # relative: ``.`` is the importing module's package, each more dot its parent
            stem = package[: len(package) - (dots - 1)]
            module = ".".join([*stem, module] if module else stem)
        # A name that is a submodule brings that module; any other, the module it is from
        # (not a package's ``__init__`` for the submodules imported from it).
        for name in names.strip("()").replace("\n", " ").split(","):
            if not name.strip() or name.strip().startswith("#"):
                continue
            file = _module_file(root, f"{module}.{name.split()[0]}") or _module_file(root, module)
            if file is not None:
                found.add(file)
    for names in _IMPORT.findall(text):
        for name in names.split(","):
            if name.strip() and (f := _module_file(root, name.split()[0])) is not None:
                found.add(f)
    return found


@functools.cache
def _module(root: Path, path: Path) -> tuple[bytes, frozenset[Path]]:
    """``path``'s SHA-256 and the files of ``root``'s package it imports (read once a process:
    the kernel modules share most of theirs)."""
    data = path.read_bytes()
    imported = _imported(root, path, data.decode("utf-8", "replace"))
    return hashlib.sha256(data).digest(), frozenset(imported)


@functools.cache
def closure_digest(path: Path) -> bytes | None:
    """SHA-256 of ``path`` and of every module of its package that it imports, transitively
    (each file's path in the package and its bytes' digest, in path order); None outside a
    package."""
    root = _top_package(path)
    if root is None:
        return None
    seen: dict[Path, bytes] = {}
    pending = [path]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen[current], imported = _module(root, current)
            pending.extend(imported - seen.keys())
    digest = hashlib.sha256()
    for file in sorted(seen):
        digest.update(str(file.relative_to(root.parent)).encode() + b"\0" + seen[file])
    return digest.digest()


def _stamp(self: Any) -> Any:
    """The digest of the kernel's file and its package imports (which hashes the file's own
    bytes, as numba's stamp does); numba's stamp for a file outside a package or unreadable."""
    path = getattr(self, "_py_file", None)
    closure = None
    if isinstance(path, str) and path.endswith(".py"):
        try:
            closure = closure_digest(Path(path).resolve())
        except (OSError, ValueError):  # unreadable here: numba's stamp, as before
            closure = None
    return _numba_stamp(self) if closure is None else closure


_MIXIN: Any = getattr(caching, "_SourceFileBackedLocatorMixin", None)
_numba_stamp: Any = getattr(_MIXIN, "get_source_stamp", None)


def install() -> bool:
    """Key file-backed cache entries on ``_stamp`` (module docstring), where numba's locators
    are the ones this was written against; whether they now are."""
    if _numba_stamp is None:
        return False
    if _MIXIN.get_source_stamp is not _stamp:
        _MIXIN.get_source_stamp = _stamp
    return True
