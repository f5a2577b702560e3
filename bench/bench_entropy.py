"""Entropy coding of quantized weights against zstd and plain bit packing.

Source: 50M unit-variance Laplacian weights (seeded), quantized by a uniform midrise quantizer
at R bits with the support sqrt(2)*ln(2**R) (the ``hui`` rule of API.md). For each R:

- ours: ``quantcore.entropy.encode_codes`` / ``decode_codes`` (order-0 ANS), bits per weight
  and overhead against the empirical entropy, encode and decode throughput;
- baselines measured in the same run: ``quantcore.packing.pack_bits`` at R bits, and zstd
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
import json
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from quantcore.entropy import decode_codes, empirical_entropy_bits, encode_codes
from quantcore.packing import pack_bits

RESULTS = Path(__file__).parent / "results" / "bench_entropy.json"


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
    weights = np.random.default_rng(seed).laplace(scale=1 / np.sqrt(2), size=n).astype(np.float32)
    levels = 1 << bits
    xmax = np.sqrt(2.0) * np.log(levels)
    step = np.float32(2 * xmax / levels)
    codes = np.floor(weights / step)
    codes += levels // 2
    np.clip(codes, 0, levels - 1, out=codes)
    return codes.astype(np.uint8 if bits <= 8 else np.uint16)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """The result of ``fn`` and its best wall time over ``repeats`` runs."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def zstd(data: bytes, level: int) -> bytes:
    return zstandard.ZstdCompressor(level=level, threads=0).compress(data)


def measure(n: int, bits: int, repeats: int, z19_sample: int) -> Row:
    codes = laplacian_codes(n, bits)
    entropy = empirical_entropy_bits(codes)
    stream, t_enc = timed(lambda: encode_codes(codes), repeats)
    decoded, t_dec = timed(lambda: decode_codes(stream), repeats)
    if not np.array_equal(decoded, codes):
        raise RuntimeError(f"round trip failed at {bits=}")
    del decoded
    packed, t_pack = timed(lambda: pack_bits(codes, bits), repeats)
    raw = codes.tobytes()
    z3_packed, t_z3 = timed(lambda: zstd(packed, 3), repeats)
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


def print_table(rows: list[Row]) -> None:
    print(
        f"{'R':>3} {'k':>2} {'H':>7} {'ours':>7} {'ovh%':>7} {'enc M/s':>8} {'dec M/s':>8} "
        f"{'pack':>7} {'z3pk':>6} {'z19pk':>6} {'z3raw':>6} {'z19raw':>6} "
        f"{'/z19pk':>7} {'spd/z3':>7} {'memE':>5} {'memD':>5}"
    )
    for r in rows:
        print(
            f"{r.bits:>3} {r.raw_bits:>2} {r.entropy_bits:7.4f} {r.ours_bits_per_weight:7.4f} "
            f"{r.overhead_pct:7.4f} {r.encode_mws:8.1f} {r.decode_mws:8.1f} "
            f"{r.pack_mws:7.1f} {r.zstd3_packed_bpw:6.3f} {r.zstd19_packed_bpw:6.3f} "
            f"{r.zstd3_raw_bpw:6.3f} {r.zstd19_raw_bpw:6.3f} {r.size_vs_zstd19_packed:7.3f} "
            f"{r.encode_speed_vs_zstd3_packed:7.2f} {r.encode_peak_x_codes:5.2f} "
            f"{r.decode_peak_x_codes:5.2f}"
        )
    print(
        "k = low bits stored raw; bits per weight except the speeds (M weights/s); "
        "/z19pk = our size / zstd-19 of the packed codes; "
        "spd/z3 = our encode speed / zstd-3's on the packed codes; "
        "memE/memD = peak traced memory of encode/decode / size of the codes"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000_000)
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--z19-sample", type=int, default=8_000_000)
    args = parser.parse_args(argv)
    rows = [measure(args.n, bits, args.repeats, args.z19_sample) for bits in args.bits]
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_entropy",
        "n_weights": args.n,
        "zstd19_sample": min(args.n, args.z19_sample),
        "baseline": "zstd (levels 3 and 19) on bit-packed and raw codes; plain bit packing",
        "rows": [asdict(r) for r in rows],
    }
    RESULTS.write_text(json.dumps(payload, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
