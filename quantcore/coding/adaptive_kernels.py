"""Compiled loops of stream ``QENT`` v4 (``quantcore.coding.adaptive``): a binary range coder
(LZMA's carry-propagating encoder, 32-bit range) with adaptive probabilities; imported on
first use, like ``rans_kernels``.

A code is binarised around the stream's mode, ``d = code - mode``: a flag ``d != 0``, the
sign, then ``|d|``'s class ``n = bit_length(|d|) - 1`` in unary (flags ``n > j``), the two
bits below its leading one as flags and the rest equiprobable (a class of ``2^n`` values is
``n + 1`` flags and ``n - 2`` plain bits: half the flags of a unary magnitude at 4-5 bits a
code, so twice the decoding speed there). Each flag has a context: the zero flag the number
of non-zero codes among the two before it, the sign that of the code before, the class flags
``j`` and the bit length of the previous magnitude (capped at 4), the mantissa flags the
class (and the first mantissa bit). A context's probability of a 0 is the mean of two
estimates, one fast (``p += (2^15 - p) >> 4``) and one slow (``>> 7``), as in VVC's CABAC: the
fast one learns a small tensor's statistics within a few dozen codes, the slow one keeps them
precise.
"""

from __future__ import annotations

import numpy as np

from quantcore.coding.trellis_kernels import _index, _level
from quantcore.jit import njit

CLASSES = 16  # magnitude classes: bit_length(|d|) - 1, 0..15
NEAR = 5  # the previous magnitude's bit length, capped: the class flags' second index
# Context offsets: zero flag (3), sign (3), class flags (CLASSES × NEAR), the first
# mantissa bit (per class), the second (per class and first bit).
SIG, SIGN, CLS = 0, 3, 6
MAN1 = CLS + CLASSES * NEAR
MAN2 = MAN1 + CLASSES
CONTEXTS = MAN2 + 2 * CLASSES
ONE = 1 << 15
FAST, SLOW = 4, 7
TOP = 1 << 24
MASK32 = 0xFFFFFFFF
SLACK = 80  # bytes one code can take at most (about 50 flags of at most 11 bits), and more
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@njit(inline="always")
def _update(fast, slow, c, bit):
    if bit:
        fast[c] -= fast[c] >> FAST
        slow[c] -= slow[c] >> SLOW
    else:
        fast[c] += (ONE - fast[c]) >> FAST
        slow[c] += (ONE - slow[c]) >> SLOW


@njit(inline="always")
def _shift_low(st, out):
    """LZMA's ``ShiftLow``: ``st`` = [low, range, cache, cache_size, pos]."""
    low = st[0]
    if low < 0xFF000000 or low > MASK32:
        carry = low >> 32
        temp = st[2]
        while True:
            out[st[4]] = (temp + carry) & 0xFF
            st[4] += 1
            temp = 0xFF
            st[3] -= 1
            if st[3] == 0:
                break
        st[2] = (low >> 24) & 0xFF
    st[3] += 1
    st[0] = (low & 0x00FFFFFF) << 8


@njit(inline="always")
def _put_bit(st, out, fast, slow, c, bit):
    p = (fast[c] + slow[c]) >> 1
    bound = (st[1] >> 15) * p
    if bit:
        st[0] += bound
        st[1] -= bound
    else:
        st[1] = bound
    _update(fast, slow, c, bit)
    while st[1] < TOP:
        st[1] <<= 8
        _shift_low(st, out)


@njit(inline="always")
def _put_raw(st, out, bit):
    st[1] >>= 1
    if bit:
        st[0] += st[1]
    while st[1] < TOP:
        st[1] <<= 8
        _shift_low(st, out)


@njit(inline="always")
def _put_code(st, out, fast, slow, bank, d, nz, prev_sign, prev_mag):
    """Code trellis index ``d`` under the contexts of ``bank`` (an offset: one set of contexts
    a trellis quantizer), as ``encode`` codes a distance from the mode. ``encode`` keeps its
    loop written out: through this helper it ran 1.45 times slower (same bytes)."""
    _put_bit(st, out, fast, slow, bank + SIG + nz, d != 0)
    m = abs(d)
    if d != 0:
        _put_bit(st, out, fast, slow, bank + SIGN + prev_sign, d < 0)
        n = 0
        while (m >> (n + 1)) > 0:
            n += 1
        for j in range(n):
            _put_bit(st, out, fast, slow, bank + CLS + NEAR * j + prev_mag, 1)
        if n < CLASSES - 1:
            _put_bit(st, out, fast, slow, bank + CLS + NEAR * n + prev_mag, 0)
        if n >= 1:
            first = (m >> (n - 1)) & 1
            _put_bit(st, out, fast, slow, bank + MAN1 + n, first)
            if n >= 2:
                _put_bit(st, out, fast, slow, bank + MAN2 + 2 * n + first, (m >> (n - 2)) & 1)
                for j in range(n - 3, -1, -1):
                    _put_raw(st, out, (m >> j) & 1)


@njit(inline="always")
def _sign_and_length(d):
    """The sign context (0: zero, 1: positive, 2: negative) and the capped bit length of
    ``|d|`` that the next code's contexts take."""
    m = abs(d)
    length = 0
    while (m >> length) > 0:
        length += 1
    return (0 if d == 0 else (1 if d > 0 else 2)), min(length, NEAR - 1)


@njit(inline="always")
def _start_encoder(banks):
    fast = np.full(banks * CONTEXTS, ONE >> 1, dtype=np.int64)
    slow = np.full(banks * CONTEXTS, ONE >> 1, dtype=np.int64)
    st = np.zeros(5, dtype=np.int64)
    st[1] = MASK32
    st[3] = 1
    return fast, slow, st


@njit(inline="always")
def _finish_encoder(st, out):
    for _ in range(5):
        _shift_low(st, out)
    end = st[4]
    while end > 1 and out[end - 1] == 0:
        end -= 1
    return end


@_jit
def encode(codes, mode, out):
    """Code ``codes`` into ``out``; returns the number of bytes written (the first, LZMA's
    leading zero, is dropped by the caller; trailing zeros are trimmed: the decoder reads
    zeros past the end), or -1 once fewer than ``SLACK`` bytes are left (``72 * codes.size
    + SLACK`` bytes are always enough)."""
    fast = np.full(CONTEXTS, ONE >> 1, dtype=np.int64)
    slow = np.full(CONTEXTS, ONE >> 1, dtype=np.int64)
    st = np.zeros(5, dtype=np.int64)
    st[1] = MASK32
    st[3] = 1
    nz1 = 0
    nz2 = 0
    prev_sign = 0
    prev_mag = 0
    for i in range(codes.size):
        if st[4] + SLACK > out.size:
            return -1
        d = np.int64(codes[i]) - mode
        _put_bit(st, out, fast, slow, SIG + nz1 + nz2, d != 0)
        m = abs(d)
        if d != 0:
            _put_bit(st, out, fast, slow, SIGN + prev_sign, d < 0)
            n = 0
            while (m >> (n + 1)) > 0:
                n += 1
            for j in range(n):
                _put_bit(st, out, fast, slow, CLS + NEAR * j + prev_mag, 1)
            if n < CLASSES - 1:
                _put_bit(st, out, fast, slow, CLS + NEAR * n + prev_mag, 0)
            if n >= 1:
                first = (m >> (n - 1)) & 1
                _put_bit(st, out, fast, slow, MAN1 + n, first)
                if n >= 2:
                    _put_bit(st, out, fast, slow, MAN2 + 2 * n + first, (m >> (n - 2)) & 1)
                    for j in range(n - 3, -1, -1):
                        _put_raw(st, out, (m >> j) & 1)
        nz2 = nz1
        nz1 = 1 if d != 0 else 0
        prev_sign = 0 if d == 0 else (1 if d > 0 else 2)
        length = 0
        while (m >> length) > 0:
            length += 1
        prev_mag = min(length, NEAR - 1)
    for _ in range(5):
        _shift_low(st, out)
    end = st[4]
    while end > 1 and out[end - 1] == 0:
        end -= 1
    return end


@_jit
def encode_trellis(codes, code_min, transitions, quantizers, out):
    """Stream v9's payload: ``encode`` of the trellis indices of the levels ``codes +
    code_min`` on the machine's path, each under its state's quantizer's bank of contexts.
    Returns as ``encode``, or -2 at a level off the path."""
    fast, slow, st = _start_encoder(2)
    nz1 = 0
    nz2 = 0
    prev_sign = 0
    prev_mag = 0
    state = 0
    for i in range(codes.size):
        if st[4] + SLACK > out.size:
            return -1
        q1 = quantizers[state]
        k = _index(np.int64(codes[i]) + code_min, q1)
        if k == -(np.int64(1) << 40):
            return -2
        _put_code(st, out, fast, slow, q1 * CONTEXTS, k, nz1 + nz2, prev_sign, prev_mag)
        state = transitions[state, k & 1]
        nz2 = nz1
        nz1 = 1 if k != 0 else 0
        prev_sign, prev_mag = _sign_and_length(k)
    return _finish_encoder(st, out)


@njit(inline="always")
def _byte(data, pos):
    return np.int64(data[pos]) if pos < data.size else np.int64(0)


@njit(inline="always")
def _bit(code, rng, pos, data, fast, slow, c):
    """Decode one flag of context ``c``: the inverse of ``_put_bit``, its state ``(code,
    range, pos)`` (the next payload byte) held in registers and updated without branching
    on the bit (a flag at mid rates is a coin toss, a branch mispredicted half the time).
    Returns the new state and the bit."""
    f = fast[c]
    s = slow[c]
    bound = (rng >> 15) * ((f + s) >> 1)
    bit = np.int64(code >= bound)
    one = -bit  # all ones where the bit is 1
    zero = ~one
    code -= bound & one
    rng = (bound & zero) | ((rng - bound) & one)
    fast[c] = f + (((ONE - f) >> FAST) & zero) - ((f >> FAST) & one)
    slow[c] = s + (((ONE - s) >> SLOW) & zero) - ((s >> SLOW) & one)
    while rng < TOP:
        rng <<= 8
        code = ((code << 8) | _byte(data, pos)) & MASK32
        pos += 1
    return code, rng, pos, bit


@njit(inline="always")
def _raw(code, rng, pos, data):
    """Decode one equiprobable bit (``_put_raw``'s)."""
    rng >>= 1
    bit = np.int64(code >= rng)
    code -= rng & -bit
    while rng < TOP:
        rng <<= 8
        code = ((code << 8) | _byte(data, pos)) & MASK32
        pos += 1
    return code, rng, pos, bit


@_jit
def decode(data, mode, top, out):
    """Decode ``out.size`` codes from ``data``; False if one falls outside ``[0, top]`` (a
    corrupt stream). Past the end it reads zeros, however many: the encoder trimmed them,
    and a long run of near-certain flags (a tensor that is all the mode after a few other
    codes) ends its output with many. The stream's CRC-32 is what detects a cut payload.
    The coder's state lives in registers (``_bit``): kept in an array, each flag waited on a
    store and a load, and branched on its value: 1.6-2.6 times slower."""
    fast = np.full(CONTEXTS, ONE >> 1, dtype=np.int64)
    slow = np.full(CONTEXTS, ONE >> 1, dtype=np.int64)
    code = np.int64(0)
    for j in range(4):
        code = (code << 8) | _byte(data, j)
    rng = np.int64(MASK32)
    pos = np.int64(4)
    nz1 = 0
    nz2 = 0
    prev_sign = 0
    prev_mag = 0
    for i in range(out.size):
        m = 0
        negative = 0
        code, rng, pos, nonzero = _bit(code, rng, pos, data, fast, slow, SIG + nz1 + nz2)
        if nonzero:
            code, rng, pos, negative = _bit(code, rng, pos, data, fast, slow, SIGN + prev_sign)
            n = 0
            while n < CLASSES - 1:
                code, rng, pos, more = _bit(code, rng, pos, data, fast, slow,
                                            CLS + NEAR * n + prev_mag)  # fmt: skip
                if not more:
                    break
                n += 1
            m = 1
            if n >= 1:
                code, rng, pos, first = _bit(code, rng, pos, data, fast, slow, MAN1 + n)
                m = 2 | first
                if n >= 2:
                    code, rng, pos, b = _bit(code, rng, pos, data, fast, slow,
                                             MAN2 + 2 * n + first)  # fmt: skip
                    m = (m << 1) | b
                    for _ in range(n - 2):
                        code, rng, pos, b = _raw(code, rng, pos, data)
                        m = (m << 1) | b
        d = -m if negative else m
        value = mode + d
        if value < 0 or value > top:
            return False
        out[i] = value
        nz2 = nz1
        nz1 = 1 if m else 0
        prev_sign = 0 if m == 0 else (2 if negative else 1)
        length = 0
        while (m >> length) > 0:
            length += 1
        prev_mag = min(length, NEAR - 1)
    return True


@_jit
def decode_trellis(data, code_min, top, steps, first_bank, out):
    """Decode ``out.size`` codes of ``encode_trellis``; False as ``decode``. ``steps[2s + p]``
    is the state that index parity ``p`` leads to from state ``s`` (bits 16 and up) and its
    quantizer's bank of contexts (the low bits), ``first_bank`` state 0's: one load a code
    where the state and then its quantizer were two, on the chain from one code to the next
    (with level 0's code written without the level's checks: 10-14% faster on the real
    models' v9 tensors). The loop is ``decode``'s, written out again: through a shared
    inlined helper, v4 decoded 1.7 times slower."""
    fast = np.full(2 * CONTEXTS, ONE >> 1, dtype=np.int64)
    slow = np.full(2 * CONTEXTS, ONE >> 1, dtype=np.int64)
    code = np.int64(0)
    for j in range(4):
        code = (code << 8) | _byte(data, j)
    rng = np.int64(MASK32)
    pos = np.int64(4)
    nz1 = 0
    nz2 = 0
    prev_sign = 0
    prev_mag = 0
    state = 0
    bank = first_bank
    for i in range(out.size):
        code, rng, pos, nonzero = _bit(code, rng, pos, data, fast, slow, bank + SIG + nz1 + nz2)
        if nonzero:
            code, rng, pos, negative = _bit(code, rng, pos, data, fast, slow,
                                            bank + SIGN + prev_sign)  # fmt: skip
            n = 0
            while n < CLASSES - 1:
                code, rng, pos, more = _bit(code, rng, pos, data, fast, slow,
                                            bank + CLS + NEAR * n + prev_mag)  # fmt: skip
                if not more:
                    break
                n += 1
            m = 1
            if n >= 1:
                code, rng, pos, first = _bit(code, rng, pos, data, fast, slow, bank + MAN1 + n)
                m = 2 | first
                if n >= 2:
                    code, rng, pos, b = _bit(code, rng, pos, data, fast, slow,
                                             bank + MAN2 + 2 * n + first)  # fmt: skip
                    m = (m << 1) | b
                    for _ in range(n - 2):
                        code, rng, pos, b = _raw(code, rng, pos, data)
                        m = (m << 1) | b
            k = -m if negative else m
            value = _level(k, bank != 0) - code_min
            if value < 0 or value > top:
                return False
            out[i] = value
            step = steps[2 * state + (k & 1)]
            length = 0
            while (m >> length) > 0:
                length += 1
            prev_mag = min(length, NEAR - 1)
            prev_sign = 2 if negative else 1
            nz2 = nz1
            nz1 = 1
        else:
            out[i] = -code_min  # the header's mode: within the width
            step = steps[2 * state]
            prev_mag = 0
            prev_sign = 0
            nz2 = nz1
            nz1 = 0
        state = step >> 16
        bank = step & 0xFFFF
    return True
