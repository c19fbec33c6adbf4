"""Images for the avatar tests: real ones made with libvips, and hostile ones made by hand."""

from __future__ import annotations

import struct
import zlib

import pyvips

RED = [255, 0, 0]
BLUE = [0, 0, 255]


def is_red(pixel: list[float]) -> bool:
    return pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def is_blue(pixel: list[float]) -> bool:
    return pixel[0] < 60 and pixel[1] < 60 and pixel[2] > 200


def quadrant_jpeg(width: int = 300, height: int = 200) -> bytes:
    """A blue JPEG whose top-left quadrant (as stored) is red, without metadata."""
    xyz = pyvips.Image.xyz(width, height)
    red_corner = (xyz[0] < width // 2) & (xyz[1] < height // 2)
    image = red_corner.ifthenelse(RED, BLUE).cast("uchar").copy(interpretation="srgb")
    return bytes(image.jpegsave_buffer(Q=95, keep="none"))


def exif_segment(orientation: int, latitude: tuple[int, int, int] = (48, 51, 30)) -> bytes:
    """An APP1 Exif block: IFD0 with an Orientation tag and a GPS IFD with a latitude.

    Little-endian TIFF structure, written out by hand so the test depends on no EXIF writer.
    """
    ifd0_offset = 8
    ifd0_entries = 2
    gps_offset = ifd0_offset + 2 + 12 * ifd0_entries + 4
    gps_entries = 2
    latitude_offset = gps_offset + 2 + 12 * gps_entries + 4
    tiff = b"II*\x00" + struct.pack("<I", ifd0_offset)
    tiff += struct.pack("<H", ifd0_entries)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)  # Orientation, SHORT
    tiff += struct.pack("<HHII", 0x8825, 4, 1, gps_offset)  # GPSInfo IFD pointer, LONG
    tiff += struct.pack("<I", 0)
    tiff += struct.pack("<H", gps_entries)
    tiff += struct.pack("<HHI", 0x0001, 2, 2) + b"N\x00\x00\x00"  # GPSLatitudeRef, ASCII
    tiff += struct.pack("<HHII", 0x0002, 5, 3, latitude_offset)  # GPSLatitude, 3 RATIONAL
    tiff += struct.pack("<I", 0)
    degrees, minutes, seconds = latitude
    tiff += struct.pack("<6I", degrees, 1, minutes, 1, seconds, 1)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_exif(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an EXIF block (orientation and GPS) inserted right after its SOI marker."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + exif_segment(orientation) + jpeg[2:]


def gradient(width: int = 600, height: int = 400) -> pyvips.Image:
    """A busy image (JPEG cannot squeeze it to a few bytes, so truncation cuts pixel data)."""
    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    bands = [(x * 7 + y * 3) % 256, y % 256, (x * y) % 251]
    return bands[0].bandjoin(bands[1:]).cast("uchar").copy(interpretation="srgb")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` RGB pixels, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def animated_gif(first: list[int], second: list[int], size: int = 40) -> bytes:
    """A two-frame GIF: ``first`` colour, then ``second``."""
    frames = [
        (pyvips.Image.black(size, size, bands=3) + colour).cast("uchar")
        for colour in (first, second)
    ]
    strip = frames[0].join(frames[1], "vertical").copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", size)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100, 100])
    return bytes(strip.gifsave_buffer())


def hostile_uploads() -> dict[str, tuple[str, bytes]]:
    """Uploads that must all be refused, as (file name to send, content), by case name."""
    good_jpeg = bytes(gradient().jpegsave_buffer(Q=90))
    return {
        "zero bytes": ("empty.jpg", b""),
        "random bytes": ("noise.jpg", bytes(range(256)) * 40),
        "truncated JPEG": ("cut.jpg", good_jpeg[: len(good_jpeg) // 2]),
        "SVG": (
            "vector.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400">'
            b'<rect width="400" height="400" fill="red"/></svg>',
        ),
        "SVG named .png": (
            "innocent.png",
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" '
            b'height="9"><script>alert(1)</script></svg>',
        ),
        "HTML named .jpg": ("photo.jpg", b"<html><body><script>alert(1)</script></body></html>"),
        "text named .jpg": ("photo.jpg", b"just some text, not an image at all\n" * 10),
        "decompression bomb": ("bomb.png", png_claiming(100_000, 100_000)),
        "GIF header then script": ("poly.gif", b"GIF89a/*\x00\x00*/=1;alert(document.cookie)//"),
        "1x100000 strip": ("strip.png", bytes(pyvips.Image.black(1, 100_000).pngsave_buffer())),
        "TIFF": ("photo.jpg", bytes(gradient(40, 40).tiffsave_buffer())),
    }
