"""MPEG NNR's reference software (``nncodec``, ISO/IEC 15938-17), built for the benchmark only.

nncodec is not a dependency of the project: its wheel pins ``numpy<2`` and pulls in torch,
torchvision and OpenCV for front ends the benchmark does not use. ``ensure_venv`` downloads
its source distribution with pip (``--no-binary :all:``), builds it (the DeepCABAC C++
extension, about 3 minutes on 2 cores) into a virtual environment of its own under
``$QUANTSERVE_NNR_CACHE`` (default ``~/.cache/quantserve/nncodec``) with only NumPy and
pybind11 beside it, and reuses that environment afterwards. ``encode_sweep`` runs
``bench/nnr/driver.py`` in it as a subprocess; ``Decoder`` keeps one running to time the
decoding of kept bitstreams on request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

NNCODEC_VERSION = "2.1.3"
CACHE_ENV = "QUANTSERVE_NNR_CACHE"
DRIVER = Path(__file__).with_name("driver.py")
BUILD_TIMEOUT_S = 1800


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "quantserve" / "nncodec"


def _python(root: Path) -> Path:
    return root / "venv" / "bin" / "python"


def _run(cmd: Sequence[str]) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: " + " | ".join(tail))


def ensure_venv() -> Path:
    """The interpreter of nncodec's environment, built on first use (see the module doc)."""
    root = cache_dir()
    python = _python(root)
    probe = [str(python), "-c", "import nncodec.extensions.deepCABAC"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    root.mkdir(parents=True, exist_ok=True)
    venv.create(root / "venv", with_pip=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "install", "numpy<2", "pybind11", "setuptools", "wheel"])
    sdist = root / "sdist"
    _run([*pip, "download", "--no-binary", ":all:", "--no-deps", "-d", str(sdist),
          f"nncodec=={NNCODEC_VERSION}"])
    archive = next(sdist.glob(f"nncodec-{NNCODEC_VERSION}.tar.gz"))
    _run([*pip, "install", "--no-deps", "--no-build-isolation", str(archive)])
    return python


@dataclass(frozen=True, kw_only=True)
class ReferencePoint:
    """One QP of the reference: bitstream bytes and the tensors decoded from it."""

    qp: int
    bytes: int
    encode_s: float
    decode_cpu_s: float
    decoded: dict[str, np.ndarray]
    bitstream: Path  # the bitstream, in the sweep's work folder


def encode_sweep(
    tensors: Mapping[str, np.ndarray], qps: Sequence[int], work: Path
) -> list[ReferencePoint]:
    """Code ``tensors`` (all at once, one bitstream) at each QP and decode them back.

    Tensors of rank below 2 are passed as one row, so that the coder treats every tensor as a
    weight (it codes rank-1 tensors at its bias QP otherwise)."""
    python = ensure_venv()
    names = list(tensors)
    shaped = {f"t{i}": np.asarray(tensors[n], np.float32) for i, n in enumerate(names)}
    flat = {k: (v if v.ndim >= 2 else v.reshape(1, -1)) for k, v in shaped.items()}
    work.mkdir(parents=True, exist_ok=True)
    source = work / "tensors.npz"
    np.savez(source, **flat)  # type: ignore[arg-type]
    done = subprocess.run([str(python), str(DRIVER), str(source), str(work),
                           *map(str, qps)], capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise RuntimeError("nncodec driver failed: " + done.stderr.strip()[-2000:])
    summary = json.loads((work / "summary.json").read_text())
    points = []
    for row in summary:
        with np.load(work / f"qp{row['qp']}.npz") as data:
            decoded = {n: data[f"t{i}"].reshape(shaped[f"t{i}"].shape)
                       for i, n in enumerate(names)}
        points.append(ReferencePoint(qp=int(row["qp"]), bytes=int(row["bytes"]),
                                     encode_s=float(row["encode_s"]),
                                     decode_cpu_s=float(row["decode_cpu_s"]),
                                     decoded=decoded, bitstream=work / f"qp{row['qp']}.nnr"))
    return points


class Decoder:
    """The reference's decoder in a process of its own (``driver.py --serve``), timing one
    ``nnc.decompress`` of a bitstream file per call: the benchmark alternates it with ours."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([str(ensure_venv()), str(DRIVER), "--serve"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def decode_cpu_s(self, bitstream: Path) -> float:
        """CPU seconds of one decoding of ``bitstream``."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{bitstream}\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the reference decoder exited ({self._proc.wait()}) on "
                               f"{bitstream}")
        return float(answer)

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=60)


if __name__ == "__main__":
    print(ensure_venv(), file=sys.stderr)
