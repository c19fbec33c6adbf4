"""Named photo filters, in the spirit of Instagram's, as pixel operations in libvips.

A filter takes the normalised photo (8-bit sRGB, three bands, no alpha) and returns one of
the same kind and size. Each is built from four kinds of step:

- **tone**: a function of one channel's value (contrast, brightness, a curve, or a blend
  with a solid colour: screen, overlay, soft light, lighten). Any chain of these is still a
  function of one 8-bit value per channel, so the chain is folded in Python into one
  256-entry lookup table per channel and applied with a single ``maplut``: a table look-up
  per pixel, however many steps the filter has.
- **colour matrix**: saturation and sepia as the 3x3 matrices CSS filters use; consecutive
  matrices are multiplied together and applied with one ``recomb``.
- **selective saturation** in LCh (lark): chroma scaled by a weight that depends on hue,
  which no per-channel table or matrix can express.
- **vignette**: a radial mask from the image's own coordinates, so it falls off the same
  way at every size.

Everything here is deterministic: the same pixels in give the same pixels out.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyvips

#: pyvips ships no type information; an image is an ``Any`` to mypy.
Image = Any
#: A value in [0, 1] and the channel (0 red, 1 green, 2 blue) to a value in [0, 1].
Tone = Callable[[float, int], float]
Matrix = tuple[tuple[float, float, float], ...]
RGB = tuple[float, float, float]

#: Rec. 709 luma weights, applied to gamma-encoded values as CSS filters do.
LUMA = (0.2126, 0.7152, 0.0722)


class UnknownFilter(ValueError):
    """No filter has that name; the message lists the ones that exist, for the client."""


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    title: str
    description: str
    apply: Callable[[Image], Image]


# Tones. Colours are given in 0-255 like CSS, and used in [0, 1].


def contrast(amount: float) -> Tone:
    return lambda x, _: (x - 0.5) * amount + 0.5


def brightness(amount: float) -> Tone:
    return lambda x, _: x * amount


def screen(colour: RGB, opacity: float = 1.0) -> Tone:
    def tone(x: float, channel: int) -> float:
        c = colour[channel] / 255
        return _mix(x, 1 - (1 - x) * (1 - c), opacity)

    return tone


def overlay(colour: RGB, opacity: float = 1.0) -> Tone:
    def tone(x: float, channel: int) -> float:
        c = colour[channel] / 255
        blended = 2 * x * c if x < 0.5 else 1 - 2 * (1 - x) * (1 - c)
        return _mix(x, blended, opacity)

    return tone


def soft_light(colour: RGB, opacity: float = 1.0) -> Tone:
    """The W3C compositing formula, so the numbers can be compared with CSS versions."""

    def tone(x: float, channel: int) -> float:
        c = colour[channel] / 255
        if c <= 0.5:
            blended = x - (1 - 2 * c) * x * (1 - x)
        else:
            d = ((16 * x - 12) * x + 4) * x if x <= 0.25 else math.sqrt(x)
            blended = x + (2 * c - 1) * (d - x)
        return _mix(x, blended, opacity)

    return tone


def lighten(colour: RGB) -> Tone:
    return lambda x, channel: max(x, colour[channel] / 255)


def curves(
    red: Sequence[tuple[int, int]],
    green: Sequence[tuple[int, int]] | None = None,
    blue: Sequence[tuple[int, int]] | None = None,
) -> Tone:
    """A curves adjustment: control points (in, out) in 0-255 per channel, joined smoothly.

    Monotone cubic interpolation (Fritsch-Carlson), as photo editors' curves tools do: it
    passes through every point and never overshoots between them, so a rising curve
    cannot invert tones. Green and blue default to the red curve.
    """
    per_channel = [_monotone(red), _monotone(green or red), _monotone(blue or red)]
    return lambda x, channel: per_channel[channel](x)


# Colour matrices (CSS Filter Effects).


def saturate(amount: float) -> Matrix:
    r, g, b = LUMA
    s = amount
    return (
        (r + (1 - r) * s, g - g * s, b - b * s),
        (r - r * s, g + (1 - g) * s, b - b * s),
        (r - r * s, g - g * s, b + (1 - b) * s),
    )


def sepia(amount: float) -> Matrix:
    k = 1 - amount
    return (
        (0.393 + 0.607 * k, 0.769 - 0.769 * k, 0.189 - 0.189 * k),
        (0.349 - 0.349 * k, 0.686 + 0.314 * k, 0.168 - 0.168 * k),
        (0.272 - 0.272 * k, 0.534 - 0.534 * k, 0.131 + 0.869 * k),
    )


# Steps on images.


def apply_tones(image: Image, *tones: Tone) -> Image:
    """``tones`` in order, folded into one lookup table per channel and mapped at once."""
    table = bytearray(256 * 3)
    for value in range(256):
        for channel in range(3):
            x = value / 255
            for tone in tones:
                # Clamped after every step, as chained CSS filters and layer blends are.
                x = min(1.0, max(0.0, tone(x, channel)))
            table[value * 3 + channel] = round(x * 255)
    lut = pyvips.Image.new_from_memory(bytes(table), 256, 1, 3, "uchar")
    return image.maplut(lut)


def apply_matrices(image: Image, *matrices: Matrix) -> Image:
    """``matrices`` in order (the first applied first), multiplied into one ``recomb``."""
    combined = matrices[0]
    for matrix in matrices[1:]:
        combined = _multiply(matrix, combined)
    return _to_uchar(image.recomb(pyvips.Image.new_from_list([list(row) for row in combined])))


def selective_chroma(image: Image, hue: float, inside: float, outside: float) -> Image:
    """Chroma times ``inside`` for hues near ``hue`` (degrees, LCh), ``outside`` far from it.

    The weight is cos² of the hue distance, zero beyond 90°: smooth, so neighbouring hues
    never band.
    """
    lch = image.colourspace("lch")
    closeness = (lch[2] - hue).cos()
    weight = (closeness > 0).ifthenelse(closeness * closeness, 0)
    chroma = lch[1] * (weight * (inside - outside) + outside)
    shifted = lch[0].bandjoin([chroma, lch[2]]).copy(interpretation="lch")
    return _to_uchar(shifted.colourspace("srgb"))


def vignette(image: Image, strength: float, colour: RGB = (0, 0, 0), start: float = 0.4) -> Image:
    """Blend towards ``colour`` from ``start`` (of the centre-to-corner distance) outwards.

    Distances are measured in each axis relative to the half-size, so a portrait and a
    landscape darken their corners alike, and a 320 px variant looks like the 2048 px one.
    """
    width, height = image.width, image.height
    xy = pyvips.Image.xyz(width, height)
    half_x, half_y = max(width - 1, 1) / 2, max(height - 1, 1) / 2
    dx = (xy[0] - half_x) / half_x
    dy = (xy[1] - half_y) / half_y
    # 0 at the centre, 1 in each corner.
    distance = ((dx * dx + dy * dy) / 2) ** 0.5
    t = ((distance - start) / (1 - start)).clamp(min=0, max=1)
    amount = t * t * (3 - 2 * t) * strength  # smoothstep: no visible edge where it starts
    blended = image * (1 - amount) + (amount * 1.0).linear(list(colour), [0, 0, 0])
    return _to_uchar(blended)


def greyscale(image: Image) -> Image:
    """Luma in all three bands (R = G = B), still an sRGB image."""
    luma = _to_uchar(image.recomb(pyvips.Image.new_from_list([list(LUMA)])))
    return luma.bandjoin([luma, luma]).copy(interpretation="srgb")


# The filters.


def _normal(image: Image) -> Image:
    return image


def _clarendon(image: Image) -> Image:
    # Punchier contrast and colour, shadows pushed towards cyan-blue and highlights kept
    # bright: CSS's contrast(1.2) saturate(1.35) plus a light blue overlay, with a curve
    # that keeps blue in the shadows.
    image = apply_tones(image, contrast(1.2))
    image = apply_matrices(image, saturate(1.35))
    return apply_tones(
        image,
        overlay((127, 187, 227), 0.2),
        curves([(0, 0), (255, 255)], [(0, 8), (255, 255)], [(0, 20), (128, 134), (255, 255)]),
    )


def _gingham(image: Image) -> Image:
    # Faded and soft: blacks lifted, highlights held back, colour muted, a lavender cast.
    image = apply_matrices(image, saturate(0.85))
    return apply_tones(
        image,
        brightness(1.03),
        curves([(0, 26), (64, 72), (192, 192), (255, 236)]),
        soft_light((230, 230, 250), 0.5),
    )


def _juno(image: Image) -> Image:
    # Warm and vivid: reds and yellows pop, cool tones lean green, whites glow.
    image = apply_matrices(image, sepia(0.12), saturate(1.45))
    return apply_tones(
        image,
        contrast(1.12),
        curves(
            [(0, 0), (128, 140), (255, 255)],
            [(0, 0), (128, 130), (255, 252)],
            [(0, 0), (128, 118), (255, 240)],
        ),
        brightness(1.05),
    )


def _lark(image: Image) -> Image:
    # Bright and airy: lifts exposure, flattens contrast a little, and takes colour out of
    # reds and skin while strengthening blues and greens.
    image = apply_tones(image, contrast(0.9), screen((34, 37, 63)), brightness(1.04))
    return selective_chroma(image, hue=40, inside=0.65, outside=1.3)


def _moon(image: Image) -> Image:
    # Black and white with a soft, lifted black and a little extra contrast in the mids.
    grey = greyscale(image)
    return apply_tones(
        grey, contrast(1.1), brightness(1.1), soft_light((160, 160, 160)), lighten((56, 56, 56))
    )


def _earlybird(image: Image) -> Image:
    # Warm, faded film with darkened, reddish-brown corners.
    image = apply_matrices(image, sepia(0.25))
    image = apply_tones(image, contrast(0.9), overlay((208, 186, 142), 0.35))
    return vignette(image, strength=0.55, colour=(54, 3, 9), start=0.35)


FILTERS: dict[str, Filter] = {
    f.name: f
    for f in (
        Filter("normal", "Normal", "The photo as taken.", _normal),
        Filter(
            "clarendon",
            "Clarendon",
            "More contrast and saturation; cool shadows, bright highlights.",
            _clarendon,
        ),
        Filter(
            "gingham",
            "Gingham",
            "A washed-out, vintage look: lifted blacks, muted colour, a lavender cast.",
            _gingham,
        ),
        Filter(
            "juno",
            "Juno",
            "Warm and vivid: reds and yellows pop, whites glow.",
            _juno,
        ),
        Filter(
            "lark",
            "Lark",
            "Brighter and airy; blues and greens strengthened, reds toned down.",
            _lark,
        ),
        Filter(
            "moon",
            "Moon",
            "Black and white with soft, lifted shadows.",
            _moon,
        ),
        Filter(
            "earlybird",
            "Earlybird",
            "Warm, faded film with a dark, reddish-brown vignette.",
            _earlybird,
        ),
    )
}


def get_filter(name: str | None) -> Filter:
    """The filter called ``name`` (None means no filter), or UnknownFilter."""
    if name is None:
        return FILTERS["normal"]
    found = FILTERS.get(name)
    if found is None:
        known = ", ".join(FILTERS)
        raise UnknownFilter(f"Unknown filter {name!r}; choose one of: {known}.")
    return found


def list_filters() -> list[dict[str, str]]:
    """The filters as the API lists them, in display order."""
    return [
        {"id": f.name, "title": f.title, "description": f.description} for f in FILTERS.values()
    ]


def _mix(a: float, b: float, opacity: float) -> float:
    return a + (b - a) * opacity


def _to_uchar(image: Image) -> Image:
    # cast() clips to 0-255 but truncates: round first, or every float step darkens by 0.5.
    return (image + 0.5).cast("uchar").copy(interpretation="srgb")


def _multiply(a: Matrix, b: Matrix) -> Matrix:
    def cell(i: int, j: int) -> float:
        return sum(a[i][k] * b[k][j] for k in range(3))

    return tuple((cell(i, 0), cell(i, 1), cell(i, 2)) for i in range(3))


def _monotone(points: Sequence[tuple[int, int]]) -> Callable[[float], float]:
    xs = [p[0] / 255 for p in points]
    ys = [p[1] / 255 for p in points]
    if len(xs) < 2 or any(b <= a for a, b in itertools.pairwise(xs)):
        raise ValueError("curve points need at least two strictly increasing inputs")
    n = len(xs)
    slopes = [(ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) for i in range(n - 1)]
    tangents = [slopes[0], *((slopes[i - 1] + slopes[i]) / 2 for i in range(1, n - 1)), slopes[-1]]
    for i, slope in enumerate(slopes):
        if slope == 0:
            tangents[i] = tangents[i + 1] = 0.0
            continue
        a, b = tangents[i] / slope, tangents[i + 1] / slope
        if a * a + b * b > 9:  # Fritsch-Carlson: shrink the tangents so no overshoot
            scale = 3 / math.sqrt(a * a + b * b)
            tangents[i], tangents[i + 1] = scale * a * slope, scale * b * slope

    def curve(x: float) -> float:
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            return ys[-1]
        i = next(k for k in range(n - 1) if x <= xs[k + 1])
        h = xs[i + 1] - xs[i]
        t = (x - xs[i]) / h
        return (
            (2 * t**3 - 3 * t**2 + 1) * ys[i]
            + (t**3 - 2 * t**2 + t) * h * tangents[i]
            + (-2 * t**3 + 3 * t**2) * ys[i + 1]
            + (t**3 - t**2) * h * tangents[i + 1]
        )

    return curve
