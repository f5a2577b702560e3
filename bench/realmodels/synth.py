"""Seeded synthetic data that looks like what the catalog's models see in use.

Output fidelity is only meaningful on inputs from the model's own domain: a quantized CNN can
agree with its float self on white noise and still disagree on photographs, because
quantization errors are amplified along the activations that real data excites. So images
have the 1/f^2 power spectrum, soft-edged objects and lighting of photographs; documents have
printed text lines; audio has voiced, syllable-paced bursts, silences, tones and background
noise; files are real file formats; token ids follow a Zipf law like words do.

Everything takes a ``numpy.random.Generator`` so a fixed seed gives the same arrays.
Images are float32 ``[C, H, W]`` in 0..255 (callers normalize as their model expects).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from bench.realmodels.glyphs import random_text, text_mask

Image = NDArray[np.float32]
SAMPLE_RATE = 16_000


def pink_noise(rng: np.random.Generator, h: int, w: int, alpha: float = 2.0) -> Image:
    """Zero-mean, unit-variance noise whose power falls as 1/f^alpha (2 for photographs)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spec = rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)
    spec = spec / f ** (alpha / 2.0)
    spec[0, 0] = 0.0
    img = np.fft.irfft2(spec, s=(h, w))
    return ((img - img.mean()) / (img.std() + 1e-12)).astype(np.float32)


def _soft_shape(rng: np.random.Generator, h: int, w: int) -> Image:
    """Coverage in [0, 1] of one ellipse or rectangle with a slightly blurred edge."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(0.05, 0.35) * h, rng.uniform(0.05, 0.35) * w
    if rng.random() < 0.5:
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    else:
        mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    soft: NDArray[Any] = ndimage.gaussian_filter(mask.astype(np.float32), rng.uniform(0.5, 2.0))
    return soft.astype(np.float32)


def natural_image(rng: np.random.Generator, h: int, w: int) -> Image:
    """A photograph-like RGB image: textured background under a lighting gradient, with a few
    shaded, textured objects in front, each with its own colour."""
    gy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    gx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    light = 1.0 + 0.25 * (rng.uniform(-1, 1) * gy + rng.uniform(-1, 1) * gx)
    base = rng.uniform(60, 200, size=3).astype(np.float32)
    img = base[:, None, None] + 30.0 * pink_noise(rng, h, w)[None]
    img = img + 12.0 * np.stack([pink_noise(rng, h, w, 3.0) for _ in range(3)])
    for _ in range(int(rng.integers(3, 9))):
        cover = _soft_shape(rng, h, w)[None]
        colour = rng.uniform(10, 245, size=3).astype(np.float32)[:, None, None]
        texture = colour + 20.0 * pink_noise(rng, h, w, 2.5)[None]
        img = img * (1.0 - cover) + texture * cover
    return np.clip(img * light[None], 0, 255).astype(np.float32)


def paper(rng: np.random.Generator, h: int, w: int) -> Image:
    """Light paper with faint uneven shading and grain."""
    tone = rng.uniform(215, 250)
    shade = 6.0 * pink_noise(rng, h, w, 3.0) + 2.0 * rng.normal(size=(h, w))
    tint = rng.uniform(-6, 6, size=3).astype(np.float32)[:, None, None]
    return np.clip(tone + tint + shade[None], 0, 255).astype(np.float32)


def ink(rng: np.random.Generator, background: Image, mask: Image, y: int, x: int) -> None:
    """Print ``mask`` (ink coverage) onto ``background`` at (y, x) in a dark colour, in place;
    the part outside the image is dropped."""
    _, h, w = background.shape
    mh, mw = min(mask.shape[0], h - y), min(mask.shape[1], w - x)
    if mh <= 0 or mw <= 0:
        return
    colour = rng.uniform(10, 90, size=3).astype(np.float32)[:, None, None]
    m = mask[None, :mh, :mw]
    region = background[:, y : y + mh, x : x + mw]
    background[:, y : y + mh, x : x + mw] = region * (1.0 - m) + colour * m


def document(rng: np.random.Generator, h: int, w: int) -> Image:
    """A scanned page: paper, lines of printed text of a few sizes, sometimes a photo."""
    page = paper(rng, h, w)
    if rng.random() < 0.4:
        ph, pw = int(h * rng.uniform(0.2, 0.4)), int(w * rng.uniform(0.2, 0.5))
        y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        page[:, y0 : y0 + ph, x0 : x0 + pw] = natural_image(rng, ph, pw)
    y = int(rng.integers(4, 16))
    while True:
        scale = int(rng.integers(2, 5))
        if y + 7 * scale >= h:
            break
        x = int(rng.integers(4, max(5, w // 6)))
        n_chars = max(2, int((w - x) / (6 * scale) * rng.uniform(0.4, 1.0)))
        ink(rng, page, text_mask(random_text(rng, n_chars), scale), y, x)
        y += int(7 * scale * rng.uniform(1.5, 2.6))
    return page


def text_line(rng: np.random.Generator, n_chars: int, scale: int) -> Image:
    """One cropped line of text, as a text detector would hand it to a recognizer."""
    mask = text_mask(random_text(rng, n_chars), scale)
    pad_y, pad_x = int(scale * rng.uniform(1.0, 3.0)), int(scale * rng.uniform(1.0, 4.0))
    h, w = mask.shape[0] + 2 * pad_y, mask.shape[1] + 2 * pad_x
    crop = paper(rng, h, w)
    ink(rng, crop, mask, pad_y, pad_x)
    return crop


def resize(img: Image, h: int, w: int) -> Image:
    """Bilinear resize of a ``[C, H, W]`` image."""
    zoom = (1.0, h / img.shape[1], w / img.shape[2])
    out: NDArray[Any] = ndimage.zoom(img, zoom, order=1, grid_mode=True, mode="nearest")
    return out.astype(np.float32)


def captcha(rng: np.random.Generator, h: int, w: int) -> Image:
    """A text captcha: noisy colourful background, 4-6 jittered, tilted characters and
    interference curves (ddddocr's domain). Returned as RGB like the others."""
    img = natural_image(rng, h, w) * 0.5 + 100.0
    n = int(rng.integers(4, 7))
    step = w // (n + 1)
    for i in range(n):
        mask = text_mask(random_text(rng, 1), int(rng.integers(5, 8)), blur=0.3)
        mask = ndimage.rotate(mask, rng.uniform(-25, 25), reshape=True, order=1)
        mask = np.clip(mask, 0, 1).astype(np.float32)
        y = int(rng.integers(0, max(1, h - mask.shape[0])))
        ink(rng, img, mask, y, int(step * (i + 0.5) + rng.integers(-4, 5)))
    xs = np.arange(w)
    for _ in range(int(rng.integers(1, 4))):
        ys = h / 2 + h / 3 * np.sin(xs / w * rng.uniform(2, 8) + rng.uniform(0, 6))
        cols = rng.uniform(0, 255, size=3)
        for dy in (0, 1):
            yi = np.clip(ys.astype(int) + dy, 0, h - 1)
            img[:, yi, xs] = cols[:, None]
    return np.clip(img, 0, 255).astype(np.float32)


def speech_like(rng: np.random.Generator, seconds: float) -> NDArray[np.float32]:
    """16 kHz audio: background noise, voiced syllables (harmonics of a gliding pitch under
    a formant envelope, ~4 per second) in phrases separated by silences, and sometimes a
    steady tone. Peak around 0.5, as recorded speech."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    out = rng.normal(scale=10 ** rng.uniform(-3.5, -2.0), size=n)
    pos = int(rng.uniform(0.0, 0.3) * SAMPLE_RATE)
    while pos < n:
        length = int(rng.uniform(0.5, 1.5) * SAMPLE_RATE)
        seg = slice(pos, min(n, pos + length))
        ts = t[seg] - t[pos]
        f0 = rng.uniform(90, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * ts))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        formant = rng.uniform(400, 900)
        voiced = sum(
            np.sin(k * phase) * np.exp(-(((k * f0.mean() - formant) / 600.0) ** 2)) / k
            for k in range(1, 16)
        )
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * ts), 0, None) ** 0.7
        out[seg] += 0.3 * voiced * syllables
        pos += length + int(rng.uniform(0.2, 0.8) * SAMPLE_RATE)
    if rng.random() < 0.5:
        out += 0.05 * np.sin(2 * np.pi * rng.choice([440.0, 1000.0, 2600.0]) * t)
    return (0.5 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def zipf_token_ids(
    rng: np.random.Generator, n: int, *, lo: int, hi: int, exponent: float = 1.1
) -> NDArray[np.int64]:
    """``n`` ids from [lo, hi) with Zipf-like frequencies (a few very common, a long tail),
    the common ones spread over the range by a fixed permutation."""
    ranks = np.arange(1, hi - lo + 1, dtype=np.float64)
    p = 1.0 / (ranks + 10.0) ** exponent
    order = np.random.default_rng(12345).permutation(hi - lo)
    picks = rng.choice(hi - lo, size=n, p=p / p.sum())
    return (lo + order[picks]).astype(np.int64)
