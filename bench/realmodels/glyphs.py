"""A 5x7 bitmap font (digits and capitals) to draw text-like strokes without Pillow or fonts.

The OCR and orientation models in the catalog were trained on printed text: strokes of one
width, glyph-sized gaps and baselines. Random noise would drive them into regions they never
saw, and their outputs (and so the fidelity numbers) would say little about real use. A tiny
bitmap font, scaled and blurred, gives real characters at the cost of 40 lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_FONT_ROWS: dict[str, tuple[str, ...]] = {
    "0": (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    "3": ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    "4": ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    "6": ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    "8": (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    "9": (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
    "A": (" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "B": ("#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "),
    "C": (" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "),
    "D": ("###  ", "#  # ", "#   #", "#   #", "#   #", "#  # ", "###  "),
    "E": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"),
    "F": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "),
    "G": (" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####"),
    "H": ("#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "I": (" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "J": ("  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "),
    "K": ("#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"),
    "L": ("#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"),
    "M": ("#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"),
    "N": ("#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #"),
    "O": (" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "),
    "P": ("#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "),
    "Q": (" ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #"),
    "R": ("#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"),
    "S": (" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "),
    "T": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "),
    "U": ("#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "),
    "V": ("#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "),
    "W": ("#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # "),
    "X": ("#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"),
    "Y": ("#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "),
    "Z": ("#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"),
    " ": ("     ",) * 7,
}

ALPHABET = "".join(c for c in _FONT_ROWS if c != " ")
GLYPH_H, GLYPH_W = 7, 5


def glyph(char: str) -> NDArray[np.float32]:
    """The 7x5 bitmap of ``char`` (1 = ink)."""
    rows = _FONT_ROWS[char]
    return np.array([[c == "#" for c in row] for row in rows], dtype=np.float32)


def random_text(rng: np.random.Generator, n_chars: int) -> str:
    """Words of 2-8 characters separated by single spaces, ``n_chars`` long in all."""
    out: list[str] = []
    while len(out) < n_chars:
        word = rng.choice(list(ALPHABET), size=int(rng.integers(2, 9)))
        out.extend([*word.tolist(), " "])
    return "".join(out[:n_chars]).strip() or "A"


def text_mask(text: str, scale: int, *, blur: float = 0.6) -> NDArray[np.float32]:
    """Ink coverage in [0, 1] of ``text`` drawn at ``scale`` pixels per font pixel, one pixel
    of spacing between glyphs, softened by a Gaussian blur like a scanned or resized print."""
    cells = [np.pad(glyph(c), ((0, 0), (0, 1))) for c in text]
    line = np.concatenate(cells, axis=1)
    big: NDArray[Any] = np.kron(line, np.ones((scale, scale), dtype=np.float32))
    if blur > 0:
        big = ndimage.gaussian_filter(big, blur * scale / 2)
    return np.clip(big, 0.0, 1.0).astype(np.float32)
