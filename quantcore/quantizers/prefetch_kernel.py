"""A software prefetch for the kernels that walk a weight across its rows.

Such a kernel reads a few hundred bytes of each row, rows kilobytes apart: the hardware's
prefetchers follow a stream of adjacent lines, not a column of short segments, so each
segment's first lines miss all the way to memory. ``prefetch`` asks for a line a few rows
ahead (LLVM's ``llvm.prefetch``: a hint, which loads nothing into a register and cannot
fault, so an index past the array's end is harmless).
"""

from __future__ import annotations

from llvmlite import ir

from quantcore.jit import cgutils, intrinsic, types

_I32, _I64 = ir.IntType(32), ir.IntType(64)


@intrinsic
def prefetch(typingctx, array, index):
    """Hint that the cache line of ``array[index]`` (a 1-D array, the index unchecked) will
    be read soon, into every level of the cache."""
    if not (isinstance(array, types.Array) and array.ndim == 1
            and isinstance(index, types.Integer)):  # fmt: skip
        return None
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        at = builder.zext(args[1], _I64) if args[1].type.width < 64 else args[1]
        address = builder.gep(data, [at])
        name = "llvm.prefetch.p0"
        if not address.type.is_opaque:  # a typed pointer: the intrinsic's form for i8*
            address, name = builder.bitcast(address, ir.IntType(8).as_pointer()), name + "i8"
        hint = ir.FunctionType(ir.VoidType(), [address.type, _I32, _I32, _I32])
        function = cgutils.get_or_insert_function(builder.module, hint, name)
        # read (0), keep in all levels (3), data rather than instructions (1)
        builder.call(function, [address, ir.Constant(_I32, 0), ir.Constant(_I32, 3),
                                ir.Constant(_I32, 1)])  # fmt: skip
        return context.get_dummy_value()

    return sig, codegen

