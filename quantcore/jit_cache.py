"""numba's on-disk kernel cache, read lean and never fatal to a job.

Lean: loading a kernel from the cache refreshes numba's whole CPU target first (every typing
and lowering registry imported and installed: ``numba.cpython``, ``numba.np``, the typed
containers...), 0.15-0.2 s and 12-28 MB in every CLI process and worker pool process, though a
cached kernel is machine code that needs only numba's runtime (NRT) to run. Here a load sets
up the runtime alone; a kernel not in the cache is compiled as before, and compiling
refreshes the target itself.

Never fatal: numba lets an unreadable cache entry (a truncated or zeroed file after a crash
or a full disk) raise from every call of its kernel, in every process, until someone deletes
it; and a cache that cannot be written (a full disk, a read-only folder) fails the call that
compiled the kernel. Here an unreadable entry is logged and compiled again, its index
dropped if that is what cannot be read, so the save that follows repairs it; a failed save is
logged, and the kernel, compiled in memory, runs. ``quantserve warm``, whose purpose is the
cache, still fails when a save did (``check_saved``).

Lean also in what a load reads: numba parses a cached kernel's LLVM bitcode (kept so that
other kernels can link against it) and walks it for the names it defines, 0.09 s of the 0.2 s
that a job's dozen cache loads took; here the names come from the object code's own ELF
symbol table (the same names, tested) and the bitcode is parsed only if a kernel compiled
later links against that one.

Where numba's methods are not the ones this was written against, they are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from typing import Any

import numpy as np
from llvmlite import binding as llvm
from numba.core import caching, codegen

log = logging.getLogger(__name__)

# The kernels whose compiled code could not be saved in this process, with the error.
_unsaved: list[tuple[str, str]] = []

# What numba's methods refer to, in the shapes replaced here.
_LOAD_NAMES = {"refresh", "_guard_against_spurious_io_errors", "_load_overload"}
_SAVE_NAMES = {"_guard_against_spurious_io_errors", "_save_overload"}
_UNSERIALIZE_NAMES = {"ValueError", "_codegen", "_engine", "_final_module",
                      "_finalize_final_module", "_load_defined_symbols", "_set_compiled_object",
                      "_shared_module", "create_library", "enable_object_caching", "isinstance",
                      "ll", "parse_bitcode"}  # fmt: skip
_LINKING_NAMES = {"Linkage", "RuntimeError", "_ensure_finalized", "_final_module",
                  "_shared_module", "append", "clone", "external", "functions", "get_function",
                  "is_declaration", "linkage", "ll", "name"}  # fmt: skip
_LIBRARY = codegen.CPUCodeLibrary
_numba_unserialize = _LIBRARY._unserialize.__func__  # type: ignore[attr-defined]
_numba_module_for_linking = _LIBRARY._get_module_for_linking
# An ELF64 symbol: name (offset into its string table), type and binding, visibility,
# section (0: undefined), value, size.
_ELF_SYMBOL = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("section", "<u2"),
                        ("value", "<u8"), ("size", "<u8")])  # fmt: skip
_SYMTAB, _STT_SECTION = 2, 3


def _load(self: Any, sig: Any, target_context: Any) -> Any:
    """``Cache.load_overload`` with only the runtime set up (``initialize`` runs once); None,
    as for a kernel not in the cache, where the entry cannot be read."""
    from numba.core.runtime import rtsys

    rtsys.initialize(target_context)
    try:
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
    except Exception as error:  # any unreadable entry: compiling is always a way out
        log.warning("numba's cache entry of %s is unreadable (%s: %s); compiling it again",
                    self._name, type(error).__name__, error)  # fmt: skip
        _drop_unreadable_index(self)
        return None


def _drop_unreadable_index(cache: Any) -> None:
    """Remove the cache's index if its contents cannot be read, so that the next save writes a
    new one (a data file that cannot be read is overwritten by that save). An index that cannot
    be opened now (too many open files, say) is not known to be damaged: it stays."""
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:
        return
    try:
        cache_file._load_index()
    except OSError:
        return
    except Exception:
        with contextlib.suppress(OSError, AttributeError):
            os.unlink(cache_file._index_path)


def _save(self: Any, sig: Any, data: Any) -> None:
    """``Cache.save_overload``, logging instead of raising where the cache cannot be written."""
    try:
        with self._guard_against_spurious_io_errors():
            self._save_overload(sig, data)
    except Exception as error:
        log.warning("numba's cache of %s could not be written (%s: %s); the kernel runs "
                    "compiled in memory", self._name, type(error).__name__, error)  # fmt: skip
        _unsaved.append((str(self._name), f"{type(error).__name__}: {error}"))


def defined_symbols(obj: bytes) -> set[str] | None:
    """The names a 64-bit little-endian ELF object defines (functions and variables, local or
    not: what numba's ``_load_defined_symbols`` reads from the same library's bitcode), None
    for any other format."""
    if obj[:6] != b"\x7fELF\x02\x01":
        return None
    shoff = struct.unpack_from("<Q", obj, 0x28)[0]
    entry, count = struct.unpack_from("<HH", obj, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * entry) for i in range(count)]
    names: set[str] = set()
    for _, kind, _, _, offset, size, link, _, _, _ in headers:
        if kind != _SYMTAB:
            continue
        strings = obj[headers[link][4] : headers[link][4] + headers[link][5]]
        symbols = np.frombuffer(obj, _ELF_SYMBOL, size // _ELF_SYMBOL.itemsize, offset)
        named = (symbols["section"] != 0) & (symbols["info"] & 0xF < _STT_SECTION)
        for start in symbols["name"][named & (symbols["name"] != 0)].tolist():
            names.add(strings[start : strings.index(b"\0", start)].decode())
    return names


def _unserialize(cls: Any, generator: Any, state: Any) -> Any:
    """``CPUCodeLibrary._unserialize`` of a cached object (``generator``: numba's code
    generator): its defined names from its ELF symbol table, its bitcode kept unparsed for
    ``_module_for_linking``."""
    name, kind, data = state
    defined = defined_symbols(data[0]) if kind == "object" else None
    if defined is None:
        return _numba_unserialize(cls, generator, state)
    library = generator.create_library(name)
    library.enable_object_caching()
    library._set_compiled_object(data[0])
    library._unparsed_bitcode = data[1]
    library._finalize_final_module()
    generator._engine._defined_symbols |= defined
    return library


def _module_for_linking(self: Any) -> Any:
    """``CPUCodeLibrary._get_module_for_linking``, parsing a cached library's bitcode first."""
    bitcode = self.__dict__.pop("_unparsed_bitcode", None)
    if bitcode is not None:
        self._shared_module = llvm.parse_bitcode(bitcode)
    return _numba_module_for_linking(self)


def check_saved() -> None:
    """Raise ``RuntimeError`` naming the first kernel whose compiled code could not be saved
    in this process, if any (a step that exists to fill the cache must not pass without it)."""
    if _unsaved:
        name, error = _unsaved[0]
        raise RuntimeError(f"numba's cache could not be written for {len(_unsaved)} kernel(s), "
                           f"the first {name} ({error})")  # fmt: skip


def install() -> bool:
    """Replace ``Cache.load_overload`` and ``Cache.save_overload`` (module docstring), both or
    neither, and with them the libraries' lean loads; whether the two are now this module's."""
    cache = caching.Cache
    replacements = {"load_overload": (_load, _LOAD_NAMES), "save_overload": (_save, _SAVE_NAMES)}
    for name, (ours, names) in replacements.items():
        current = getattr(cache, name)
        if current is not ours and set(current.__code__.co_names) != names:
            return False
    for name, (ours, _) in replacements.items():
        setattr(cache, name, ours)
    _install_lean_loads()
    return True


def _install_lean_loads() -> None:
    """Replace the library's ``_unserialize`` and ``_get_module_for_linking`` (module
    docstring), both or neither."""
    unserialize = set(_numba_unserialize.__code__.co_names)
    linking = set(_numba_module_for_linking.__code__.co_names)
    names = getattr(getattr(codegen, "JitEngine", None), "_load_defined_symbols", None)
    keeps_names = names is not None and "_defined_symbols" in names.__code__.co_names
    if unserialize == _UNSERIALIZE_NAMES and linking == _LINKING_NAMES and keeps_names:
        _LIBRARY._unserialize = classmethod(_unserialize)  # type: ignore[method-assign,assignment]
        _LIBRARY._get_module_for_linking = _module_for_linking  # type: ignore[method-assign]
