"""Entropy coding of integer codes with an order-0 model and ANS.

``encode_codes`` counts the symbols, splits each code into a high part, coded with an
asymmetric-numeral-systems coder under one static model built from the counts, and
``raw_bits`` low bits stored bit-packed as they are (``quantcore.coding.packing``). ``raw_bits`` is
the largest k whose estimated size, ``N * (H(code >> k) + k)`` plus the table, is within
``RAW_BITS_TOLERANCE`` of the best k: where the distribution is smooth at the scale of 2**k
levels (a 16-bit Laplacian), the low bits are almost uniform and coding them would buy
nothing, while a smaller alphabet makes decoding faster and the table tiny. Where it is not
(3 or 4 bits), k is 0.

The symbols are coded in independent chunks; the output is a self-describing byte stream (all
integers little-endian)::

    header (36 bytes, struct "<4sBBBBQIIIII"):
        magic b"QENT", version (1 or 2), width of the decoded codes in bits (8 or 16),
        raw_bits, precision (v2: the model's frequencies are out of 2**precision; 0 in v1),
        count of symbols, number of distinct high parts, chunk size, length of the table,
        number of chunks, CRC-32 of the header before it and of the body
    table:  zstd frame of the distinct high parts as uint16 deltas (the first one absolute)
            and, as byte planes (all low bytes first), their counts as uint64 (v1) or their
            frequencies as uint32 (v2, summing to 2**precision)
    chunks: the number of 32-bit ANS words of each chunk (uint32 each), then for each chunk
            its words followed by its ``ceil(n * raw_bits / 8)`` bytes of packed low bits

Version 3 (``quantcore.coding.context``, written where it pays: see ``encode_codes``) codes
each symbol under one of 8 frequency tables chosen by the magnitude class of the two symbols
before it (its context); otherwise as version 2.

Version 4 (``quantcore.coding.adaptive``, written where it decodes fast enough, small inputs
or large ones at low rate, and is smaller than the table-coded stream by enough to pay for
its slower decoding: ``adaptive.pays``) has its own short header and no table: one binary
range coder with adaptive contexts, the codes binarised around the most frequent one.

Version 5 (``quantcore.coding.trellis_coder``, written where it is the smallest, for codes
whose levels lie on a trellis path: TCQ's) codes each symbol under the table of its trellis
state's quantizer; the caller passes ``code_min`` so that the levels are known. Version 6
(the same module) is version 5 over codes mirrored after a negative one, where it is smaller.
Versions 7 and 8 are versions 5 and 6 on an 8-state trellis (the one TCQ's search follows on
tiny tensors); versions 10 and 11, written in their place, are 7 and 8 with compact tables
(``quantcore.coding.compact_table``: frequencies on a log scale, adaptively coded); versions
12 and 13 are 10 and 11 on a 32-state trellis (the one it follows on the others).
Version 9 (``quantcore.coding.adaptive``) is version 4's layout and coder over the indices of
codes on that 8-state path, for tiny tensors whose tables weigh too much.
Version 14 (``quantcore.coding.sparse``, written where at most a sixteenth of the codes differ
from the most frequent one and it is within 1% of the smallest other stream) codes only
those codes, each as its gap and its distance from the mode, under version 4's coder: the
decoder fills the rest, so its time goes with them, not with the tensor. Version 15 (the
same module) is version 14 for trellis codes whose most frequent level is 0: each code of
another level as its place, counted in places of its state's quantizer, and its trellis
index; written where it is smaller than the stream chosen otherwise and sparse enough to
decode faster (``sparse.trellis_worth_trying``).

Version 2 (written by default; ``quantcore.coding.rans``): chunks of 2M symbols, each coded by
8 interleaved 64-bit rANS states with 32-bit renormalisation, compiled with numba and run on
parallel threads; a chunk's words start with the 8 final states (two words each, low first).
Where the CPU has AVX-512, 4 chunks are decoded at once, one vector of 8 states each
(``quantcore.coding.rans_batch``): the same codes, 2-2.5 times faster per core; with AVX2
alone, the same loop in 256-bit registers (``rans_simd.refill``), 1.2-1.7 times.
Version 1 (``quantcore.coding.entropy_v1``, still decoded): chunks of 4M symbols, each one ANS
coder of the ``constriction`` package, whose model the decoder rebuilds from the counts.

Degenerate cases: an empty input stores no chunks. A single distinct high part has zero
entropy: its chunks hold no words (and no chunks at all when ``raw_bits`` is 0, e.g. a
constant input). Uniform codes end up fully raw (plain bit packing). Up to 65536 distinct
symbols are supported; every present symbol gets a non-zero frequency. Rate: the size stays
within ``RAW_BITS_TOLERANCE`` (0.1%) plus a few 1e-5 (v2: 3e-5 for the precision, 1e-4 where
a wide alphabet needs more than 16 bits of it) of the best of ``N * (H(code >> k) + k)`` and
the table, plus a few bytes a chunk (v2: 68 a chunk of 2M); see ``bench.bench_entropy``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quantcore.coding import (
    adaptive,
    context,
    rans,
    sparse,
    trellis_batch,
    trellis_coder,
    trellis_plan,
)
from quantcore.coding.symbols import (
    MAGIC,
    RAW_BITS_TOLERANCE,
    CodeArray,
    entropy_from_counts,
    flat_codes,
    given_counts,
    open_stream,
    symbol_counts,
)
from quantcore.errors import InvalidPackageError, InvalidSpecError

__all__ = [
    "MAGIC",
    "RAW_BITS_TOLERANCE",
    "VERSION",
    "VERSIONS",
    "compile_kernels",
    "decode_codes",
    "decode_plan",
    "empirical_entropy_bits",
    "encode_codes",
]

VERSION = rans.VERSION  # the order-0 stream, written where contexts do not pay
VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)  # decoded


def empirical_entropy_bits(codes: npt.ArrayLike) -> float:
    """Order-0 entropy of ``codes`` in bits per symbol: ``H = -sum(p_s log2 p_s)``.

    ``p_s = n_s / N`` from the symbol counts ``n_s`` over all ``N`` symbols. Zero for an empty
    input or a single distinct symbol. Codes must be integers in ``[0, 65535]``.
    """
    counts = symbol_counts(flat_codes(codes))
    return entropy_from_counts(counts[counts > 0])


def encode_codes(
    codes: npt.ArrayLike,
    *,
    counts: npt.ArrayLike | None = None,
    version: int | None = None,
    threads: int | None = None,
    code_min: int | None = None,
) -> bytes:
    """Entropy-code non-negative integer ``codes`` (< 2**16, any shape, read in C order).

    Returns the versioned stream described in the module docstring; ``decode_codes`` is its
    exact inverse (flat, ``uint8`` if every code is below 256, else ``uint16``). Raises
    ``InvalidSpecError`` for non-integer codes or codes outside ``[0, 65535]``.

    ``counts``, when the caller has it already (a quantizer counts its codes), is the codes'
    bincount: ``counts[c]`` codes equal ``c``, at most 65536 bins. It spares a counting pass,
    so it must be exact; only its shape and its sum (the number of codes) are checked (and in
    version 2 that every code has a count).

    ``version``: None (the default) writes the context-modelled version 3 where it saves at
    least ``context.MIN_GAIN`` over version 2, and version 2 elsewhere, unless the input
    is one that ``adaptive.fast_enough`` allows and version 4 is smaller by enough
    (``adaptive.pays``); 2, 3 or 4 force that
    version (3 falls back to 2 for fewer than two distinct high parts, where there is
    nothing to model; 4 is only for at most ``adaptive.MAX_CODES`` codes); 1 is the older
    single-threaded coder. Versions 2 and 3 code their
    chunks on ``threads`` threads (default: the cores; the bytes do not depend on it).

    ``code_min``: the signed level that code 0 stands for. Given it, codes whose levels lie
    on a trellis path (``quantcore.compress.trellis``) are also coded each under its trellis
    state's table (version 12, or 13 over mirrored codes, on the 32-state path; 10 or 11 on
    the 8-state one; 5 or 6 on the 4-state one), and that stream is returned where it is the
    smallest (any of ``version=5`` to ``8`` or 10 to 13 forces the smallest of them, and
    needs ``code_min``; 7 or 8 the
    8-state streams with the zstd tables of older packages); for tiny tensors
    (``adaptive.trellis_fast_enough``), so is version 9, their trellis indices under adaptive
    binary contexts and no table, where it pays as version 4 must (``version=9`` forces it).

    Whatever the stream chosen, version 14 (``quantcore.coding.sparse``) replaces it where
    ``sparse.worth_trying`` (no more than ``sparse.MAX_SHARE`` of the codes other than the
    mode) and ``sparse.accept`` (at most ``sparse.SLACK_SHARE`` larger; in place of v4 or v9,
    a byte more for each ``sparse.SPARED_CODES`` codes it spares); ``version=14`` forces it
    for such codes. Given ``code_min``, version 15 then replaces the stream where
    ``sparse.trellis_worth_trying`` and it is smaller; ``version=15`` forces it for codes on
    the 8- or 32-state path with at most ``sparse.MAX_SHARE`` of them not level 0.
    """
    if version is not None and version not in VERSIONS:
        raise InvalidSpecError(f"entropy stream {version=} is not one of {VERSIONS}")
    flat = flat_codes(codes)
    if counts is not None:
        histogram = given_counts(counts, flat.size)
    elif version == 1:
        histogram = symbol_counts(flat)
    else:
        histogram = rans.count_codes(flat)
    if version == 1:
        from quantcore.coding import entropy_v1

        return entropy_v1.encode(flat, histogram)
    if version in trellis_coder.VERSIONS:
        compact = version not in (trellis_coder.EIGHT_STATE_VERSION,
                                  trellis_coder.EIGHT_STATE_MIRRORED_VERSION)  # fmt: skip
        forced5 = None if code_min is None else trellis_coder.encode(flat, code_min, threads,
                                                                     compact)  # fmt: skip
        if forced5 is None:
            raise InvalidSpecError(
                f"entropy stream version {version} needs code_min and codes on a trellis path"
            )
        return forced5
    if version == adaptive.TRELLIS_VERSION:
        forced9 = None if code_min is None else adaptive.encode_trellis(flat, code_min)
        if forced9 is None:
            raise InvalidSpecError(
                "entropy stream version 9 needs code_min and codes on the 8-state trellis path"
            )
        return forced9
    if version == sparse.TRELLIS_VERSION:
        if code_min is None or not sparse.worth_trying(flat.size, histogram):
            raise InvalidSpecError(
                f"entropy stream version 15 needs code_min and at most {sparse.MAX_SHARE:.2%} "
                "of the codes other than level 0, and at least one"
            )
        forced15 = sparse.encode_trellis(flat, code_min)
        if forced15 is None:
            raise InvalidSpecError(
                "entropy stream version 15 needs codes on the 8- or 32-state trellis path"
            )
        return forced15
    if version == sparse.VERSION:
        if not sparse.worth_trying(flat.size, histogram):
            raise InvalidSpecError(
                f"entropy stream version 14 needs at most {sparse.MAX_SHARE:.2%} of the codes "
                "other than the most frequent one, and at least one"
            )
        forced14 = sparse.encode(flat, histogram)
        assert forced14 is not None
        return forced14
    small = flat.size <= adaptive.MAX_CODES
    if version == 4:
        if not small:
            raise InvalidSpecError(
                f"entropy stream version 4 holds at most {adaptive.MAX_CODES} codes, "
                f"got {flat.size}"
            )
        forced = adaptive.encode(flat, histogram)
        assert forced is not None
        return forced
    stream = None
    if version != 2:
        stream = context.encode(flat, histogram, threads, force=version == 3)
    if stream is None:
        stream = rans.encode(flat, histogram, threads)
    if version is not None:
        return stream
    if code_min is not None:
        dependent = trellis_coder.encode(flat, code_min, threads)
        if dependent is not None and len(dependent) < len(stream):
            stream = dependent
    # A tableless stream only where it saves enough for its slower decoding (adaptive.pays).
    table_bytes = len(stream)
    most = adaptive.most_bytes(table_bytes, flat.size)
    tableless = []
    if adaptive.fast_enough(flat.size, table_bytes):
        tableless.append(adaptive.encode(flat, histogram, limit=most))
    if code_min is not None and adaptive.trellis_fast_enough(flat.size):
        tableless.append(adaptive.encode_trellis(flat, code_min, limit=most))
    for candidate in tableless:
        if candidate is not None and adaptive.pays(len(candidate), table_bytes, flat.size) and (
            len(candidate) < len(stream)
        ):
            stream = candidate
    if sparse.worth_trying(flat.size, histogram):
        others = flat.size - int(histogram.max())
        places = sparse.encode(flat, histogram,
                               limit=sparse.most_bytes(stream, flat.size, others))
        if places is not None and sparse.accept(len(places), stream, flat.size, others):
            stream = places
    if code_min is not None and sparse.trellis_worth_trying(flat.size, histogram, code_min,
                                                            replacing=stream):  # fmt: skip
        on_path = sparse.encode_trellis(flat, code_min, limit=len(stream) - 1)
        if on_path is not None and len(on_path) < len(stream):
            stream = on_path
    return stream


def _version(data: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    view = memoryview(data).cast("B")
    return (view[4] if len(view) > 4 and view[:4] == MAGIC else -1), view


def decode_codes(
    data: bytes | bytearray | memoryview, *, count: int | None = None, threads: int | None = None
) -> CodeArray:
    """Decode a stream written by ``encode_codes`` (either version) back to the flat array of
    codes; version 2 decodes its chunks on ``threads`` threads (default: the cores).

    ``count``, when the caller knows it (a tensor's size), is the number of codes the stream
    must hold: checked before anything is allocated.

    Raises ``InvalidPackageError`` naming what is wrong for a truncated, corrupt or
    unknown-version stream (the CRC-32 covers the whole stream, the table and chunk lengths
    are checked before decoding, and every chunk must consume exactly its words).
    """
    version, view = _version(data)
    if version in _ONE_CHUNK:
        dtype, chunks = _plan_one(view, count)
        out = np.empty(sum(c.size for c in chunks), dtype=dtype)
        for c in chunks:
            c.fill(out)
        return out
    fields, body = open_stream(data, VERSIONS)
    if count is not None and fields[5] != count:
        raise InvalidPackageError(f"entropy stream holds {fields[5]} codes, expected {count}")
    if fields[1] == 1:
        from quantcore.coding import entropy_v1

        return entropy_v1.decode(fields, body)
    if fields[1] == 3 or fields[1] in trellis_coder.VERSIONS:
        plan = context.plan if fields[1] == 3 else trellis_plan.plan
        dtype, chunks = plan(fields, body)
        out = np.empty(fields[5], dtype=dtype)
        if len(chunks) == 1 and chunks[0].trellis is not None:  # most tensors: straight there
            trellis_batch.decode([(chunks[0].trellis, out)])
        else:
            rans.fill_all(chunks, out, threads)  # a thread's trellis chunks decoded together
        return out
    return rans.decode(fields, body, threads)


def decode_plan(
    data: bytes | bytearray | memoryview, *, count: int | None = None, check_crc: bool = True
) -> tuple[np.dtype, list[rans.Chunk]]:
    """The stream's checked header and tables, as independent chunks to decode wherever the
    caller wants them: the codes' dtype and, for each chunk, its first code, its size and a
    ``fill(part)`` that decodes it into ``part`` (an array of that size and dtype), on any
    thread. ``decode_codes`` is ``fill`` of every chunk into one array; a package's unpacking
    fills each chunk straight into its place in ``model.onnx``. Checks as ``decode_codes``.

    ``check_crc=False`` skips the CRC-32 of versions 2, 3 and 5 for a caller that checks what
    the codes decode to (a package's piece hashes): their header and tables are checked all
    the same, and their decoders refuse words that do not end as a stream must."""
    version, view = _version(data)
    if version in _ONE_CHUNK:
        return _plan_one(view, count)
    fields, body = open_stream(data, VERSIONS, check_crc=check_crc or version == 1)
    if count is not None and fields[5] != count:
        raise InvalidPackageError(f"entropy stream holds {fields[5]} codes, expected {count}")
    if fields[1] == 2:
        return rans.plan(fields, body)
    if fields[1] == 3:
        return context.plan(fields, body)
    if fields[1] in trellis_coder.VERSIONS:
        return trellis_plan.plan(fields, body)

    def whole(part: CodeArray) -> None:  # v1: one coder for each 4M codes, decoded together
        from quantcore.coding import entropy_v1

        part[:] = entropy_v1.decode(fields, body)

    dtype = np.dtype(np.uint8 if fields[2] == 8 else np.uint16)
    return dtype, [rans.Chunk(0, fields[5], whole)] if fields[5] else []


# Streams of one range-coded chunk and a header of their own: versions 4, 9, 14 and 15.
_ONE_CHUNK = {adaptive.VERSION: adaptive.plan, adaptive.TRELLIS_VERSION: adaptive.plan,
              sparse.VERSION: sparse.plan, sparse.TRELLIS_VERSION: sparse.plan}  # fmt: skip


def _plan_one(view: memoryview, count: int | None) -> tuple[np.dtype, list[rans.Chunk]]:
    dtype, chunks = _ONE_CHUNK[view[4]](view)
    held = sum(c.size for c in chunks)
    if count is not None and held != count:
        raise InvalidPackageError(f"entropy stream holds {held} codes, expected {count}")
    return dtype, chunks


def compile_kernels() -> None:
    """Compile (or load from numba's disk cache) the kernels of every stream written."""
    rans.compile_kernels()
    context.compile_kernels()
    adaptive.compile_kernels()
    sparse.compile_kernels()
    trellis_plan.compile_kernels()
