"""Role rules for one use, and how several uses (some through layout operators) combine."""

from __future__ import annotations

from quantcore.formats.roles import Layout, Role, Use, assign, assign_use


def test_einsum_and_attention_inputs():
    assert assign_use(Use(op_type="Einsum", slot=1), (8, 8)).role is Role.WEIGHT
    ms = {"op_type": "Attention", "domain": "com.microsoft"}
    weights = assign_use(Use(**ms, slot=1), (16, 48))
    assert (weights.role, weights.channel_axis, weights.block_axis) == (Role.WEIGHT, 1, 0)
    assert assign_use(Use(**ms, slot=2), (48,)).role is Role.BIAS
    assert assign_use(Use(op_type="Attention", slot=1), (2, 4, 8)).role is Role.WEIGHT
    assert assign_use(Use(op_type="Attention", slot=3), (4, 4)).role is Role.OTHER  # a mask


def test_axes_map_back_or_fall_back_to_none():
    through = Layout(ops=("Transpose",), shape=(32, 24), axes=(1, 0))
    mapped = assign_use(Use(op_type="MatMul", slot=1, layout=through), (24, 32))
    assert (mapped.channel_axis, mapped.block_axis) == (0, 1)
    assert mapped.used_by == "MatMul via Transpose"
    merged = Layout(ops=("Reshape", "Reshape"), shape=(32, 24), axes=None)
    lost = assign_use(Use(op_type="MatMul", slot=1, layout=merged), (4, 8, 24))
    assert (lost.role, lost.channel_axis, lost.block_axis, lost.used_by) == (
        Role.WEIGHT, None, None, "MatMul via Reshape")  # fmt: skip
    # A Conv's window follows its input channels only if the axes after them stay in order.
    kept = Layout(ops=("Concat",), shape=(8, 3, 3, 3), axes=(0, 1, 2, 3))
    conv = assign_use(Use(op_type="Conv", slot=1, layout=kept), (4, 3, 3, 3))
    assert (conv.block_axis, conv.block_trailing) == (1, True)
    swapped = Layout(ops=("Transpose",), shape=(8, 3, 3, 3), axes=(0, 1, 3, 2))
    assert not assign_use(Use(op_type="Conv", slot=1, layout=swapped), (8, 3, 3, 3)).block_trailing


def test_fallback_counts_only_when_nothing_else_gives_a_role():
    gather = Use(op_type="Gather", slot=0, fallback=True)
    path = Layout(ops=("Gather",), shape=(4, 4), axes=(1, 2))
    assert assign([Use(op_type="Mul", slot=1, layout=path), gather], (3, 4, 4)).role is Role.WEIGHT
    row = Layout(ops=("Gather",), shape=(1, 32), axes=(None, 1))
    bias = Use(op_type="LSTM", slot=3, layout=row)
    assert assign([bias, gather], (3, 32)).role is Role.BIAS
