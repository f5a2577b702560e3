"""Entropy coding of quantized weights: stream v2 (numba rANS) against v1 (constriction), zstd
and plain bit packing; the numba compile cost; and unpacking a whole package.

Source: 50M unit-variance Laplacian weights (seeded), quantized by a uniform midrise quantizer
at R bits with the support sqrt(2)*ln(2**R) (the ``hui`` rule of API.md). For each R:

- ``encode_codes`` / ``decode_codes``, v2 and v1: bits per weight against the entropy, M codes/s
  on 1 and 2 threads: v2 codes one stream's chunks in parallel, v1 two streams (the two halves)
  on two threads, what coding two tensors at once gives (constriction holds the GIL); v2
  decodes with the grouped vector decoder where the CPU has AVX2 or AVX-512 (``rans_batch``), and
  its previous scalar kernel is timed in the same run (``v2_scalar_decode_per_cpu_s``);
- baselines in the same run: ``pack_bits`` at R bits, and zstd (one thread) at levels 3 and
  19 on the packed codes; level 19 (about 5 MB/s) on the first
  ``--z19-sample`` codes only (8M: its window is 8 MB anyway), its rate taken for the whole;
- peak traced memory (NumPy, Python) of v2 encode and decode / the codes' size;
- the default encoder's speed (``encode_codes`` as written: it first checks on a sample
  whether the context model of stream v3 would pay; on these independent codes it does not).

Compile cost: ``entropy.compile_kernels`` in a child process with an empty numba cache, then
in one with that cache (loading), less the same call again; and the import of the coder.

Unpack: ``unpack_file`` of the package of a ``tests.models.large`` model (``--unpack-params``,
per layer, 4 and 8 bits) as written (layout 3: codes decoded straight into model.onnx's
bytes), the same package with the previous decoder (each chunk by the scalar kernel on its
own) and as the previous writer made it (layout 2, v2 streams: protobuf refilled and
serialized), in GB of ``model.onnx`` per second, wall and CPU seconds, into a new file (and
layout 3 also over an existing one, whose replacement ext4 flushes); baseline: ``zstd -d``
of ``model.onnx`` after ``zstd -3`` (else ``zstandard``), in the same run.

Context modelling: ``bench.entropy_context`` on the real models' codes (``--real-bits``,
``--real-models``; the catalog's models already in the cache).

Run: ``python -m bench.bench_entropy [--n 50000000] [--bits 3 4 8 16] [--repeats 2]
[--z19-sample 8000000] [--unpack-params 300000000] [--unpack-bits 4 8]
[--real-bits 2 3 4 5 6 8] [--real-models NAME ...]``; writes
``bench/results/bench_entropy.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from bench import entropy_context
from bench.common import (
    Column,
    laplacian,
    peak_bytes,
    print_table,
    scalar_decoder,
    timed,
    write_results,
)
from quantcore.coding import rans_batch
from quantcore.coding.entropy import (
    compile_kernels,
    decode_codes,
    decode_plan,
    empirical_entropy_bits,
    encode_codes,
)
from quantcore.coding.packing import pack_bits
from quantcore.formats.qpack import read_header


@dataclass(frozen=True, kw_only=True)
class Row:
    bits: int
    raw_bits: int
    precision: int
    entropy_bits: float
    v2_bits_per_weight: float
    v1_bits_per_weight: float
    v2_overhead_pct: float
    v1_overhead_pct: float
    v2_vs_v1_pct: float
    v2_encode_mws: tuple[float, float]  # 1 thread, 2 threads
    v2_decode_mws: tuple[float, float]
    v1_encode_mws: tuple[float, float]
    v1_decode_mws: tuple[float, float]
    v2_per_cpu_s: tuple[float, float]  # encode, decode on 1 thread, M codes per CPU second
    v2_scalar_decode_per_cpu_s: float  # decode on 1 thread by the previous (scalar) kernel
    v2_cores_used: tuple[float, float]  # encode, decode on 2 threads: CPU s / wall s
    default_encode_mws: float  # encode_codes as written (v3 where it pays), 2 threads
    v1_per_cpu_s: tuple[float, float]
    machine: tuple[float, float]  # load average; speed-up of sha256 on 2 threads, both then
    pack_mws: float
    zstd3_packed_bpw: float
    zstd19_packed_bpw: float
    zstd3_packed_mws: float
    size_vs_zstd19_packed: float
    encode_speed_vs_zstd3_packed: float  # v2, 2 threads
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


def _rates(codes: np.ndarray, version: int, repeats: int) -> tuple[bytes, list[float]]:
    """The stream; encode and decode M codes/s on 1 and 2 threads (wall clock); then encode
    and decode on 1 thread in M codes per CPU second (what a core does when others' work
    shares it); for v2, then the default encoder's speed on 2 threads (which first checks
    whether contexts would pay)."""
    n = codes.size
    stream = encode_codes(codes, version=version)
    if not np.array_equal(decode_codes(stream), codes):  # and the kernels are loaded
        raise RuntimeError(f"v{version} round trip failed")
    enc: list[Any] = []  # Timed, best of the repeats
    dec: list[Any] = []
    if version == 2:
        for threads in (1, 2):

            def encode(threads: int = threads) -> bytes:
                return encode_codes(codes, version=2, threads=threads)

            def decode(threads: int = threads) -> np.ndarray:
                return decode_codes(stream, threads=threads)

            enc.append(timed(encode, repeats))
            dec.append(timed(decode, repeats))
    else:  # two streams on two threads: what coding two tensors at once gives
        halves = [codes[: n // 2], codes[n // 2 :]]
        streams = [encode_codes(h, version=1) for h in halves]

        def encode_v1(part: np.ndarray) -> bytes:
            return encode_codes(part, version=1)

        with ThreadPoolExecutor(2) as pool:
            enc += [
                timed(lambda: [encode_v1(codes)], repeats),
                timed(lambda: list(pool.map(encode_v1, halves)), repeats),
            ]
            dec += [
                timed(lambda: [decode_codes(stream)], repeats),
                timed(lambda: list(pool.map(decode_codes, streams)), repeats),
            ]
    wall = [n / t.seconds / 1e6 for t in (*enc, *dec)]
    busy = [t.cpu_seconds / t.seconds for t in (enc[1], dec[1])]  # cores used on 2 threads
    auto = 0.0
    if version == 2:
        auto = n / timed(lambda: encode_codes(codes, threads=2), repeats).seconds / 1e6
    per_cpu = [n / enc[0].cpu_seconds / 1e6, n / dec[0].cpu_seconds / 1e6]
    scalar = 0.0
    if version == 2:
        with scalar_decoder():
            scalar = n / timed(lambda: decode_codes(stream, threads=1), repeats).cpu_seconds / 1e6
    return stream, [*wall, *per_cpu, *busy, auto, scalar]


def _two_cores() -> float:
    """Speed-up of two threads hashing (hashlib releases the GIL) over one, now: 2.0 on two
    free cores, about 1 when others' work holds one."""
    blob = bytes(50_000_000)
    one = timed(lambda: hashlib.sha256(blob).digest(), 2).seconds
    with ThreadPoolExecutor(2) as pool:
        work = [blob, blob]
        two = timed(lambda: [h.digest() for h in pool.map(hashlib.sha256, work)], 2).seconds
    return 2 * one / two


def measure(n: int, bits: int, repeats: int, z19_sample: int) -> Row:
    codes = laplacian_codes(n, bits)
    entropy = empirical_entropy_bits(codes)
    stream, v2 = _rates(codes, 2, repeats)
    stream1, v1 = _rates(codes, 1, repeats)
    packing = timed(lambda: pack_bits(codes, bits), repeats)
    packed, t_pack = packing.result, packing.seconds
    z3 = timed(lambda: zstd(packed, 3), repeats)
    z3_packed, t_z3 = z3.result, z3.seconds
    head = min(n, z19_sample) // 8 * 8  # whole bytes of packed codes
    z19_scale = n / head
    z19_packed = zstd(packed[: head * bits // 8], 19)
    enc_peak = peak_bytes(lambda: encode_codes(codes))
    dec_peak = peak_bytes(lambda: decode_codes(stream))

    def bpw(blob: bytes, scale: float = 1.0) -> float:
        return 8 * len(blob) * scale / n

    ours, theirs = bpw(stream), bpw(stream1)
    return Row(
        bits=bits,
        raw_bits=stream[6],
        precision=stream[7],
        entropy_bits=entropy,
        v2_bits_per_weight=ours,
        v1_bits_per_weight=theirs,
        v2_overhead_pct=100 * (ours / entropy - 1),
        v1_overhead_pct=100 * (theirs / entropy - 1),
        v2_vs_v1_pct=100 * (ours / theirs - 1),
        v2_encode_mws=(v2[0], v2[1]),
        v2_decode_mws=(v2[2], v2[3]),
        v1_encode_mws=(v1[0], v1[1]),
        v1_decode_mws=(v1[2], v1[3]),
        v2_per_cpu_s=(v2[4], v2[5]),
        v2_scalar_decode_per_cpu_s=v2[9],
        v2_cores_used=(v2[6], v2[7]),
        default_encode_mws=v2[8],
        v1_per_cpu_s=(v1[4], v1[5]),
        machine=(os.getloadavg()[0], _two_cores()),
        pack_mws=n / t_pack / 1e6,
        zstd3_packed_bpw=bpw(z3_packed),
        zstd19_packed_bpw=bpw(z19_packed, z19_scale),
        zstd3_packed_mws=n / t_z3 / 1e6,
        size_vs_zstd19_packed=len(stream) / (len(z19_packed) * z19_scale),
        encode_speed_vs_zstd3_packed=t_z3 * v2[1] * 1e6 / n,
        encode_peak_x_codes=enc_peak / codes.nbytes,
        decode_peak_x_codes=dec_peak / codes.nbytes,
    )


_COMPILE_CHILD = """
import json, sys, time
import numpy, zstandard  # the coder's own import, apart from what every module loads
start = time.perf_counter()
import quantcore.coding.entropy
imported, numba_loaded = time.perf_counter() - start, "numba" in sys.modules
from quantcore.coding import entropy
t = time.perf_counter(); entropy.compile_kernels(); first = time.perf_counter() - t
t = time.perf_counter(); entropy.compile_kernels(); again = time.perf_counter() - t
print(json.dumps({"import_s": imported, "numba_on_import": numba_loaded, "first_s": first,
                  "again_s": again}))
"""


def compile_cost() -> dict[str, float]:
    """Seconds of ``entropy.compile_kernels`` (every kernel, 8- and 16-bit codes) in a fresh
    process, less the same work done again, with an empty numba cache (compiling) and with
    the cache it left (loading); and the import of the coder (which loads no numba)."""
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"NUMBA_CACHE_DIR": cache}
        for label in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", _COMPILE_CHILD], env=env, check=True,
                                  capture_output=True, text=True)  # fmt: skip
            child: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            result[f"{label}_first_call_s"] = child["first_s"] - child["again_s"]
            result["import_s"] = child["import_s"]
            if child["numba_on_import"]:
                raise RuntimeError("importing the coder loaded numba")
    return result


def _as_layout2(data: bytes, model: Path) -> bytes:
    """The same model as the writer before layout 3 packed it: layout 2, QENT v2 streams."""
    import onnx

    from quantcore.formats.qpack_proto import layout2_bytes

    header, _ = read_header(data)
    keep = ("name", "initializer", "elem_type", "shape", "code_min", "code_max", "coding", "bits")
    entries = [{k: e[k] for k in keep} for e in header["tensors"]]
    bodies = []
    for e in header["tensors"]:
        body = data[e["offset"] : e["offset"] + e["length"]]
        bodies.append(encode_codes(decode_codes(body), version=2) if e["coding"] == "entropy"
                      else body)  # fmt: skip
    model_bytes = model.read_bytes()
    return layout2_bytes(onnx.load(str(model)), entries, bodies, fmt="onnx",
                         onnx_sha256=hashlib.sha256(model_bytes).hexdigest(),
                         onnx_size=len(model_bytes))  # fmt: skip


def _zstd_round(model: Path, repeats: int) -> tuple[float, int, str]:
    """Seconds to decompress ``model`` compressed by zstd -3 back to a file; its size; how."""
    packed, back = model.with_suffix(".zst"), model.with_suffix(".back")
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-q", "-f", "-3", "-T0", str(model), "-o", str(packed)], check=True)
        command = ["zstd", "-q", "-f", "-d", str(packed), "-o", str(back)]

        def run() -> None:  # into a new file, as unpack (ext4 flushes a truncated one's data)
            back.unlink(missing_ok=True)
            subprocess.run(command, check=True)

        seconds = timed(run, repeats).seconds
        how = "zstd -d (binary)"
    else:
        packed.write_bytes(zstandard.compress(model.read_bytes(), 3))
        unzstd = zstandard.ZstdDecompressor().decompress

        def run() -> None:
            back.unlink(missing_ok=True)
            back.write_bytes(unzstd(packed.read_bytes()))

        seconds = timed(run, repeats).seconds
        how = "zstandard module"
    if back.read_bytes() != model.read_bytes():
        raise RuntimeError("zstd round trip failed")
    return seconds, packed.stat().st_size, how


def _decode_codes_cpu(data: bytes, repeats: int) -> tuple[float, float]:
    """CPU seconds to decode every code of a package on one thread (best of ``repeats``):
    the grouped vector decoder, then the previous scalar kernel chunk by chunk."""
    header, _ = read_header(data)
    view = memoryview(data)
    entries = [e for e in header["tensors"] if e["coding"] == "entropy"]
    result = []
    for scalar in (False, True):
        with scalar_decoder() if scalar else contextlib.nullcontext():
            plans = [decode_plan(view[e["offset"] : e["offset"] + e["length"]]) for e in entries]
        outs = [np.empty(sum(c.size for c in chunks), dtype=dtype) for dtype, chunks in plans]
        jobs = [(c, out[c.start : c.start + c.size])
                for (_, chunks), out in zip(plans, outs, strict=True) for c in chunks]  # fmt: skip

        def fill(jobs: list[tuple[Any, np.ndarray]] = jobs) -> None:
            rans_batch.fill_chunks(jobs)

        result.append(timed(fill, repeats).cpu_seconds)
    return result[0], result[1]


def _unpack_once(
    package: Path, model: Path, scalar: bool, replace: bool = False
) -> tuple[float, float]:
    """Wall and CPU seconds of one ``unpack_file`` (with the previous decoder if ``scalar``),
    checked to give ``model`` byte for byte; into a new file, or with ``replace`` over the
    previous run's (ext4 then writes the new file's blocks out at the rename that replaces
    the old one: ``auto_da_alloc``)."""
    from quantcore.formats.qpack import unpack_file

    restored = model.with_name("restored.onnx")
    if not replace:
        restored.unlink(missing_ok=True)
    elif not restored.exists():
        shutil.copyfile(model, restored)
    with scalar_decoder() if scalar else contextlib.nullcontext():
        took = timed(lambda: unpack_file(package, restored), 1)
    if restored.read_bytes() != model.read_bytes():
        raise RuntimeError(f"unpack of {package.name} differs")
    return took.seconds, took.cpu_seconds


def unpack_rows(
    params: int, bits_list: list[int], repeats: int, unpack_repeats: int = 4
) -> list[dict[str, Any]]:
    """``unpack_file`` of a generated model's package (layout 3 as written, and the same model
    in layout 2 as the writer before it made it) against zstd -d, wall and CPU seconds."""
    import onnx

    from quantcore.compress.artifacts import write_artifacts
    from quantcore.compress.pipeline import build_onnx, load_model, quantize_model
    from quantcore.spec import QuantSpec
    from tests.models import large

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx.save(large(params), work / "float.onnx")
        for bits in bits_list:
            source = load_model(work / "float.onnx")
            spec = QuantSpec.from_dict({"bits": bits, "granularity": "layer"})
            written = build_onnx(qmodel := quantize_model(source, spec))
            source.close()
            out = work / f"q{bits}"
            write_artifacts(qmodel, out, written)
            del qmodel, written
            model, l3, l2 = out / "model.qpack", out / "model.qpack", out / "layout2.qpack"
            model = out / "model.onnx"
            l2.write_bytes(_as_layout2(l3.read_bytes(), model))
            row: dict[str, Any] = {"bits": bits, "model_bytes": model.stat().st_size}
            row["machine"] = (os.getloadavg()[0], _two_cores())
            row["l3_package_bytes"] = l3.stat().st_size
            row["l2_package_bytes"] = l2.stat().st_size
            # The two decoders of layout 3 alternate, best of each: the load changes meanwhile.
            times: dict[str, list[tuple[float, float]]] = {
                "l3": [], "l3_scalar": [], "l3_replace": []
            }  # fmt: skip
            for _ in range(unpack_repeats):
                times["l3"].append(_unpack_once(l3, model, False))
                times["l3_scalar"].append(_unpack_once(l3, model, True))
                times["l3_replace"].append(_unpack_once(l3, model, False, replace=True))
            times["l2"] = [_unpack_once(l2, model, False)]
            for name, got in times.items():
                row[f"{name}_unpack_s"] = min(wall for wall, _ in got)
                row[f"{name}_unpack_cpu_s"] = min(cpu for _, cpu in got)
                row[f"{name}_unpack_gbs"] = row["model_bytes"] / row[f"{name}_unpack_s"] / 1e9
            row["codes_decode_cpu_s"], row["codes_decode_scalar_cpu_s"] = _decode_codes_cpu(
                l3.read_bytes(), unpack_repeats
            )
            row["zstd_d_s"], row["zstd_bytes"], row["zstd_how"] = _zstd_round(model, repeats)
            row["zstd_d_gbs"] = row["model_bytes"] / row["zstd_d_s"] / 1e9
            rows.append(row)
            shutil.rmtree(out)
    print(f"unpack, {params / 1e6:.0f} M parameters per layer:")
    for r in rows:
        print(
            f"  {r['bits']} bits: model.onnx {r['model_bytes'] / 1e6:.0f} MB; layout 3 package "
            f"{r['l3_package_bytes'] / 1e6:.0f} MB unpacked in {r['l3_unpack_s']:.2f} s = "
            f"{r['l3_unpack_gbs']:.3f} GB/s ({r['l3_unpack_cpu_s']:.2f} CPU s), over an existing "
            f"file {r['l3_replace_unpack_gbs']:.3f} GB/s; previous decoder "
            f"{r['l3_scalar_unpack_s']:.2f} s ({r['l3_scalar_unpack_cpu_s']:.2f} CPU s); decoding "
            f"the codes alone {r['codes_decode_cpu_s']:.2f} CPU s (previous decoder "
            f"{r['codes_decode_scalar_cpu_s']:.2f}); layout 2 "
            f"{r['l2_unpack_s']:.2f} s = {r['l2_unpack_gbs']:.3f} GB/s "
            f"({r['l2_unpack_cpu_s']:.2f} CPU s); {r['zstd_how']} of the model "
            f"({r['zstd_bytes'] / 1e6:.0f} MB) {r['zstd_d_s']:.2f} s = {r['zstd_d_gbs']:.3f} "
            f"GB/s; load {r['machine'][0]:.1f}, 2 threads hashing {r['machine'][1]:.2f}x"
        )
    return rows


COLUMNS = (
    Column(header="R", field="bits", width=3),
    Column(header="k", field="raw_bits", width=2),
    Column(header="n", field="precision", width=3),
    Column(header="H", field="entropy_bits", width=7, spec=".4f"),
    Column(header="v2", field="v2_bits_per_weight", width=7, spec=".4f"),
    Column(header="v2 ovh%", field="v2_overhead_pct", width=8, spec=".4f"),
    Column(header="v1 ovh%", field="v1_overhead_pct", width=8, spec=".4f"),
    Column(header="v2/v1%", field="v2_vs_v1_pct", width=7, spec=".4f"),
    Column(header="v2 enc 1t/2t", field="v2_encode_mws", width=12),
    Column(header="v2 dec 1t/2t", field="v2_decode_mws", width=12),
    Column(header="v1 enc 1t/2t", field="v1_encode_mws", width=12),
    Column(header="v1 dec 1t/2t", field="v1_decode_mws", width=12),
    Column(header="v2 /cpu-s", field="v2_per_cpu_s", width=9),
    Column(header="scalar", field="v2_scalar_decode_per_cpu_s", width=6, spec=".0f"),
    Column(header="2t cores", field="v2_cores_used", width=8),
    Column(header="dflt enc", field="default_encode_mws", width=8, spec=".0f"),
    Column(header="v1 /cpu-s", field="v1_per_cpu_s", width=9),
    Column(header="load/2t", field="machine", width=7),
    Column(header="z19pk", field="zstd19_packed_bpw", width=6, spec=".3f"),
    Column(header="/z19pk", field="size_vs_zstd19_packed", width=7, spec=".3f"),
    Column(header="spd/z3", field="encode_speed_vs_zstd3_packed", width=7, spec=".2f"),
    Column(header="memE", field="encode_peak_x_codes", width=5, spec=".2f"),
    Column(header="memD", field="decode_peak_x_codes", width=5, spec=".2f"),
)


def _pair(row: Row) -> Row:
    """The row with its (1 thread, 2 threads) pairs as printable text."""
    pairs = {f: f"{v[0]:.0f}/{v[1]:.0f}" if v[0] > 10 else f"{v[0]:.1f}/{v[1]:.1f}"
             for f, v in asdict(row).items() if isinstance(v, tuple)}  # fmt: skip
    return Row(**{**asdict(row), **pairs})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000_000)
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--z19-sample", type=int, default=8_000_000)
    parser.add_argument("--unpack-params", type=int, default=300_000_000)
    parser.add_argument("--unpack-bits", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--unpack-repeats", type=int, default=4)
    parser.add_argument("--real-bits", type=int, nargs="*", default=[2, 3, 4, 5, 6, 8])
    parser.add_argument("--real-models", nargs="*", default=None)
    args = parser.parse_args(argv)
    compiled = compile_cost()
    compile_kernels()  # loaded here too, so that no timing below includes it
    rows = [measure(args.n, bits, args.repeats, args.z19_sample) for bits in args.bits]
    print_table([_pair(r) for r in rows], COLUMNS)
    print(
        "k = low bits stored raw, n = v2 precision; bits per weight except the speeds "
        "(M codes/s, 1 thread/2 threads, wall clock; /cpu-s: encode/decode on 1 thread per "
        "CPU second; scalar: decode by the previous scalar kernel, same; "
        "2t cores: CPU s / wall s of v2 encode/decode on 2 threads, below 2 when "
        "others' work holds a core; dflt enc: the default encoder (v3 where it pays) on 2 "
        "threads; load/2t: the load average, and the speed-up two threads "
        "hashing got then: 2.0 on two free cores); ovh% = size over H; "
        "/z19pk = v2 size / zstd-19 of the packed codes; spd/z3 = v2 encode speed "
        "(2 threads) / zstd-3's on the packed codes; memE/memD = peak traced memory of v2 "
        "encode/decode / size of the codes"
    )
    print(
        f"numba first calls: {compiled['cold_first_call_s']:.2f} s compiling (empty cache), "
        f"{compiled['warm_first_call_s']:.2f} s loading the cache; "
        f"import of the coder {compiled['import_s']:.3f} s"
    )
    unpacked = unpack_rows(args.unpack_params, args.unpack_bits, args.repeats, args.unpack_repeats)
    real: list[dict[str, Any]] = []
    real_summary: Any = None
    if args.real_bits:
        print("context modelling (v3) against order-0 (v2) on real models' codes:")
        real = entropy_context.rows(args.real_bits, args.real_models)
        real_summary = entropy_context.summary(real)
    payload = {
        "benchmark": "bench_entropy",
        "n_weights": args.n,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "zstd19_sample": min(args.n, args.z19_sample),
        "baseline": "QENT v1 (constriction); zstd (levels 3 and 19) on bit-packed codes; "
        "plain bit packing; zstd -d and the layout-2 package for unpacking; v2 (order-0) "
        "for the context model on real models",
        "compile": compiled,
        "rows": [asdict(r) for r in rows],
        "unpack": unpacked,
        "real_models": real,
        "real_models_summary": real_summary,
    }
    write_results("bench_entropy", payload)


if __name__ == "__main__":
    main()
