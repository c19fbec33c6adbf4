"""The avatar pipeline on its own: what it accepts, what it makes, what it refuses."""

from __future__ import annotations

import pytest
import pyvips

from photogram.accounts import avatars
from tests.accounts.images import (
    BLUE,
    RED,
    animated_gif,
    gradient,
    hostile_uploads,
    is_blue,
    is_red,
    png_claiming,
    quadrant_jpeg,
    with_exif,
)

MAX_PIXELS = 40_000_000
METADATA_PREFIXES = ("exif", "xmp", "iptc", "icc", "gif-comment", "jpeg-comment", "png-comment")


def decoded(jpeg: bytes) -> pyvips.Image:
    image = pyvips.Image.new_from_buffer(jpeg, "")
    assert image.get("vips-loader") == "jpegload_buffer"
    return image


def metadata_fields(image: pyvips.Image) -> list[str]:
    return [f for f in image.get_fields() if f.startswith(METADATA_PREFIXES)]


def test_orientation_is_applied_and_gps_is_gone() -> None:
    upload = with_exif(quadrant_jpeg(300, 200), orientation=6)
    # The test image really carries what must not leak.
    source = pyvips.Image.new_from_buffer(upload, "")
    assert source.get("orientation") == 6
    assert "exif-ifd3-GPSLatitude" in source.get_fields()

    image = decoded(avatars.process(upload, MAX_PIXELS))
    assert (image.width, image.height, image.bands) == (400, 400, 3)
    assert image.interpretation == "srgb"
    assert metadata_fields(image) == []
    # Orientation 6 turns the stored image a quarter clockwise: the red top-left quadrant
    # of the 300x200 original becomes the top-right of the upright 200x300 picture, and
    # after the centre crop it fills the top-right quadrant of the avatar exactly.
    assert is_red(image(300, 100))
    assert is_blue(image(100, 100))
    assert is_blue(image(100, 300))
    assert is_blue(image(300, 300))


def test_without_orientation_the_picture_is_only_cropped() -> None:
    image = decoded(avatars.process(quadrant_jpeg(300, 200), MAX_PIXELS))
    # Centre crop of 300x200 keeps columns 50-250: red on the left, top half only.
    assert is_red(image(50, 100))
    assert is_blue(image(300, 100))
    assert is_blue(image(50, 300))


def rgba_png() -> bytes:
    colour = pyvips.Image.black(64, 48).new_from_image([0, 128, 0])
    alpha = pyvips.Image.black(64, 48) + 128
    return bytes(colour.bandjoin(alpha).cast("uchar").copy(interpretation="srgb").pngsave_buffer())


def cmyk_jpeg() -> bytes:
    cmyk = pyvips.Image.black(64, 64).new_from_image([0, 200, 200, 0]).cast("uchar")
    return bytes(cmyk.copy(interpretation="cmyk").jpegsave_buffer())


@pytest.mark.parametrize(
    ("label", "make"),
    [
        ("jpeg", lambda: bytes(gradient().jpegsave_buffer())),
        ("png", lambda: bytes(gradient().pngsave_buffer())),
        ("png 16-bit", lambda: bytes((gradient().cast("ushort") * 256).pngsave_buffer())),
        ("png grey", lambda: bytes(gradient()[0].copy(interpretation="b-w").pngsave_buffer())),
        ("png rgba", rgba_png),
        ("webp", lambda: bytes(gradient().webpsave_buffer())),
        ("gif", lambda: bytes(gradient(100, 80).gifsave_buffer())),
        ("jpeg cmyk", cmyk_jpeg),
        ("1x1 png", lambda: bytes(pyvips.Image.black(1, 1).pngsave_buffer())),
        ("20:1 panorama", lambda: bytes(gradient(800, 40).pngsave_buffer())),
    ],
)
def test_accepted_formats_become_a_400px_srgb_jpeg(label: str, make: object) -> None:
    assert callable(make)
    image = decoded(avatars.process(make(), MAX_PIXELS))
    assert (image.width, image.height, image.bands, image.format) == (400, 400, 3, "uchar")
    assert image.interpretation == "srgb"
    assert metadata_fields(image) == []


def test_an_animated_gif_keeps_its_first_frame() -> None:
    image = decoded(avatars.process(animated_gif(RED, BLUE), MAX_PIXELS))
    assert is_red(image(200, 200))


def test_a_valid_image_carrying_a_script_is_re_encoded_without_it() -> None:
    script = b"<script>alert(document.cookie)</script>"
    polyglot = bytes(gradient(100, 100).gifsave_buffer()) + script
    commented = bytes(gradient(100, 100).jpegsave_buffer())
    commented = commented[:2] + b"\xff\xfe" + (len(script) + 2).to_bytes(2, "big") + script
    commented += bytes(gradient(100, 100).jpegsave_buffer())[2:]
    for upload in (polyglot, commented):
        jpeg = avatars.process(upload, MAX_PIXELS)
        assert script not in jpeg
        assert b"<script" not in jpeg
        assert metadata_fields(decoded(jpeg)) == []


@pytest.mark.parametrize("case", list(hostile_uploads()))
def test_hostile_uploads_are_refused(case: str) -> None:
    _name, content = hostile_uploads()[case]
    with pytest.raises(avatars.AvatarRejectedError):
        avatars.process(content, MAX_PIXELS)


def test_the_pixel_budget_is_checked_from_the_header() -> None:
    # Claims 8000x8000 but holds a few bytes of pixels: refused by the header alone.
    with pytest.raises(avatars.AvatarRejectedError, match="too large an image"):
        avatars.process(png_claiming(8000, 8000), 1_000_000)
    # The same budget lets a real image of its size through.
    avatars.process(bytes(gradient(1000, 1000).pngsave_buffer()), 1_000_000)
    with pytest.raises(avatars.AvatarRejectedError, match="too large an image"):
        avatars.process(bytes(gradient(1001, 1000).pngsave_buffer()), 1_000_000)


def test_too_long_and_thin_is_refused_at_the_limit() -> None:
    avatars.process(bytes(gradient(20, 400).pngsave_buffer()), MAX_PIXELS)
    with pytest.raises(avatars.AvatarRejectedError, match="too long and thin"):
        avatars.process(bytes(gradient(20, 401).pngsave_buffer()), MAX_PIXELS)


class Chunks:
    """An upload that hands out ``total`` bytes in ``size`` chunks, counting the reads."""

    def __init__(self, total: int, size: int = 1000) -> None:
        self.left = total
        self.size = size
        self.handed_out = 0

    async def read(self, size: int = -1) -> bytes:
        count = min(self.left, self.size if size < 0 else min(size, self.size))
        self.left -= count
        self.handed_out += count
        return b"x" * count


async def test_reading_stops_as_soon_as_the_limit_is_passed() -> None:
    assert await avatars.read_limited(Chunks(5000), 5000) == b"x" * 5000
    endless = Chunks(10**12)
    with pytest.raises(avatars.AvatarRejectedError, match="larger than 4 KiB"):
        await avatars.read_limited(endless, 4096)
    assert endless.handed_out <= 4096 + 1000


def test_keys_are_fresh_and_named_for_the_account() -> None:
    first, second = avatars.new_key(12345), avatars.new_key(12345)
    assert first != second
    for key in (first, second):
        prefix, name = key.split("/")
        assert prefix == "avatars"
        assert avatars.NAME.fullmatch(name)
        assert name.startswith("12345-")
        assert avatars.key_of(name) == key


@pytest.mark.parametrize(
    "name",
    [
        "../photogram.sqlite3",
        "..",
        "1-abc.jpg",
        "1-AAAAAAAAAAAAAAAAAAAAAA.png",
        "x-AAAAAAAAAAAAAAAAAAAAAA.jpg",
        "1-AAAAAAAAAAAAAAAAAAAAAA.jpg/..",
        ".incoming-abc.tmp",
        "1-AAAAAAAAAAAAAAAAAAAAAA.jpg\x00",
    ],
)
def test_only_names_photogram_makes_have_a_key(name: str) -> None:
    assert avatars.key_of(name) is None
    assert avatars.key_of("1-AAAAAAAAAAAAAAAAAAAAAA.jpg") is not None
