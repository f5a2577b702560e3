"""The vector decoders' AVX2 forms as LLVM lowers them for a CPU without AVX-512: on an
AVX-512 machine the other tests run those forms with AVX-512 instructions, so a child process
compiles them as for a CPU without it (``bench.cpu_features``) and decodes v2 and trellis
streams of every path (grouped chunks, nibbles, one chunk alone, a stream's two chunks)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from quantcore.coding import rans_simd

CHILD = textwrap.dedent(
    """
    import numpy as np
    from quantcore.coding import rans, rans_batch, rans_simd, trellis_batch, trellis_coder
    from quantcore.coding.entropy import decode_codes, decode_plan, encode_codes
    from quantcore.compress.trellis import trellis_levels
    from tests.core.coding.test_entropy import laplacian_codes

    assert rans_simd.usable() and not rans_simd.available(), "not compiled as for AVX2 alone"
    assert rans_batch.vector_kernels() is rans_simd and trellis_batch.vector_kernels()
    rans.CHUNK_SYMBOLS = trellis_coder.CHUNK_SYMBOLS = 7_000
    for codes in (laplacian_codes(50_001, 4, seed=1), laplacian_codes(30_007, 12, seed=3)):
        dtype, chunks = decode_plan(encode_codes(codes, version=2))
        out = np.zeros(codes.size, dtype)
        rans_batch.fill_chunks([(c, out[c.start : c.start + c.size]) for c in chunks])
        assert np.array_equal(out, codes)
        if dtype == np.uint8:
            packed = np.zeros((codes.size + 1) // 2, np.uint8)
            rans_batch.fill_nibbles([(c, packed[c.start // 2 : (c.start + c.size + 1) // 2], 0)
                                     for c in chunks])
            assert np.array_equal(packed & 15, codes[0::2] & 15)
            assert np.array_equal(packed[: codes.size // 2] >> 4, codes[1::2] & 15)
    rng = np.random.default_rng(2)
    jobs, expected = [], []
    for n, machine in ((40_000, 12), (13_000, 7), (5_000, 5)):  # grouped, a pair, alone
        w = (rng.laplace(size=n) * np.repeat(rng.choice([-1.0, 1.0], n // 9 + 1), 9)[:n])
        levels = trellis_levels(w.astype(np.float32), 0.2, 2000, machine).levels
        codes = (levels - levels.min()).astype(np.uint8)
        stream = trellis_coder.encode(codes, int(levels.min()), 1)
        assert np.array_equal(decode_codes(stream), codes)  # one chunk, or a stream's two
        dtype, chunks = decode_plan(stream)
        whole = np.zeros(codes.size, dtype)
        jobs += [(c, whole[c.start : c.start + c.size]) for c in chunks]
        expected.append((whole, codes))
    rans_batch.fill_chunks(jobs)  # every stream's chunks in groups
    assert all(np.array_equal(whole, codes) for whole, codes in expected)
    print("ok")
    """
)


@pytest.mark.skipif(not rans_simd.usable(), reason="this CPU lacks AVX2")
def test_the_avx2_forms_decode_the_codes_compiled_for_avx2_alone(tmp_path):
    from bench.cpu_features import features

    env = os.environ | {
        "NUMBA_CPU_NAME": "haswell",
        "NUMBA_CPU_FEATURES": features(["avx512"]),
        "NUMBA_CACHE_DIR": str(tmp_path),
    }
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=540)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
