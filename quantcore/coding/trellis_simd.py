"""The decoder of streams ``QENT`` v5 to v8 and v10 to v13 on vectors: a chunk's 8 lanes in
one 512-bit register, several chunks advanced together.

A lane's step (``trellis_kernels._take``) is a chain of dependent loads: the context of a
code needs the trellis state and the magnitudes the codes before it left, its table entry
needs the context, and the next state needs the entry's parity. Scalar, the 8 lanes take
turns on one core, 30 cycles or so a code. Here a round decodes the 8 lanes' next codes at
once: the class of each lane's magnitude sum (its bit length, capped at ``K - 1``: exactly
``context.class_table``), one gather of the 8 table entries, the codes scattered to their
lanes' segments (a mirrored stream's turned back on the way), the next states and their
quantizers from two register permutations of ``nexts`` (``trellis_batch.next_states``),
the rANS update, and the words of the states that fell below ``L`` loaded in lane order
(``rans_simd.renormalised``: the order the scalar decoder reads them in). ``K`` chunks (up
to ``GROUP``) take turns in one loop so that ``K`` chains are in flight. The stream format
is unchanged.

LLVM lowers this to AVX-512; ``rans_simd.available`` says whether the CPU has it. With AVX2
alone (``rans_simd.usable``), the loop takes ``rans_simd.REFILL_ROWS`` as ``refill``: the
states are refilled by a permutation (``rans_simd.refilled``) and the next states gathered
from ``nexts``; LLVM splits its vectors into 256-bit halves and writes the codes one by one.
The codes are the same. The loop stops for every chunk as soon as one has fewer than 8 words
left or ``limit`` rounds are done; ``trellis_kernels.decode_rest`` finishes a chunk from where
the loop left it (``trellis_batch`` drives both).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from quantcore.coding.rans_chunks import STATES
from quantcore.coding.rans_kernels import LANES
from quantcore.coding.rans_simd import (
    _const,
    _vector,
    arguments,
    declare,
    refilled,
    renormalised,
)
from quantcore.coding.trellis_kernels import FIELDS, decode_rest, first_lanes, mirror_from
from quantcore.jit import cgutils, intrinsic, njit, types

GROUP = 2  # chunks advanced together: with 4, their registers spill and it is no faster
# Per chunk: precision, the magnitude classes' cap, code_min, whether the stream is mirrored,
# each lane's first code.
PARAMS = 4 + LANES
_I1, _I32, _I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@intrinsic
def _rounds(typingctx, words, tables, nexts, outs, lanes, pos, base, params, limit, refill):
    return _rounds_codegen(words, tables, nexts, outs, lanes, pos, base, params, limit, refill)


def _rounds_codegen(words, tables, nexts, outs, lanes, pos, base, params, limit, refill):
    """Up to ``limit`` rounds of each of the ``K`` chunks (tuples of their words, decoder
    tables, next-state tables and outputs); ``lanes`` (``FIELDS`` × 8 per chunk) and ``pos``
    (the next word) are updated in place, ``base`` (the rounds done before) read, ``params``
    = ``PARAMS`` per chunk. Returns the rounds done. ``refill`` None: AVX-512 (the expanding
    load, the next states from register permutations); ``rans_simd.REFILL_ROWS``: AVX2 (the
    states refilled by ``rans_simd.refilled``, the next states gathered from ``nexts``)."""
    k_count = words.count
    permuted = isinstance(refill, types.Array)
    sig = types.int64(words, tables, nexts, outs, lanes, pos, base, params, limit, refill)
    out_type = ir.IntType(outs.dtype.dtype.bitwidth)
    out_bytes = outs.dtype.dtype.bitwidth // 8

    def codegen(context, builder, signature, args):
        (w_arrays, t_arrays, n_arrays, o_arrays), (lanes_a, pos_a, base_a, param_a) = arguments(
            context, builder, signature, args)  # fmt: skip
        limit_v = args[8]
        rows = context.make_array(signature.args[9])(context, builder, args[9]).data if (
            permuted) else None  # fmt: skip
        module = builder.module
        v64, v32 = ir.VectorType(_I64, LANES), ir.VectorType(_I32, LANES)
        vbool, vout = ir.VectorType(_I1, LANES), ir.VectorType(out_type, LANES)
        vptr = ir.VectorType(t_arrays[0].data.type, LANES)
        gather, expand, ctpop = declare(module, t_arrays[0].data.type, w_arrays[0].data.type)
        scatter = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [vout, vptr, _I32, vbool]),
            f"llvm.masked.scatter.v8i{out_type.width}.v8p0",
        )  # fmt: skip
        ctlz = cgutils.get_or_insert_function(module, ir.FunctionType(v64, [v64, _I1]),
                                              "llvm.ctlz.v8i64")  # fmt: skip
        v16 = ir.VectorType(_I32, 16)
        permute = cgutils.get_or_insert_function(
            module, ir.FunctionType(v16, [v16, v16, v16]), "llvm.x86.avx512.vpermi2var.d.512"
        )  # two registers of 16 entries, looked up by each lane's index (vpermi2d)
        next_ptr = ir.VectorType(n_arrays[0].data.type, LANES)
        gather32 = cgutils.get_or_insert_function(
            module, ir.FunctionType(v32, [next_ptr, _I32, vbool, v32]),
            "llvm.masked.gather.v8i32.v8p0",
        )  # fmt: skip
        lane_ptr = builder.bitcast(lanes_a.data, v64.as_pointer())
        every = ir.Constant(vbool, [ir.Constant(_I1, 1)] * LANES)

        def load(a: cgutils.Structure, i: int) -> ir.Value:
            return builder.load(builder.gep(a.data, [ir.Constant(_I64, i)]))

        def address(a: cgutils.Structure) -> ir.Value:
            return _vector(builder, builder.ptrtoint(a.data, _I64), _I64)

        slots = []
        for k in range(k_count):
            at = PARAMS * k
            precision = load(param_a, at)
            firsts = [load(param_a, at + 4 + lane) for lane in range(LANES)]
            first_v = ir.Constant(v64, ir.Undefined)
            for lane, value in enumerate(firsts):
                first_v = builder.insert_element(first_v, value, ir.Constant(_I32, lane))
            prec_v = _vector(builder, precision, _I64)
            fields = [builder.load(builder.gep(lane_ptr, [ir.Constant(_I64, FIELDS * k + f)]),
                                   align=8) for f in range(FIELDS)]  # fmt: skip
            slots.append({
                "fields": fields,
                "pos": load(pos_a, k),
                "last": builder.sub(builder.extract_value(w_arrays[k].shape, 0), _I64(LANES)),
                "base": load(base_a, k),
                "prec": prec_v,
                "mask": builder.sub(builder.shl(_const(1), prec_v), _const(1)),
                "cap": _vector(builder, load(param_a, at + 1), _I64),
                "code_min": _vector(builder, load(param_a, at + 2), _I64),
                "mirrored": _vector(builder, load(param_a, at + 3), _I64),
                "table": address(t_arrays[k]),
                "nexts": None if permuted else [
                    builder.load(builder.gep(builder.bitcast(n_arrays[k].data, v16.as_pointer()),
                                             [ir.Constant(_I64, i)]), align=4)
                    for i in range(4)],
                "nexts_at": address(n_arrays[k]) if permuted else None,
                "out": builder.add(address(o_arrays[k]),
                                   builder.mul(first_v, _const(out_bytes))),
            })  # fmt: skip
        start = builder.block
        head = builder.append_basic_block("trellis.head")
        body = builder.append_basic_block("trellis.body")
        done = builder.append_basic_block("trellis.done")
        builder.branch(head)
        builder.position_at_end(head)
        r = builder.phi(_I64)
        r.add_incoming(ir.Constant(_I64, 0), start)
        for s in slots:
            s["phis"] = [builder.phi(v64) for _ in range(FIELDS)]
            for phi, value in zip(s["phis"], s["fields"], strict=True):
                phi.add_incoming(value, start)
            s["pos_phi"] = builder.phi(_I64)
            s["pos_phi"].add_incoming(s["pos"], start)
        more = builder.icmp_signed("<", r, limit_v)
        for s in slots:  # 8 words left: the expanding load stays inside the chunk
            more = builder.and_(more, builder.icmp_signed("<=", s["pos_phi"], s["last"]))
        builder.cbranch(more, body, done)
        builder.position_at_end(body)
        for k, s in enumerate(slots):
            x, t, q, d1, d2, negative = s["phis"]
            pos = s["pos_phi"]
            bits = builder.sub(_const(64), builder.call(ctlz, [builder.add(d1, d2),
                                                               ir.Constant(_I1, 0)]))  # fmt: skip
            cls = builder.select(builder.icmp_unsigned("<", bits, s["cap"]), bits, s["cap"])
            row = builder.add(q, cls)  # q: the quantizer times the classes
            slot = builder.or_(builder.shl(row, s["prec"]), builder.and_(x, s["mask"]))
            where = builder.add(s["table"], builder.shl(slot, _const(3)))
            e = builder.call(gather, [builder.inttoptr(where, vptr), ir.Constant(_I32, 8), every,
                                      ir.Constant(v64, ir.Undefined)])  # fmt: skip
            at = builder.add(s["base"], r)  # each lane's code in its segment
            out_at = builder.add(s["out"], _vector(builder, builder.mul(at, _I64(out_bytes)),
                                                   _I64))  # fmt: skip
            # A mirrored stream's code after a negative index is its level's mirror (as
            # trellis_kernels.mirror): turned back here, the lane's sign carried along.
            coded = builder.and_(builder.lshr(e, _const(32)), _const(0xFFFF))
            turned = builder.sub(builder.sub(_const(0), coded),
                                 builder.add(s["code_min"], s["code_min"]))  # fmt: skip
            code = builder.select(builder.trunc(negative, vbool), turned, coded)
            level = builder.add(code, s["code_min"])
            below = builder.zext(builder.icmp_signed("<", level, _const(0)), v64)
            zero = builder.zext(builder.icmp_signed("==", level, _const(0)), v64)
            negative = builder.and_(builder.or_(below, builder.and_(zero, negative)),
                                    s["mirrored"])  # fmt: skip
            codes = builder.trunc(code, vout)
            builder.call(scatter, [codes, builder.inttoptr(out_at, vptr),
                                   ir.Constant(_I32, out_bytes), every])  # fmt: skip
            parity = builder.and_(builder.lshr(e, _const(48)), _const(1))
            if permuted:  # nexts[STATES * parity + t], one gather
                entry = builder.or_(builder.shl(parity, _const(STATES.bit_length() - 1)), t)
                n = builder.zext(builder.call(gather32, [
                    builder.inttoptr(builder.add(s["nexts_at"], builder.shl(entry, _const(2))),
                                     next_ptr),
                    ir.Constant(_I32, 4), every, ir.Constant(v32, ir.Undefined)]), v64)
            else:
                index = builder.shuffle_vector(builder.trunc(t, v32),
                                               ir.Constant(v32, ir.Undefined),
                                               _const(list(range(LANES)) * 2, _I32))
                low, high = (builder.call(permute, [a, index, b]) for a, b in
                             (s["nexts"][:2], s["nexts"][2:]))
                first8 = _const(list(range(LANES)), _I32)
                low8, high8 = (builder.shuffle_vector(v, ir.Constant(v16, ir.Undefined), first8)
                               for v in (low, high))
                odd = builder.icmp_unsigned("!=", parity, _const(0))
                n = builder.zext(builder.select(odd, high8, low8), v64)
            freq = builder.add(builder.and_(e, _const(0xFFFF)), _const(1))
            bias = builder.and_(builder.lshr(e, _const(16)), _const(0xFFFF))
            x = builder.add(builder.mul(freq, builder.lshr(x, s["prec"])), bias)
            if permuted:
                x, pos = refilled(builder, ctpop, x, w_arrays[k].data, pos, rows)
            else:
                x, pos = renormalised(builder, expand, ctpop, x, w_arrays[k].data, pos)
            new = [x, builder.and_(n, _const(0xFF)), builder.lshr(n, _const(8)),
                   builder.lshr(e, _const(56)), d1, negative]  # fmt: skip
            for phi, value in zip(s["phis"], new, strict=True):
                phi.add_incoming(value, body)
            s["pos_phi"].add_incoming(pos, body)
        r.add_incoming(builder.add(r, ir.Constant(_I64, 1)), body)
        builder.branch(head)
        builder.position_at_end(done)
        for k, s in enumerate(slots):
            for f, phi in enumerate(s["phis"]):
                builder.store(phi, builder.gep(lane_ptr, [ir.Constant(_I64, FIELDS * k + f)]),
                              align=8)  # fmt: skip
            builder.store(s["pos_phi"], builder.gep(pos_a.data, [ir.Constant(_I64, k)]))
        return r

    return sig, codegen


@_jit
def rounds(words, tables, nexts, outs, lanes, pos, base, params, limit, refill=None):
    """``_rounds_codegen`` (see there), callable from Python with tuples of ``K`` arrays."""
    return _rounds(words, tables, nexts, outs, lanes, pos, base, params, limit, refill)  # type: ignore[call-arg]


@_jit
def start_chunk(words, starts, classes, transitions, quantizers, precision, mirrored,
                mirror_min, n, lanes, params):  # fmt: skip
    """A chunk of ``n`` codes before its first round: each lane's state in ``lanes``
    (``trellis_kernels.first_lanes``) and the chunk's ``PARAMS`` in ``params``."""
    k_classes = classes[classes.size - 1] + 1
    first_lanes(words, starts, transitions, quantizers, k_classes, lanes)
    q, r = n // LANES, n % LANES
    params[0] = precision
    params[1] = k_classes - 1
    params[2] = mirror_min if mirrored else 0
    params[3] = mirrored
    for lane in range(LANES):
        params[4 + lane] = lane * q + min(lane, r)


@njit(inline="always")
def _finish_chunk(words, table, nexts, classes, transitions, quantizers, precision, mirrored,
                  mirror_min, out, lanes, params, pos, done, refill):  # fmt: skip
    """A started chunk's rounds after the ``done`` it had beside another chunk (none for a
    chunk alone), its word at ``pos[0]``, then ``decode_rest`` and the turning back of a
    mirrored stream's codes. Returns True if the chunk ended as it must."""
    q = out.size // LANES
    if done < q and pos[0] <= words.size - LANES:
        done += _rounds((words,), (table,), (nexts,), (out,), lanes, pos,
                        np.full(1, done, dtype=np.int64), params, q - done, refill)  # type: ignore[call-arg]
    ok = decode_rest(words, precision, classes, transitions, quantizers, table, out, lanes,
                     pos[0], done)  # fmt: skip
    if ok and mirrored:
        mirror_from(out, mirror_min, done, lanes)
    return ok


@_jit
def decode_alone(words, starts, table, nexts, classes, transitions, quantizers, precision,
                 mirrored, mirror_min, out, refill=None):  # fmt: skip
    """One chunk from its first code to its last: ``trellis_kernels.first_lanes``, the
    rounds, ``decode_rest`` and, if ``mirrored``, the codes turned back (``mirror_min`` the
    stream's ``code_min``), in one call: driven from Python, as several chunks are, their
    calls and bookkeeping took a third of a small tensor's time. Returns True if the chunk
    ended as it must."""
    lanes = np.empty(FIELDS * LANES, dtype=np.uint64)
    params = np.empty(PARAMS, dtype=np.int64)
    start_chunk(words, starts, classes, transitions, quantizers, precision, mirrored,
                mirror_min, out.size, lanes, params)  # fmt: skip
    return _finish_chunk(words, table, nexts, classes, transitions, quantizers, precision,
                         mirrored, mirror_min, out, lanes, params,
                         np.full(1, 2 * LANES, dtype=np.int64), 0, refill)  # fmt: skip


@_jit
def decode_pair(words_a, starts_a, out_a, words_b, starts_b, out_b, table, nexts, classes,
                transitions, quantizers, precision, mirrored, mirror_min, refill=None):  # fmt: skip
    """The two chunks of a stream (one table) in one call: their rounds together while both
    have codes and words left (two chains in flight: 1.4-1.8 times one chunk's speed), then
    each finished alone (``_finish_chunk``). Driven from Python (``trellis_batch._run``), the
    calls and bookkeeping took about 20 µs a tensor. Returns 0 if both ended as they must,
    else 1 + the index of the first that did not."""
    lanes_a = np.empty(FIELDS * LANES, dtype=np.uint64)
    lanes_b = np.empty(FIELDS * LANES, dtype=np.uint64)
    params_a = np.empty(PARAMS, dtype=np.int64)
    params_b = np.empty(PARAMS, dtype=np.int64)
    start_chunk(words_a, starts_a, classes, transitions, quantizers, precision, mirrored,
                mirror_min, out_a.size, lanes_a, params_a)  # fmt: skip
    start_chunk(words_b, starts_b, classes, transitions, quantizers, precision, mirrored,
                mirror_min, out_b.size, lanes_b, params_b)  # fmt: skip
    pos_a = np.full(1, 2 * LANES, dtype=np.int64)
    pos_b = np.full(1, 2 * LANES, dtype=np.int64)
    together = min(out_a.size, out_b.size) // LANES
    done = 0
    if together > 0 and min(words_a.size, words_b.size) >= 3 * LANES:  # 8 words past the states
        lanes = np.concatenate((lanes_a, lanes_b))
        pos = np.full(2, 2 * LANES, dtype=np.int64)
        done = _rounds((words_a, words_b), (table, table), (nexts, nexts), (out_a, out_b),
                       lanes, pos, np.zeros(2, dtype=np.int64),
                       np.concatenate((params_a, params_b)), together, refill)  # type: ignore[call-arg]
        lanes_a[:] = lanes[: FIELDS * LANES]
        lanes_b[:] = lanes[FIELDS * LANES :]
        pos_a[0], pos_b[0] = pos[0], pos[1]
    if not _finish_chunk(words_a, table, nexts, classes, transitions, quantizers, precision,
                         mirrored, mirror_min, out_a, lanes_a, params_a, pos_a, done, refill):
        return 1
    if not _finish_chunk(words_b, table, nexts, classes, transitions, quantizers, precision,
                         mirrored, mirror_min, out_b, lanes_b, params_b, pos_b, done, refill):
        return 2
    return 0
