"""The defaults a spec fills in where the caller names nothing: supports and block sizes.

Each rule was chosen on the outputs of ``bench/realmodels``' nine real models, not on the
weights' SQNR (the numbers beside each rule). ``quantcore.spec`` applies them.
"""

from __future__ import annotations

from quantcore.spec_names import Granularity, Method, Support

BLOCKED = (Granularity.GROUP, Granularity.AUTO)  # granularities that scale blocks of weights

# Granularity "auto" (the default): groups of 128 from 7 bits, 32 below, each keeping its whole
# range (first layers finer: quantcore.compress.auto_plan); chosen on bench/realmodels' outputs.
AUTO_GROUP_SIZE_HIGH = 128
AUTO_GROUP_SIZE_LOW = 32
AUTO_HIGH_BITS = 7
GROUP_DEFAULT_SUPPORT = Support.MAX_ABS
# Up to 3 bits, uniform blocks take the clip of least squared error instead: measured on
# bench/realmodels' nine models at 3 bits on two input sets, +1.25 dB of output SQNR on average
# (12 of 18 points better; captcha-ocr and silero-vad 1.2-2.5 dB worse), and at 4 bits mixed
# (-5.2 to +1.8 dB), where the whole range stays.
GROUP_MSE_MAX_BITS = 3
# Per channel, the uniform and dead-zone quantizers keep each channel's whole range from these
# bits on, Jayant's threshold below. Judged on bench/realmodels' nine models by output SQNR
# against Jayant's threshold (which clips the rare large weights real channels hold): uniform
# +4.1 dB on average at 5 bits (9 of 9 better), +2.0 at 6 (6 of 9), +11.4 at 7 (9 of 9), +9.3
# at 8 (8 of 9), even at 4 (5 of 9); dead-zone +4.4 at 4 bits (7 of 9), +0.4 at 3 (5 of 9).
CHANNEL_MAX_ABS_MIN_BITS = {Method.UNIFORM: 5, Method.DEADZONE: 4}


def group_support(method: Method, bits: int) -> Support:
    """The support a block of ``method`` at ``bits`` gets when the caller names none."""
    if method is Method.UNIFORM and bits <= GROUP_MSE_MAX_BITS:
        return Support.MSE
    return GROUP_DEFAULT_SUPPORT


def unnamed_support(method: Method, bits: int, granularity: Granularity) -> Support:
    """The support ``method`` at ``bits`` gets at ``granularity`` when the caller names none:
    the blocks' rule, the channels' rule, else the method's default (``DEFAULT_SUPPORT``)."""
    if granularity in BLOCKED:
        return group_support(method, bits)
    from_bits = CHANNEL_MAX_ABS_MIN_BITS.get(method)
    if granularity is Granularity.CHANNEL and from_bits and bits >= from_bits:
        return Support.MAX_ABS
    return DEFAULT_SUPPORT[method]


def auto_group_size(bits: int) -> int:
    """The group size granularity ``auto`` gives a tensor quantized at ``bits``."""
    return AUTO_GROUP_SIZE_HIGH if bits >= AUTO_HIGH_BITS else AUTO_GROUP_SIZE_LOW


# The support a method uses when the caller names none: the Laplacian MSE-optimal threshold
# for the uniform families, the whole range for the companding and floating-point ones.
DEFAULT_SUPPORT: dict[Method, Support] = {
    Method.UNIFORM: Support.JAYANT,
    Method.DEADZONE: Support.JAYANT,
    Method.MULAW: Support.MAX_ABS,
    Method.LOG: Support.MAX_ABS,
    Method.FLOAT: Support.MAX_ABS,
}
