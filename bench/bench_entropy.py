"""Entropy coding of quantized weights against zstd and plain bit packing.

Source: 50M unit-variance Laplacian weights (seeded), quantized by a uniform midrise quantizer
at R bits with the support sqrt(2)*ln(2**R) (the ``hui`` rule of API.md). For each R:

- ours: ``quantcore.coding.entropy.encode_codes`` / ``decode_codes`` (order-0 ANS), bits per weight
  and overhead against the empirical entropy, encode and decode throughput;
- baselines measured in the same run: ``quantcore.coding.packing.pack_bits`` at R bits, and zstd
  (``zstandard``, one thread) at levels 3 and 19 on the packed codes and on the raw
  uint8/uint16 codes; level 19 (about 5 MB/s) runs on the first ``--z19-sample`` codes only
  (8M by default, a window it cannot see past anyway: its window is 8 MB), its rate taken
  as the rate of the whole;
- size ratios ours / zstd, and our encode speed / zstd-3 speed on the packed codes;
- peak extra memory of encode and of decode (tracemalloc: NumPy and Python allocations, not the
  coder's own Rust buffers) as a multiple of the codes' size.

Run: ``python -m bench.bench_entropy [--n 50000000] [--bits 3 4 8 16] [--repeats 2]
[--z19-sample 8000000]``.
Writes ``bench/results/bench_entropy.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import numpy as np
import zstandard

from bench.common import Column, laplacian, peak_bytes, print_table, timed, write_results
from quantcore.coding.entropy import decode_codes, empirical_entropy_bits, encode_codes
from quantcore.coding.packing import pack_bits


@dataclass(frozen=True, kw_only=True)
class Row:
    bits: int
    raw_bits: int
    entropy_bits: float
    ours_bits_per_weight: float
    overhead_pct: float
    encode_mws: float
    decode_mws: float
    pack_mws: float
    zstd3_packed_bpw: float
    zstd19_packed_bpw: float
    zstd3_raw_bpw: float
    zstd19_raw_bpw: float
    zstd3_packed_mws: float
    size_vs_zstd3_packed: float
    size_vs_zstd19_packed: float
    size_vs_zstd19_raw: float
    encode_speed_vs_zstd3_packed: float
    encode_peak_x_codes: float
    decode_peak_x_codes: float


def laplacian_codes(n: int, bits: int, seed: int = 0) -> np.ndarray:
    weights = laplacian(n, seed=seed)
    levels = 1 << bits
    xmax = np.sqrt(2.0) * np.log(levels)
    step = np.float32(2 * xmax / levels)
    codes = np.floor(weights / step)
    codes += levels // 2
    np.clip(codes, 0, levels - 1, out=codes)
    return codes.astype(np.uint8 if bits <= 8 else np.uint16)


def zstd(data: bytes, level: int) -> bytes:
    return zstandard.ZstdCompressor(level=level, threads=0).compress(data)


def measure(n: int, bits: int, repeats: int, z19_sample: int) -> Row:
    codes = laplacian_codes(n, bits)
    entropy = empirical_entropy_bits(codes)
    encoded = timed(lambda: encode_codes(codes), repeats)
    stream, t_enc = encoded.result, encoded.seconds
    decoded = timed(lambda: decode_codes(stream), repeats)
    if not np.array_equal(decoded.result, codes):
        raise RuntimeError(f"round trip failed at {bits=}")
    t_dec = decoded.seconds
    del decoded
    packing = timed(lambda: pack_bits(codes, bits), repeats)
    packed, t_pack = packing.result, packing.seconds
    raw = codes.tobytes()
    z3 = timed(lambda: zstd(packed, 3), repeats)
    z3_packed, t_z3 = z3.result, z3.seconds
    head = min(n, z19_sample) // 8 * 8  # whole bytes of packed codes
    z19_scale = n / head
    z19_packed = zstd(packed[: head * bits // 8], 19)
    z3_raw = zstd(raw, 3)
    z19_raw = zstd(raw[: head * codes.itemsize], 19)
    enc_peak = peak_bytes(lambda: encode_codes(codes))
    dec_peak = peak_bytes(lambda: decode_codes(stream))

    def bpw(blob: bytes, scale: float = 1.0) -> float:
        return 8 * len(blob) * scale / n

    ours = bpw(stream)
    return Row(
        bits=bits,
        raw_bits=stream[6],
        entropy_bits=entropy,
        ours_bits_per_weight=ours,
        overhead_pct=100 * (ours / entropy - 1),
        encode_mws=n / t_enc / 1e6,
        decode_mws=n / t_dec / 1e6,
        pack_mws=n / t_pack / 1e6,
        zstd3_packed_bpw=bpw(z3_packed),
        zstd19_packed_bpw=bpw(z19_packed, z19_scale),
        zstd3_raw_bpw=bpw(z3_raw),
        zstd19_raw_bpw=bpw(z19_raw, z19_scale),
        zstd3_packed_mws=n / t_z3 / 1e6,
        size_vs_zstd3_packed=len(stream) / len(z3_packed),
        size_vs_zstd19_packed=len(stream) / (len(z19_packed) * z19_scale),
        size_vs_zstd19_raw=len(stream) / (len(z19_raw) * z19_scale),
        encode_speed_vs_zstd3_packed=t_z3 / t_enc,
        encode_peak_x_codes=enc_peak / codes.nbytes,
        decode_peak_x_codes=dec_peak / codes.nbytes,
    )


COLUMNS = (
    Column(header="R", field="bits", width=3),
    Column(header="k", field="raw_bits", width=2),
    Column(header="H", field="entropy_bits", width=7, spec=".4f"),
    Column(header="ours", field="ours_bits_per_weight", width=7, spec=".4f"),
    Column(header="ovh%", field="overhead_pct", width=7, spec=".4f"),
    Column(header="enc M/s", field="encode_mws", width=8, spec=".1f"),
    Column(header="dec M/s", field="decode_mws", width=8, spec=".1f"),
    Column(header="pack", field="pack_mws", width=7, spec=".1f"),
    Column(header="z3pk", field="zstd3_packed_bpw", width=6, spec=".3f"),
    Column(header="z19pk", field="zstd19_packed_bpw", width=6, spec=".3f"),
    Column(header="z3raw", field="zstd3_raw_bpw", width=6, spec=".3f"),
    Column(header="z19raw", field="zstd19_raw_bpw", width=6, spec=".3f"),
    Column(header="/z19pk", field="size_vs_zstd19_packed", width=7, spec=".3f"),
    Column(header="spd/z3", field="encode_speed_vs_zstd3_packed", width=7, spec=".2f"),
    Column(header="memE", field="encode_peak_x_codes", width=5, spec=".2f"),
    Column(header="memD", field="decode_peak_x_codes", width=5, spec=".2f"),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000_000)
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--z19-sample", type=int, default=8_000_000)
    args = parser.parse_args(argv)
    rows = [measure(args.n, bits, args.repeats, args.z19_sample) for bits in args.bits]
    print_table(rows, COLUMNS)
    print(
        "k = low bits stored raw; bits per weight except the speeds (M weights/s); "
        "/z19pk = our size / zstd-19 of the packed codes; "
        "spd/z3 = our encode speed / zstd-3's on the packed codes; "
        "memE/memD = peak traced memory of encode/decode / size of the codes"
    )
    payload = {
        "benchmark": "bench_entropy",
        "n_weights": args.n,
        "zstd19_sample": min(args.n, args.z19_sample),
        "baseline": "zstd (levels 3 and 19) on bit-packed and raw codes; plain bit packing",
        "rows": [asdict(r) for r in rows],
    }
    write_results("bench_entropy", payload)


if __name__ == "__main__":
    main()
