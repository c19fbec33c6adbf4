"""photogram's blurhash encoder against the reference C encoder (blurhash-python's)."""

from __future__ import annotations

import pytest
from blurhash import _functions as reference  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from photogram.media import blurhash


def reference_hash(pixels: bytes, width: int, height: int, components: tuple[int, int]) -> str:
    """The reference C encoder, called as blurhash-python's own ``encode`` calls it."""
    destination = reference.ffi.new("char[]", 2 + 4 + 80 * 2 + 1)
    result = reference.lib.create_hash_from_pixels(
        *components,
        width,
        height,
        reference.ffi.from_buffer("uint8_t[]", pixels),
        width * 3,
        destination,
    )
    return str(reference.ffi.string(result).decode("ascii"))


def values(hash_: str) -> list[int]:
    """The hash's fields as numbers: size flag, maximum AC, DC, then each AC term."""
    digits = [blurhash._DIGITS.index(c) for c in hash_]
    dc = digits[2] * 83**3 + digits[3] * 83**2 + digits[4] * 83 + digits[5]
    acs = [digits[i] * 83 + digits[i + 1] for i in range(6, len(digits), 2)]
    return [digits[0], digits[1], dc, *acs]


@st.composite
def photos(draw: st.DrawFn) -> tuple[bytes, int, int, tuple[int, int]]:
    width = draw(st.integers(1, 32))
    height = draw(st.integers(1, 32))
    # Smooth images (a gradient plus noise), as thumbnails of photos are, and pure noise.
    noise = draw(st.integers(0, 255))
    seed = draw(st.binary(min_size=width * height * 3, max_size=width * height * 3))
    base = draw(st.tuples(*[st.integers(0, 255)] * 3))
    pixels = bytes(
        min(255, max(0, base[i % 3] + (i // 3 % width) * 2 + (seed[i] * noise) // 255 - noise // 2))
        for i in range(width * height * 3)
    )
    components = draw(st.tuples(st.integers(1, 9), st.integers(1, 9)))
    return pixels, width, height, components


@settings(max_examples=300, deadline=None)
@given(photos())
def test_the_encoder_agrees_with_the_reference(
    photo: tuple[bytes, int, int, tuple[int, int]],
) -> None:
    components = photo[3]
    ours, theirs = blurhash.encode(*photo), reference_hash(*photo)
    assert len(ours) == len(theirs) == 4 + 2 * components[0] * components[1]
    if ours == theirs:
        return
    # The reference sums in 32-bit floats, this encoder in 64-bit: a value that falls on a
    # rounding boundary may come out one step apart, never more.
    differences = [abs(a - b) for a, b in zip(values(ours), values(theirs), strict=True)]
    assert differences[0] == 0  # the size flag
    assert differences[1] <= 1  # the maximum AC term
    dc_ours, dc_theirs = values(ours)[2], values(theirs)[2]
    for shift in (16, 8, 0):
        assert abs((dc_ours >> shift & 255) - (dc_theirs >> shift & 255)) <= 1
    if differences[1] == 0:
        for a, b in zip(values(ours)[3:], values(theirs)[3:], strict=True):
            assert all(abs(a // 19**k % 19 - b // 19**k % 19) <= 1 for k in range(3))


def test_a_photo_thumbnail_hashes_exactly_as_the_reference() -> None:
    width, height = 32, 24
    pixels = bytes(
        (x * 8 + y * 3 + band * 40) % 256
        for y in range(height)
        for x in range(width)
        for band in range(3)
    )
    for components in ((4, 3), (3, 4), (1, 1), (9, 9)):
        assert blurhash.encode(pixels, width, height, components) == reference_hash(
            pixels, width, height, components
        )


@pytest.mark.parametrize(
    ("pixels", "width", "height", "components", "message"),
    [
        (b"\x00" * 12, 2, 2, (0, 3), "components must be 1-9"),
        (b"\x00" * 12, 2, 2, (4, 10), "components must be 1-9"),
        (b"\x00" * 11, 2, 2, (4, 3), "are not 2x2 RGB pixels"),
        (b"", 0, 0, (4, 3), "are not 0x0 RGB pixels"),
    ],
)
def test_bad_arguments_are_refused(
    pixels: bytes, width: int, height: int, components: tuple[int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        blurhash.encode(pixels, width, height, components)
