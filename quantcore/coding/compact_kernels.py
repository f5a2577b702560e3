"""Compiled decoding of the compact tables of trellis streams v10 to v13
(``quantcore.coding.compact_table``): the range coder's values, the symbols and the rows of
frequencies in one call. Three kernel calls and their arrays, from Python, were a fifth of a
small trellis tensor's decoding time."""

from __future__ import annotations

import numpy as np

from quantcore.coding.adaptive_kernels import decode as decode_values
from quantcore.coding.trellis_kernels import compact_rows, compact_symbols
from quantcore.jit import njit

VALUES_CORRUPT, SYMBOLS_CORRUPT, ROW_CORRUPT = 1, 2, 3


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def decode_table(payload, mode, top, count, code_min, zero, code_top, k_classes, values,
                 precision, symbols, freqs):  # fmt: skip
    """Decode ``count`` values (v4's binarisation around ``mode``, each at most ``top``) from
    ``payload``, then the symbols (``symbols``: each at most ``code_top``, level 0 among them
    if and only if ``zero``) and the rows (``freqs``, zeros) they give. Returns 0,
    ``VALUES_CORRUPT``, ``SYMBOLS_CORRUPT`` or ``ROW_CORRUPT``."""
    every = np.empty(count, np.int64)
    if not decode_values(payload, mode, top, every):
        return VALUES_CORRUPT
    sides = np.empty((2, symbols.size), np.bool_)
    compact_symbols(every, code_min, symbols, sides)
    has_zero = False
    for s in range(symbols.size):
        has_zero |= symbols[s] == -code_min
    if symbols[symbols.size - 1] > code_top or has_zero != zero:
        return SYMBOLS_CORRUPT
    if not compact_rows(every[symbols.size :], sides, k_classes, values, precision, freqs):
        return ROW_CORRUPT
    return 0
