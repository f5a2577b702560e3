"""Context modelling (stream v3) against order-0 (v2) on real models' codes, for
``bench.bench_entropy``.

Each model of ``bench.realmodels.catalog`` already in the cache is quantized with the default
spec and with ``granularity: layer`` at each bit width; each tensor's ``code - code_min`` is
coded by ``encode_codes`` as written (v3 where it pays, else v2) and forced to v2. Reported:
bits per weight of the order-0 entropy, of v2 and of the written streams, the gain, the share
of weights whose tensor got v3, and decode speed (M codes per CPU second, one thread) of the
v3 streams against the same tensors in v2.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from quantcore.coding.entropy import decode_codes, empirical_entropy_bits, encode_codes


def _codes_of(path: Any, spec: dict[str, Any]) -> list[np.ndarray]:
    from quantcore.compress.pipeline import load_model, quantize_model
    from quantcore.spec import QuantSpec

    model = load_model(path)
    try:
        qmodel = quantize_model(model, QuantSpec.from_dict(spec))
        return [np.asarray(w.codes).astype(np.int64) - int(w.code_min) for w in qmodel.weights]
    finally:
        model.close()


def _cpu(fn: Any) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(name: str, path: Any, granularity: str, bits: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"bits": bits}
    if granularity != "default":
        spec["granularity"] = granularity
    row: dict[str, Any] = {"model": name, "granularity": granularity, "bits": bits}
    n = entropy_bits = v2_bytes = written_bytes = v3_weights = 0.0
    v3_codes = 0
    v3_decode_s = v2_decode_s = 0.0
    for codes in _codes_of(path, spec):
        flat = codes.ravel().astype(np.uint8 if codes.max(initial=0) < 256 else np.uint16)
        v2 = encode_codes(flat, version=2)
        written = encode_codes(flat)
        n += flat.size
        entropy_bits += empirical_entropy_bits(flat) * flat.size
        v2_bytes += len(v2)
        written_bytes += len(written)
        if written[4] == 3:
            if not np.array_equal(decode_codes(written), flat):
                raise RuntimeError(f"v3 round trip failed on {name}")
            v3_weights += flat.size
            v3_codes += flat.size
            v3_decode_s += min(_cpu(lambda w=written: decode_codes(w, threads=1)) for _ in "ab")
            v2_decode_s += min(_cpu(lambda w=v2: decode_codes(w, threads=1)) for _ in "ab")
    row.update(
        weights=int(n),
        entropy_bpw=entropy_bits / n,
        v2_bpw=8 * v2_bytes / n,
        written_bpw=8 * written_bytes / n,
        gain_vs_v2_pct=100 * (1 - written_bytes / v2_bytes),
        gain_vs_entropy_pct=100 * (1 - 8 * written_bytes / entropy_bits),
        v3_share=v3_weights / n,
        v3_decode_mcs=v3_codes / v3_decode_s / 1e6 if v3_decode_s else None,
        v2_decode_mcs_same=v3_codes / v2_decode_s / 1e6 if v2_decode_s else None,
    )
    return row


def rows(bits_list: list[int], names: list[str] | None) -> list[dict[str, Any]]:
    from bench.realmodels.catalog import CATALOG
    from bench.realmodels.fetch import model_path

    found = []
    for entry in CATALOG:
        path = model_path(entry)
        if path.exists() and (names is None or entry.name in names):
            for granularity in ("default", "layer"):
                for bits in bits_list:
                    found.append(measure(entry.name, path, granularity, bits))
                    print(_line(found[-1]), flush=True)
    return found


def _line(r: dict[str, Any]) -> str:
    speed = ""
    if r["v3_decode_mcs"]:
        speed = f"; v3 decode {r['v3_decode_mcs']:.0f} M/cpu-s (v2 {r['v2_decode_mcs_same']:.0f})"
    return (
        f"  {r['model']:12s} {r['granularity']:7s} {r['bits']} bits: H0 {r['entropy_bpw']:.4f}, "
        f"v2 {r['v2_bpw']:.4f}, written {r['written_bpw']:.4f} bits/weight "
        f"({r['gain_vs_v2_pct']:+.2f}% vs v2, {r['gain_vs_entropy_pct']:+.2f}% vs H0), "
        f"v3 on {100 * r['v3_share']:.0f}% of weights{speed}"
    )


def summary(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Weighted by weights, per granularity and bit width, over the models."""
    out = []
    for granularity in ("default", "layer"):
        for bits in sorted({r["bits"] for r in found}):
            group = [r for r in found if r["granularity"] == granularity and r["bits"] == bits]
            if not group:
                continue
            n = sum(r["weights"] for r in group)
            v2 = sum(r["v2_bpw"] * r["weights"] for r in group)
            written = sum(r["written_bpw"] * r["weights"] for r in group)
            entropy = sum(r["entropy_bpw"] * r["weights"] for r in group)
            gains = [r["gain_vs_v2_pct"] for r in group]
            out.append({
                "granularity": granularity, "bits": bits, "models": len(group),
                "entropy_bpw": entropy / n, "v2_bpw": v2 / n, "written_bpw": written / n,
                "gain_vs_v2_pct": 100 * (1 - written / v2),
                "gain_min_max_pct": (min(gains), max(gains)),
            })  # fmt: skip
            s = out[-1]
            print(
                f"  all {granularity:7s} {bits} bits ({len(group)} models): H0 "
                f"{s['entropy_bpw']:.4f}, v2 {s['v2_bpw']:.4f}, written {s['written_bpw']:.4f} "
                f"bits/weight: {s['gain_vs_v2_pct']:+.2f}% vs v2 (per model "
                f"{min(gains):+.2f}% to {max(gains):+.2f}%)"
            )
    return out
