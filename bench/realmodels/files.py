"""Real file bytes of many formats, for the byte-level file-type classifier (magika).

A file-type model looks at headers, magic numbers, syntax and trailers: random bytes would be
classified as "unknown" by both the float and the quantized model and agreement would mean
nothing. Here the bytes come from the Python installation (source files, the interpreter's
ELF binary) and from the standard library's own writers (zip, gzip, tar, wav, ...), filled
with seeded content.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import struct
import sys
import tarfile
import wave
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.realmodels.synth import natural_image, speech_like

_WORDS = (
    "model", "quantization", "weight", "tensor", "layer", "output", "signal", "noise", "ratio",
    "channel", "scale", "offset", "value", "service", "report", "bench", "sample", "error",
    "float", "integer", "codes", "decode", "graph", "node", "input",
)


def _prose(rng: np.random.Generator, n_words: int) -> str:
    words = rng.choice(_WORDS, size=n_words).tolist()
    return " ".join(words).capitalize() + "."


def _png(rng: np.random.Generator) -> bytes:
    img = natural_image(rng, 48, 64).astype(np.uint8).transpose(1, 2, 0)
    raw = b"".join(b"\x00" + row.tobytes() for row in img)

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _wav(rng: np.random.Generator) -> bytes:
    pcm = (speech_like(rng, 0.5) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm)
    return buf.getvalue()


def _zip(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            info = zipfile.ZipInfo(f"docs/part{i}.txt", date_time=(2024, 1, 1, 0, 0, 0))
            z.writestr(info, _prose(rng, 300))
    return buf.getvalue()


def _tar(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for i in range(2):
            data = _prose(rng, 200).encode()
            info = tarfile.TarInfo(f"notes/{i}.txt")
            info.size, info.mtime = len(data), 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _json(rng: np.random.Generator) -> bytes:
    rows = [
        {"id": i, "name": _prose(rng, 3), "score": round(float(rng.normal()), 4), "ok": i % 3 == 0}
        for i in range(40)
    ]
    return json.dumps({"items": rows}, indent=2).encode()


def _csv(rng: np.random.Generator) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["date", "name", "amount", "count"])
    for i in range(80):
        w.writerow([f"2024-01-{i % 28 + 1:02d}", rng.choice(_WORDS), f"{rng.gamma(2, 50):.2f}",
                    int(rng.integers(0, 100))])
    return buf.getvalue().encode()


def _html(rng: np.random.Generator) -> bytes:
    paras = "\n".join(f"    <p class=\"text\">{_prose(rng, 25)}</p>" for _ in range(8))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n"
        f"  <title>{_prose(rng, 4)}</title>\n</head>\n<body>\n  <div id=\"main\">\n"
        f"{paras}\n  </div>\n</body>\n</html>\n"
    ).encode()


def _xml(rng: np.random.Generator) -> bytes:
    items = "\n".join(
        f'  <item id="{i}" weight="{rng.uniform():.3f}">{rng.choice(_WORDS)}</item>'
        for i in range(50)
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<catalog>\n{items}\n</catalog>\n'.encode()


def _shell(rng: np.random.Generator) -> bytes:
    lines = [f'echo "{_prose(rng, 5)}"\nmkdir -p "/tmp/{rng.choice(_WORDS)}"' for _ in range(10)]
    return ("#!/usr/bin/env bash\nset -euo pipefail\n\n" + "\n".join(lines) + "\n").encode()


def _markdown(rng: np.random.Generator) -> bytes:
    parts = [f"# {_prose(rng, 3)}\n"]
    for i in range(5):
        parts.append(f"## Section {i}\n\n{_prose(rng, 40)}\n\n- {_prose(rng, 6)}\n")
    return "\n".join(parts).encode()


def _pdf(rng: np.random.Generator) -> bytes:
    text = _prose(rng, 12)
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _stdlib_source(_: np.random.Generator) -> bytes:
    return Path(json.__file__).read_bytes()


def _elf(_: np.random.Generator) -> bytes:
    return Path(sys.executable).resolve().read_bytes()


SAMPLES: dict[str, Callable[[np.random.Generator], bytes]] = {
    "python": _stdlib_source,
    "elf": _elf,
    "png": _png,
    "wav": _wav,
    "zip": _zip,
    "tar": _tar,
    "gzip": lambda rng: gzip.compress(_prose(rng, 400).encode(), mtime=0),
    "bzip": lambda rng: bz2.compress(_prose(rng, 400).encode()),
    "xz": lambda rng: lzma.compress(_prose(rng, 400).encode()),
    "json": _json,
    "csv": _csv,
    "html": _html,
    "xml": _xml,
    "shell": _shell,
    "markdown": _markdown,
    "pdf": _pdf,
}


def magika_features(
    content: bytes, *, beg: int = 1024, end: int = 1024, block: int = 4096, pad: int = 256
) -> NDArray[np.int32]:
    """Magika's model input for one file, as its ``_extract_features_from_seekable`` builds
    it: up to ``block`` bytes from each end, whitespace stripped (both sides when the file
    fits in one block), the first ``beg`` bytes padded after and the last ``end`` bytes padded
    before with ``pad``."""
    small = len(content) <= block
    head = content[:block]
    tail = content[-block:]
    head = head.strip() if small else head.lstrip()
    tail = tail.strip() if small else tail.rstrip()
    first = list(head[:beg]) + [pad] * max(0, beg - len(head))
    last_bytes = tail[-end:] if tail else b""
    last = [pad] * max(0, end - len(last_bytes)) + list(last_bytes)
    return np.array(first + last, dtype=np.int32)
