"""The decoder of stream ``QENT`` v2 on vectors: the 8 states of a chunk in one 512-bit
register, several chunks advanced together.

Decoding one chunk is a chain of dependent steps (the slot's table entry, a multiply, the
renormalisation that reads the next words); one chunk's 8 states alone leave the core
waiting on that chain. Here ``K`` chunks (up to ``GROUP``, any tensors) take turns in one
loop, so that ``K`` chains are in flight: a round of a chunk gathers its 8 entries, updates
the 8 states, and loads the words of the states that fell below ``L`` in lane order
(``llvm.masked.expandload``: exactly the order in which the scalar decoder reads them), then
stores the 8 codes with their raw low bits ORed in (up to 8 bits a code: one 64-bit load a
round; more are ORed in after). The stream format is v2's unchanged.

LLVM lowers this to AVX-512 (gathers, ``vpmullq``, ``vpexpandd``); ``available`` says whether
the CPU has it. On a CPU with AVX2 alone the same loop runs in 256-bit halves, its states
refilled by a permutation instead of the expanding load (``refill``, ``refilled``; its
64-bit multiply of a 16-bit frequency becomes ``vpmuludq``s); elsewhere (``usable``) the
caller keeps the scalar kernels. The loop stops for every chunk as soon as one has fewer
than 8 words or 8 bytes of low bits left, or ``limit`` rounds are done, so it never reads
past a chunk's words or low bits, nor writes past its full rounds; ``finish`` decodes what
is left of a chunk with the scalar step (clamped word reads, as ``rans_kernels``) and checks
its end. ``rounds_nibbles`` and ``finish_nibbles`` store each round's 8 codes, plus a
constant, as 4 bytes of two 4-bit values (ONNX's INT4 and UINT4 ``raw_data``), so that a
4-bit tensor is decoded straight into its place. Tables are ``f | (slot - c) << 16 | value
<< 32`` (uint64) for precisions up to 16.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from llvmlite import ir

from quantcore.coding.rans_kernels import _L, LANES, _32, _ended, or_low, pack_nibbles
from quantcore.jit import cgutils, intrinsic, njit, types

GROUP = 4  # chunks advanced together: 4 chains hide the latency of one on a Zen 4 core
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
_I1, _I8, _I32, _I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)


def compiled_features() -> dict[str, bool]:
    """The CPU features numba compiles for: the host's, or those ``NUMBA_CPU_FEATURES`` names
    (``+avx2,-avx512f,...``); none where ``NUMBA_CPU_NAME`` names another CPU without them (a
    cache for other machines may not use the host's instructions)."""
    import llvmlite.binding as llvm
    from numba.core import config

    named = getattr(config, "CPU_FEATURES", None)
    if named:
        return {f[1:]: f[0] == "+" for f in str(named).split(",") if f[:1] in "+-" and f[1:]}
    if getattr(config, "CPU_NAME", None) not in (None, "host"):
        return {}
    return dict(llvm.get_host_cpu_features())


def available() -> bool:
    """Whether the CPU numba compiles for has the AVX-512 the loop needs (elsewhere LLVM
    would emulate the gathers and expanding loads, slower than scalar)."""
    features = compiled_features()
    return all(features.get(f, False) for f in ("avx512f", "avx512dq", "avx512vl"))


def refill() -> npt.NDArray[np.uint8] | None:
    """The loops' ``refill`` for this CPU: None with AVX-512, ``REFILL_ROWS`` with AVX2 alone
    (``refilled``: the same loops in 256-bit halves); only where ``usable``."""
    return None if available() else REFILL_ROWS


# CPUs whose AVX2 runs each 256-bit operation as two 128-bit halves (Zen 1, Excavator): there
# the v2 loop with fewer chunks than ``GROUP`` decodes slower than the scalar kernel (0.84x
# from 10K to 1.5M codes on a Zen 1), and a whole group about as fast (1.0-1.4x).
_SPLIT_AVX2 = frozenset({"znver1", "bdver4"})
# With AVX-512, a v2 chunk alone in the loop is one chain of 512-bit operations against the
# scalar kernel's eight lanes: on a Rocket Lake (an Intel Xeon's virtual machine, 2026-12-04)
# it decoded at 0.57-0.76x the scalar kernel's speed (20K to 2M codes at 3, 4 and 8 bits), two
# chunks at 1.06-1.15x, three at 1.46-1.64x; on a Zen 4 (2026-12-05) 0.74-0.92x, 1.20-1.28x
# and 1.59-1.74x.
AVX512_FEWEST = 2


def compiled_cpu() -> str:
    """The CPU numba compiles for: ``NUMBA_CPU_NAME``, or the host's."""
    import llvmlite.binding as llvm
    from numba.core import config

    named = getattr(config, "CPU_NAME", None)
    return str(named) if named not in (None, "host") else str(llvm.get_host_cpu_name())


def fewest_chunks() -> int:
    """The fewest v2 chunks a run must hold to take the vector loop (fewer go to the scalar
    kernel): ``AVX512_FEWEST`` with AVX-512, ``GROUP`` on CPUs that split AVX2
    (``_SPLIT_AVX2``), else 1."""
    if available():
        return AVX512_FEWEST
    return GROUP if compiled_cpu() in _SPLIT_AVX2 else 1


def usable() -> bool:
    """Whether the vector loops run here: AVX-512, or AVX2 with ``refill``."""
    return available() or compiled_features().get("avx2", False)


def _vector(builder: ir.IRBuilder, scalar: ir.Value, ty: ir.Type) -> ir.Value:
    """``scalar`` in every lane of a vector of ``LANES``."""
    vty = ir.VectorType(ty, LANES)
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(_I32, 0))
    zeros = ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), zeros)


def _const(value: int | list[int], ty: ir.Type = _I64) -> ir.Constant:
    values = value if isinstance(value, list) else [value] * LANES
    return ir.Constant(ir.VectorType(ty, len(values)), [ir.Constant(ty, v) for v in values])


def _half(value: int) -> ir.Constant:
    """``value`` in each of 4 bytes (a round's nibble pairs)."""
    return ir.Constant(ir.VectorType(_I8, LANES // 2), [ir.Constant(_I8, value)] * (LANES // 2))


def arguments(context, builder, signature, args) -> tuple[list[list[cgutils.Structure]],
                                                         list[cgutils.Structure]]:  # fmt: skip
    """A round loop's arguments as array structures: its first four (tuples of ``K`` arrays,
    one list each; an empty list for None) and the next four (arrays)."""

    def array(i: int, value: ir.Value, member: bool = False) -> cgutils.Structure:
        ty = signature.args[i].dtype if member else signature.args[i]
        return context.make_array(ty)(context, builder, value)

    count = signature.args[0].count
    # A tuple given as None (``lows`` of a loop that reads no low bits) has no arrays.
    tuples = [[array(i, builder.extract_value(args[i], k), True) for k in range(count)]
              if isinstance(signature.args[i], types.BaseTuple) else []
              for i in range(4)]  # fmt: skip
    return tuples, [array(i, args[i]) for i in range(4, 8)]


def declare(module: ir.Module, table: ir.Type, words: ir.Type) -> tuple[ir.Function, ...]:
    """The intrinsics every round loop calls: a gather of 8 table words (``table`` the type of
    a pointer into the table), the expanding load of 32-bit words (``words`` the type of a
    pointer into them) and an 8-bit population count."""
    v64, v32 = ir.VectorType(_I64, LANES), ir.VectorType(_I32, LANES)
    vbool, vptr = ir.VectorType(_I1, LANES), ir.VectorType(table, LANES)
    gather = cgutils.get_or_insert_function(
        module, ir.FunctionType(v64, [vptr, _I32, vbool, v64]), "llvm.masked.gather.v8i64.v8p0"
    )
    expand = cgutils.get_or_insert_function(
        module, ir.FunctionType(v32, [words, vbool, v32]), "llvm.masked.expandload.v8i32"
    )
    ctpop = cgutils.get_or_insert_function(module, ir.FunctionType(_I8, [_I8]), "llvm.ctpop.i8")
    return gather, expand, ctpop


def renormalised(builder: ir.IRBuilder, expand: ir.Function, ctpop: ir.Function, x: ir.Value,
                 words: ir.Value, pos: ir.Value) -> tuple[ir.Value, ir.Value]:  # fmt: skip
    """The 8 states ``x`` after renormalisation and the next word: each state below ``L``
    takes the next word (``words[pos]`` on, in lane order, as the scalar decoder reads them)
    as its low half."""
    v64, v32 = ir.VectorType(_I64, LANES), ir.VectorType(_I32, LANES)
    under = builder.icmp_unsigned("<", x, _const(int(_L)))
    word = builder.call(expand, [builder.gep(words, [pos]), under, ir.Constant(v32, None)])
    refilled = builder.or_(builder.shl(x, _const(32)), builder.zext(word, v64))
    read = builder.zext(builder.call(ctpop, [builder.bitcast(under, _I8)]), _I64)
    return builder.select(under, refilled, x), builder.add(pos, read)


# For each mask of the states below ``L`` (bit ``i``: lane ``i``), the index among the next 8
# words of the word each such lane takes: the number of such lanes before it. AVX2 has no
# expanding load; a permutation by this row is the same (``refilled``).
REFILL_ROWS = np.array([bin(m & ((1 << i) - 1)).count("1") for m in range(256)
                        for i in range(LANES)], dtype=np.uint8)  # fmt: skip
REFILL_ROWS.flags.writeable = False


def refilled(builder: ir.IRBuilder, ctpop: ir.Function, x: ir.Value, words: ir.Value,
             pos: ir.Value, rows: ir.Value) -> tuple[ir.Value, ir.Value]:  # fmt: skip
    """``renormalised`` without the expanding load: the next 8 words (the round loops stop
    while 8 are left) permuted by the row of ``REFILL_ROWS`` (``rows`` points to it) for the
    lanes below ``L`` (``vpermd``)."""
    v64, v32 = ir.VectorType(_I64, LANES), ir.VectorType(_I32, LANES)
    permute = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v32, [v32, v32]), "llvm.x86.avx2.permd"
    )
    under = builder.icmp_unsigned("<", x, _const(int(_L)))
    mask = builder.bitcast(under, _I8)
    row = builder.gep(rows, [builder.mul(builder.zext(mask, _I64), ir.Constant(_I64, LANES))])
    index = builder.zext(builder.load(builder.bitcast(row, ir.VectorType(_I8, LANES).as_pointer()),
                                      align=1), v32)  # fmt: skip
    next_words = builder.load(builder.bitcast(builder.gep(words, [pos]), v32.as_pointer()), align=4)
    word = builder.call(permute, [next_words, index])
    refilled_x = builder.or_(builder.shl(x, _const(32)), builder.zext(word, v64))
    read = builder.zext(builder.call(ctpop, [mask]), _I64)
    return builder.select(under, refilled_x, x), builder.add(pos, read)


PARAMS = 3  # per chunk: precision, raw bits, what is added to a nibble


def _make_rounds(nibbles: bool) -> object:
    """The round loop's intrinsic, storing codes (``nibbles`` False) or nibbles."""

    @intrinsic
    def rounds_intrinsic(typingctx, words, tables, lows, outs, states, pos, base, params, limit,
                         refill):  # fmt: skip
        return _rounds_codegen(nibbles, words, tables, lows, outs, states, pos, base, params,
                               limit, refill)  # fmt: skip

    return rounds_intrinsic


def _rounds_codegen(nibbles, words, tables, lows, outs, states, pos, base, params, limit,
                    refill):  # fmt: skip
    """Up to ``limit`` rounds of each of the ``K`` chunks (tuples of their words, tables, low
    bits and outputs); ``states`` (8 per chunk), ``pos`` (the next word) are updated in place,
    ``base`` (the rounds done before) read, ``params`` = ``PARAMS`` per chunk. Returns the
    rounds done. ``refill`` None: the expanding load (AVX-512); ``REFILL_ROWS``: ``refilled``
    (AVX2). A type, so each form is its own signature (and its own entry of numba's cache).
    ``lows`` None: no chunk has low bits, and the loop reads none (5-7% less time a code on
    a Zen 3 with AVX2; 4-bit codes have none, 8-bit codes mostly none or one)."""
    k_count = words.count
    permuted = isinstance(refill, types.Array)
    low_free = isinstance(lows, types.NoneType)
    sig = types.int64(words, tables, lows, outs, states, pos, base, params, limit, refill)
    out_type = ir.IntType(outs.dtype.dtype.bitwidth)

    def codegen(context, builder, signature, args):
        (w_arrays, t_arrays, l_arrays, o_arrays), (state_a, pos_a, base_a, param_a) = arguments(
            context, builder, signature, args)  # fmt: skip
        limit_v = args[8]
        rows = context.make_array(signature.args[9])(context, builder, args[9]).data if (
            permuted) else None  # fmt: skip
        v64 = ir.VectorType(_I64, LANES)
        vbool, vout = ir.VectorType(_I1, LANES), ir.VectorType(out_type, LANES)
        vptr = ir.VectorType(t_arrays[0].data.type, LANES)
        gather, expand, ctpop = declare(builder.module, t_arrays[0].data.type,
                                        w_arrays[0].data.type)  # fmt: skip
        state_ptr = builder.bitcast(state_a.data, v64.as_pointer())

        def load(a: cgutils.Structure, i: int) -> ir.Value:
            return builder.load(builder.gep(a.data, [ir.Constant(_I64, i)]))

        slots = []
        v8 = ir.VectorType(_I8, LANES)
        for k in range(k_count):
            precision, raw_bits = load(param_a, PARAMS * k), load(param_a, PARAMS * k + 1)
            add = _vector(builder, builder.trunc(load(param_a, PARAMS * k + 2), _I8), _I8)
            prec_v = _vector(builder, precision, _I64)
            raw_v = _vector(builder, raw_bits, _I64)
            slots.append({
                "x": builder.load(builder.gep(state_ptr, [ir.Constant(_I64, k)]), align=8),
                "pos": load(pos_a, k),
                "last": builder.sub(builder.extract_value(w_arrays[k].shape, 0), _I64(LANES)),
                "base": load(base_a, k),
                "raw": raw_bits,
                "prec": prec_v,
                "mask": builder.sub(builder.shl(_const(1), prec_v), _const(1)),
                "table": _vector(builder, builder.ptrtoint(t_arrays[k].data, _I64), _I64),
                "shifts": builder.mul(raw_v, _const(list(range(LANES)))),
                "low_mask": builder.sub(builder.shl(_const(1), raw_v), _const(1)),
                "add": add,
            })  # fmt: skip
        start = builder.block
        head = builder.append_basic_block("rans.head")
        body = builder.append_basic_block("rans.body")
        done = builder.append_basic_block("rans.done")
        builder.branch(head)
        builder.position_at_end(head)
        r = builder.phi(_I64)
        r.add_incoming(ir.Constant(_I64, 0), start)
        for s in slots:
            s["x_phi"], s["pos_phi"] = builder.phi(v64), builder.phi(_I64)
            s["x_phi"].add_incoming(s["x"], start)
            s["pos_phi"].add_incoming(s["pos"], start)
        more = builder.icmp_signed("<", r, limit_v)
        for s in slots:  # 8 words left: the expanding load stays inside the chunk
            more = builder.and_(more, builder.icmp_signed("<=", s["pos_phi"], s["last"]))
        builder.cbranch(more, body, done)
        builder.position_at_end(body)
        for k, s in enumerate(slots):
            x, pos = s["x_phi"], s["pos_phi"]
            at = builder.add(s["base"], r)  # the chunk's round
            address = builder.add(s["table"], builder.shl(builder.and_(x, s["mask"]), _const(3)))
            every = ir.Constant(vbool, [ir.Constant(_I1, 1)] * LANES)
            e = builder.call(gather, [builder.inttoptr(address, vptr), ir.Constant(_I32, 8), every,
                                      ir.Constant(v64, ir.Undefined)])  # fmt: skip
            codes = builder.lshr(e, _const(32))
            if not low_free:
                low_at = builder.gep(l_arrays[k].data, [builder.mul(at, s["raw"])])
                low_word = builder.load(builder.bitcast(low_at, _I64.as_pointer()), align=1)
                codes = builder.or_(codes, builder.and_(
                    builder.lshr(_vector(builder, low_word, _I64), s["shifts"]), s["low_mask"]))
            codes = builder.trunc(codes, vout)
            if nibbles:  # 8 codes (uint8) + add, low nibble first: 4 bytes
                values = builder.and_(builder.add(codes, s["add"]), _const(0xF, _I8))
                low_half = builder.shuffle_vector(values, ir.Constant(v8, ir.Undefined),
                                                  _const([0, 2, 4, 6], _I32))  # fmt: skip
                high_half = builder.shuffle_vector(values, ir.Constant(v8, ir.Undefined),
                                                   _const([1, 3, 5, 7], _I32))  # fmt: skip
                codes = builder.or_(low_half, builder.shl(high_half, _half(4)))
            width = LANES // 2 if nibbles else LANES
            out_at = builder.gep(o_arrays[k].data, [builder.mul(at, ir.Constant(_I64, width))])
            builder.store(codes, builder.bitcast(out_at, codes.type.as_pointer()), align=1)
            freq = builder.and_(e, _const(0xFFFF))
            bias = builder.and_(builder.lshr(e, _const(16)), _const(0xFFFF))
            x = builder.add(builder.mul(freq, builder.lshr(x, s["prec"])), bias)
            if permuted:
                x, pos = refilled(builder, ctpop, x, w_arrays[k].data, pos, rows)
            else:
                x, pos = renormalised(builder, expand, ctpop, x, w_arrays[k].data, pos)
            s["x_phi"].add_incoming(x, body)
            s["pos_phi"].add_incoming(pos, body)
        r.add_incoming(builder.add(r, ir.Constant(_I64, 1)), body)
        builder.branch(head)
        builder.position_at_end(done)
        for k, s in enumerate(slots):
            builder.store(s["x_phi"], builder.gep(state_ptr, [ir.Constant(_I64, k)]), align=8)
            builder.store(s["pos_phi"], builder.gep(pos_a.data, [ir.Constant(_I64, k)]))
        return r

    return sig, codegen


_rounds = _make_rounds(False)
_rounds_nibbles = _make_rounds(True)


@_jit
def rounds(words, tables, lows, outs, states, pos, base, params, limit, refill=None):
    """``_rounds_codegen`` (see there), callable from Python with tuples of ``K`` arrays."""
    return _rounds(words, tables, lows, outs, states, pos, base, params, limit, refill)  # type: ignore[operator]


@_jit
def rounds_nibbles(words, tables, lows, outs, states, pos, base, params, limit, refill=None):
    """``rounds`` storing each round's codes as 4 bytes of nibbles."""
    return _rounds_nibbles(words, tables, lows, outs, states, pos, base, params, limit,
                           refill)  # type: ignore[operator]


@_jit
def finish(words, table, out, packed, raw_bits, states, pos, start, precision, low_from):
    """Decode the codes of a chunk from ``start`` (a multiple of 8: the rounds done) with the
    8 ``states`` and the next word ``pos``, then OR in the low bits of the codes from
    ``low_from`` (a multiple of 8); True if the chunk ends as it must (every state back at
    ``L``, every word read)."""
    mask = np.uint64((1 << precision) - 1)
    prec = np.uint64(precision)
    last = words.size - 1
    f16 = np.uint64(0xFFFF)
    for i in range(start, out.size):
        x = states[i % LANES]
        e = table[x & mask]
        out[i] = e >> _32
        x = (e & f16) * (x >> prec) + ((e >> np.uint64(16)) & f16)
        if x < _L:
            x = x << _32 | np.uint64(words[min(pos, last)])
            pos += 1
        states[i % LANES] = x
    if raw_bits and low_from < out.size:
        or_low(out[low_from:], packed[(low_from // LANES) * raw_bits :], raw_bits)
    return _ended(states, pos, words.size)


@_jit
def finish_nibbles(words, table, out, packed, raw_bits, states, pos, start, precision, count,
                   add):  # fmt: skip
    """``finish`` for a chunk of ``count`` codes stored as nibbles (``rounds_nibbles``) in
    ``out`` (``ceil(count / 2)`` bytes): the codes from ``start`` (the rounds done, their low
    bits not yet ORed in) are decoded, then packed with ``add``."""
    codes = np.empty(count, dtype=np.uint8)
    ok = finish(words, table, codes, packed, raw_bits, states, pos, start, precision, start)
    pack_nibbles(codes[start:], add, out[start // 2 :])
    return ok
