"""``.npz`` arrays read one at a time (``quantcore.formats.npz_arrays``): the same arrays as
``np.load``'s, stored members memory-mapped from the archive rather than read whole, deflated
ones inflated when asked for, and an archive changed after its check refused by name."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from quantcore.errors import InvalidModelError
from quantcore.formats.npz import scan_npz
from quantcore.formats.npz_arrays import NpzArrays
from quantcore.formats.weights_io import read_npz


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "w": rng.laplace(size=(33, 17)).astype(np.float32),  # names of several lengths, so
        "layer.1.weight": rng.laplace(size=(8, 5)).astype(np.float16),  # data offsets vary
        "big_endian": rng.normal(size=12).astype(">f4"),
        "fortran": np.asfortranarray(rng.normal(size=(6, 4))),
        "codes": rng.integers(-128, 128, size=(64, 3), dtype=np.int8),
        "empty": np.zeros((0, 4), np.float32),
    }


def _mapped(array: np.ndarray) -> bool:
    base = array.base
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return isinstance(base, mmap.mmap)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_arrays_equal_np_loads(tmp_path: Path, save: object) -> None:
    path = tmp_path / "weights.npz"
    arrays = _arrays()
    save(path, **arrays)  # type: ignore[operator]
    read = read_npz(path).arrays
    assert list(read) == list(arrays)
    for name, expected in arrays.items():
        got = read[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert np.array_equal(got, expected), name
        assert got.flags.f_contiguous == expected.flags.f_contiguous, name
        assert got.flags.aligned, name
    # A stored member's bytes stay in the file: mapped (an int8 array is always aligned).
    assert _mapped(read["codes"]) == (save is np.savez)


def test_each_array_is_read_afresh(tmp_path: Path) -> None:
    """Nothing is kept between two reads: the mapping holds no arrays."""
    path = tmp_path / "weights.npz"
    np.savez(path, codes=np.arange(100, dtype=np.int8))
    read = read_npz(path).arrays
    first, second = read["codes"], read["codes"]
    assert first is not second and np.array_equal(first, second)


def test_an_archive_changed_after_its_check_is_refused(tmp_path: Path) -> None:
    """A stored member's .npy header is read again where the data is mapped from: an
    archive replaced after ``scan_npz`` checked it (here: a member now float64) is refused
    by name instead of mapped with the old dtype."""
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.ones((4, 4), np.float32))
    members = scan_npz(path, error=InvalidModelError)
    np.savez(path, w=np.ones((4, 4), np.float64))
    with pytest.raises(InvalidModelError, match=r"'w\.npy': its data does not match its header"):
        NpzArrays(path, members)


def test_a_stored_member_whose_bytes_changed_is_refused(tmp_path: Path) -> None:
    """Mapped, a stored member's bytes are not read by the load: its CRC-32 is checked when
    the archive is opened, so a flipped byte is refused then, as ``np.load`` refused it."""
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.zeros((64, 64), np.float32))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside w's 16 kB of zeros
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidModelError, match="CRC"):
        read_npz(path)
