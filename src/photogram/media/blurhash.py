"""Blurhash (https://blurha.sh): a few cosine terms of a photo, as a short string a client
paints while the photo loads. Mastodon clients read it from every media attachment.

This is the reference encoder's algorithm, in a few lines of Python over a thumbnail of
at most 32x32 pixels, where it costs about a millisecond. The Python package that wraps
the reference C encoder imports Pillow for its public API, which cost every process that
handles photos 4 MiB for nothing else (libvips does the imaging).
``tests/media/test_blurhash.py`` checks this against that encoder.
"""

from __future__ import annotations

import math
from functools import cache
from operator import mul

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def _to_linear(value: int) -> float:
    v = value / 255
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


_LINEAR = tuple(_to_linear(value) for value in range(256))


def encode(pixels: bytes, width: int, height: int, components: tuple[int, int]) -> str:
    """The blurhash of ``pixels`` (8-bit sRGB, three bytes a pixel, rows top to bottom),
    with ``components`` (x, y) cosine terms, each 1-9."""
    x_count, y_count = components
    if not (1 <= x_count <= 9 and 1 <= y_count <= 9):
        raise ValueError(f"blurhash components must be 1-9, not {x_count}x{y_count}")
    if width < 1 or height < 1 or len(pixels) != width * height * 3:
        raise ValueError(f"{len(pixels)} bytes are not {width}x{height} RGB pixels")
    channels = [[_LINEAR[value] for value in pixels[band::3]] for band in range(3)]
    factors = []
    for j in range(y_count):
        for i in range(x_count):
            column, row = _cosines(width, i), _cosines(height, j)
            basis = [c * r for r in row for c in column]
            scale = (1 if i == j == 0 else 2) / (width * height)
            factors.append([scale * sum(map(mul, basis, channel)) for channel in channels])
    dc, ac = factors[0], factors[1:]
    if ac:
        largest = max(abs(value) for factor in ac for value in factor)
        quantised_maximum = int(max(0, min(82, math.floor(largest * 166 - 0.5))))
        maximum = (quantised_maximum + 1) / 166
    else:
        quantised_maximum, maximum = 0, 1.0
    r, g, b = (_to_srgb(value) for value in dc)
    parts = [
        _base83((x_count - 1) + (y_count - 1) * 9, 1),
        _base83(quantised_maximum, 1),
        _base83((r << 16) + (g << 8) + b, 4),
    ]
    for factor in ac:
        r, g, b = (_quantise_ac(value / maximum) for value in factor)
        parts.append(_base83(r * 19 * 19 + g * 19 + b, 2))
    return "".join(parts)


@cache
def _cosines(length: int, component: int) -> tuple[float, ...]:
    return tuple(math.cos(math.pi * component * n / length) for n in range(length))


def _to_srgb(value: float) -> int:
    v = max(0.0, min(1.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _quantise_ac(value: float) -> int:
    signed_root = math.copysign(abs(value) ** 0.5, value)
    return int(max(0, min(18, math.floor(signed_root * 9 + 9.5))))


def _base83(value: int, length: int) -> str:
    return "".join(_DIGITS[value // 83 ** (length - i) % 83] for i in range(1, length + 1))
