"""Decoding side of the trellis streams (``QENT`` v5-v8, v10-v13, ``trellis_coder``): a
stream's checked table, the decoder's slot tables and its chunks, ready for ``trellis_batch``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcore.coding import compact_table, rans, rans_chunks, trellis_batch
from quantcore.coding.context import LANES, class_table, inflate_table, table_rows, word_counts
from quantcore.coding.symbols import CodeArray, chunk_sizes
from quantcore.coding.trellis_coder import (
    _TABLE_HEAD,
    COMPACT,
    MAX_CLASSES,
    MAX_PRECISION,
    MIRRORED,
    PAIRED_CODES,
    QUANTIZERS,
    VERSIONS,
    encode,
    kernels,
    machine,
    path_levels,
)
from quantcore.errors import InvalidPackageError


@functools.cache
def _next_states(version: int, k_classes: int) -> npt.NDArray[np.int32]:
    """``trellis_batch.next_states`` of a version's machine (one array for each, shared: the
    vector loop only reads it)."""
    return trellis_batch.next_states(*machine(version), k_classes)


def _decode_table(
    table: memoryview, n_symbols: int, width: int, precision: int
) -> tuple[int, int, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``code_min``, K, the symbols and the rows of frequencies (one a context), checked
    (the symbol count and precision already are, by ``plan``)."""
    most = _TABLE_HEAD.size + (2 + 4 * QUANTIZERS * MAX_CLASSES) * n_symbols
    raw = inflate_table(table, most, _TABLE_HEAD.size, "trellis")
    code_min, k_classes = _TABLE_HEAD.unpack_from(raw)
    if not 1 <= k_classes <= MAX_CLASSES:
        raise InvalidPackageError(f"entropy stream trellis table has {k_classes} classes")
    symbols, freqs = table_rows(raw, _TABLE_HEAD.size, n_symbols, QUANTIZERS * k_classes, width,
                                precision, "trellis")  # fmt: skip
    return int(code_min), int(k_classes), symbols, freqs


def decoder_tables(
    code_min: int, k_classes: int, symbols: npt.NDArray[np.int64],
    freqs: npt.NDArray[np.int64], precision: int,
) -> np.ndarray:
    """Per context and slot, one word (``trellis_kernels.decoder_tables``): ``f - 1`` (a
    context of one symbol has ``f = 2**16`` at precision 16, past 16 bits), ``slot - cum``,
    the code, its index's parity and magnitude (capped at 255). One word, one load a code:
    four tables (8 bytes a slot too) cost four cache misses where the tables pass the cache
    (16 contexts at precision 16: 8 MB), 1.1-1.5x the decoding time. Compiled: building them
    with NumPy, context by context, was a third of a small tensor's decoding time; zeroing the
    array first (the kernel writes every slot), a tenth."""
    table = np.empty((freqs.shape[0], 1 << precision), dtype=np.uint64)
    kernels().decoder_tables(np.ascontiguousarray(freqs, np.int64),
                             np.ascontiguousarray(symbols, np.int64), code_min, k_classes,
                             table)  # fmt: skip
    return table


def plan(fields: tuple[Any, ...], body: memoryview) -> tuple[np.dtype, list[rans.Chunk]]:
    """The dtype of a checked v5 to v8 or v10 to v13 stream's codes and its chunks (as
    ``rans.plan``)."""
    _, version, width, raw_bits, precision, count, n_symbols, chunk, table_len, n_chunks, _ = (
        fields
    )
    if raw_bits:
        raise InvalidPackageError(f"entropy stream v{version} has {raw_bits=}, expected 0")
    dtype = np.dtype(np.uint8 if width == 8 else np.uint16)
    if not 2 <= n_symbols <= 1 << width or not 1 <= precision <= MAX_PRECISION:
        raise InvalidPackageError(f"entropy stream trellis table has {n_symbols=}, {precision=}")
    if version in COMPACT:
        code_min, k_classes, symbols, freqs = compact_table.decode(
            body[:table_len], n_symbols, width, precision, MAX_CLASSES
        )
    else:
        code_min, k_classes, symbols, freqs = _decode_table(
            body[:table_len], n_symbols, width, precision
        )
    sizes = chunk_sizes(count, chunk, n_chunks, True, len(body) - table_len)
    lengths = word_counts(body, table_len, n_chunks, LANES * n_chunks)  # + the first states
    offset = table_len + 4 * n_chunks
    firsts = body[offset : offset + LANES * n_chunks]
    offset += LANES * n_chunks
    table = decoder_tables(code_min, k_classes, symbols, freqs, precision)
    classes = class_table(k_classes)
    transitions, quantizers = machine(version)
    nexts = _next_states(version, k_classes)
    chunks = []
    for index, (words_n, n) in enumerate(zip(lengths, sizes, strict=True)):
        words = body[offset : offset + 4 * words_n]
        offset += 4 * words_n
        starts = np.frombuffer(firsts[LANES * index : LANES * (index + 1)], dtype=np.uint8)
        coded = rans_chunks.TrellisCoded(
            rans_chunks._words(words), starts, table, precision, classes, transitions,
            quantizers, nexts, code_min if version in MIRRORED else None, index,
        )  # fmt: skip

        def fill(part: CodeArray, coded: rans_chunks.TrellisCoded = coded) -> None:
            trellis_batch.decode([(coded, part)])

        chunks.append(rans.Chunk(index * chunk, n, fill, trellis=coded))
    return dtype, chunks



def compile_kernels() -> None:
    """Compile (or load) the kernels of v5 to v13 for 8- and 16-bit codes (one machine's
    codes compile them all: the machines are arguments)."""
    from quantcore.coding.symbols import open_stream

    indices = [0, 1, 1, 0, -1, 0, 2, -2, 1, 0] * 4
    levels = path_levels(indices)
    for dtype in (np.uint8, np.uint16):
        codes: CodeArray = (levels + 3).astype(dtype)
        stream = encode(codes, -3, 1)
        assert stream is not None
        fields, body = open_stream(stream, VERSIONS)
        _, chunks = plan(fields, body)
        for c in chunks:
            c.fill(np.empty(c.size, dtype=dtype))
            t = c.trellis
            assert t is not None  # the scalar kernel, where the vector loop decoded
            kernels().decode_chunk(t.words, t.precision, t.starts, t.classes, t.transitions,
                                   t.quantizers, t.table, np.empty(c.size, dtype=dtype))
        # A stream of two chunks, which the vector loop decodes as a pair in one call.
        paired: CodeArray = (path_levels(np.resize(indices, PAIRED_CODES)) + 3).astype(dtype)
        stream = encode(paired, -3, 1)
        assert stream is not None
        fields, body = open_stream(stream, VERSIONS)
        _, chunks = plan(fields, body)
        trellis_batch.decode([(c.trellis, np.empty(c.size, dtype=dtype)) for c in chunks
                              if c.trellis is not None])  # fmt: skip
        kernels().mirror(codes, -3, True, np.empty_like(codes))  # v6's decoding, in any case
        kernels().mirror_from(codes.copy(), -3, 0, np.zeros(kernels().FIELDS * LANES, np.uint64))
    trellis_batch.compile_vector_kernels()
    # A compact table's values are 16-bit where a symbol gap or an entry passes 255.
    kernels().compact_rows(np.zeros(2, np.uint16), np.ones((2, 1), np.bool_), 1,
                           compact_table.frequency_values(2, 8), 8, np.zeros((2, 1), np.int64))
    kernels().compact_symbols(np.zeros(2, np.uint16), 0, np.empty(1, np.int64),
                              np.empty((2, 1), np.bool_))
