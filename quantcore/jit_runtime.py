"""numba's runtime (NRT) read from an on-disk cache instead of compiled by LLVM in every process.

Before a process runs its first kernel, cached or not, numba builds the runtime's few
functions (atomic reference counts, the memory-info helpers) as an LLVM module and compiles
it: 0.03 s of every CLI process and worker process (parsing the IR text and LLVM's
optimisation and code generation), though the result depends only on numba's own IR and the
machine the code is for. Here the compiled library is saved as numba saves a kernel (its
object code and bitcode) beside the kernels' cache, keyed on the IR text, the target
(triple, CPU, features) and the numba and llvmlite versions, and later processes load it.

Never fatal, as ``quantcore.jit_cache``: an entry whose digest does not match its contents
(truncated, zeroed) is not loaded but compiled again and rewritten; a folder that cannot be
written leaves the compile as numba makes it. Where numba's ``compile_nrt_functions`` is not
the one this was written against, it is left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import struct
from pathlib import Path
from typing import Any

import llvmlite
import numba
from numba.core import caching
from numba.core.runtime import nrtdynmod

log = logging.getLogger(__name__)

_COMPILE_NAMES = {"create_nrt_module", "add_ir_module", "finalize"}
_MAGIC = b"QNRT1"
# magic, sha256 of the rest, the object's length; then the object and the bitcode.
_HEADER = struct.Struct(f"<{len(_MAGIC)}s32sQ")


def _compile(ctx: Any) -> Any:
    """``nrtdynmod.compile_nrt_functions``: the runtime's library for ``ctx``, from the cache
    where its entry is there and sound, else compiled (and saved)."""
    ir_mod, library = nrtdynmod.create_nrt_module(ctx)
    codegen = ctx.codegen()
    path = _entry(str(ir_mod), codegen.magic_tuple())
    if path is not None:
        state = read_entry(path)
        if state is not None:
            return codegen.unserialize_library((library.name, "object", state))
    library.enable_object_caching()  # keeps the object code for the save below
    library.add_ir_module(ir_mod)
    library.finalize()
    if path is not None:
        _name, _kind, (obj, bitcode) = library.serialize_using_object_code()
        write_entry(path, obj, bitcode)
    return library


def _entry(ir_text: str, target: tuple[str, ...]) -> Path | None:
    """Where this runtime's entry lives: the first cache folder numba's locators offer for
    this module that can be written (None: none can)."""
    key = hashlib.sha256(
        "\0".join((numba.__version__, llvmlite.__version__, *target, ir_text)).encode()
    ).hexdigest()[:24]
    for locator_class in getattr(caching.CacheImpl, "_locator_classes", ()):
        try:
            locator = locator_class.from_function(_entry, __file__)
            if locator is None:
                continue
            locator.ensure_cache_path()
            return Path(locator.get_cache_path()) / f"nrt-{key}.bin"
        except Exception:  # a locator that cannot serve here: the next one
            continue
    return None


def read_entry(path: Path) -> tuple[bytes, bytes] | None:
    """The object code and bitcode saved at ``path``; None where there is no entry or it is
    not whole (logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("numba's runtime cache %s is unreadable (%s); compiling it", path, error)
        return None
    if len(data) >= _HEADER.size:
        magic, digest, length = _HEADER.unpack_from(data)
        body = data[_HEADER.size :]
        if magic == _MAGIC and hashlib.sha256(body).digest() == digest and length <= len(body):
            return body[:length], body[length:]
    log.warning("numba's runtime cache %s is damaged; compiling it again", path)
    return None


def write_entry(path: Path, obj: bytes, bitcode: bytes) -> None:
    """Save the entry whole or not at all (a file renamed into place); a failure is logged."""
    body = obj + bitcode
    data = _HEADER.pack(_MAGIC, hashlib.sha256(body).digest(), len(obj)) + body
    # A name of its own (the umask's permissions, as numba's entries: a cache filled while
    # building an image is read by the service's user), then renamed over the entry.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            with temporary.open("xb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
    except OSError as error:
        log.warning("numba's runtime cache %s could not be written (%s)", path, error)


def install() -> bool:
    """Replace ``nrtdynmod.compile_nrt_functions`` (module docstring); whether it is ours."""
    current = nrtdynmod.compile_nrt_functions
    if current is not _compile and set(current.__code__.co_names) != _COMPILE_NAMES:
        return False
    nrtdynmod.compile_nrt_functions = _compile
    return True
