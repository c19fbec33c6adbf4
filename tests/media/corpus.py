"""Hostile and malformed uploads, built by code: every one must be refused as a photo.

``corpus()`` yields ``(name, content, reason)``. All are quick to build and small enough for
the upload API tests to send every one: the largest, a PNG whose text chunk just exceeds
the 4 MiB metadata budget, is 4.4 MB; all the others are under 3 MB. Some claim far more
pixels than they hold: the claim alone must be enough to refuse them.

Not here, because photogram accepts them on purpose: a JPEG or PNG with bytes appended
after its end (phones append data after a JPEG's end-of-image marker; only decoded pixels
are ever stored, so the tail goes nowhere), and a JPEG whose entropy-coded data is damaged
but still decodes (it cannot be told from the many phone JPEGs that libjpeg warns about).
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator

import pyvips

from tests.accounts.images import gradient, png_chunk

#: Far below any corpus claim, far above the small real images here.
MAX_PIXELS = 40_000_000


def corpus() -> Iterator[tuple[str, bytes, str]]:
    jpeg = bytes(gradient(600, 400).jpegsave_buffer(Q=90, keep="none"))
    png = bytes(gradient(300, 200).pngsave_buffer(keep="none"))
    webp = bytes(gradient(600, 400).webpsave_buffer(Q=80, keep="none"))
    progressive = bytes(gradient(60, 40).jpegsave_buffer(Q=90, interlace=True, keep="none"))
    noise = random.Random(4).randbytes(4096)

    yield "zero bytes", b"", "nothing to read"
    yield "random bytes", noise, "no image format's magic bytes"
    yield "truncated JPEG", jpeg[: len(jpeg) // 2], "the scan ends half way"
    yield "JPEG header only", jpeg[:400], "markers but no pixel data"
    yield "truncated PNG", png[: len(png) // 2], "IDAT stream cut off, no IEND"
    yield "truncated WebP", webp[: len(webp) // 2], "the VP8 bitstream is cut off"
    yield "PNG with a corrupt middle", flip_middle(png), "checksums of the pixel data fail"
    yield "JPEG with a corrupt Huffman table", break_huffman_table(jpeg), "cannot be decoded"
    yield "JPEG magic then garbage", b"\xff\xd8\xff" + noise, "no JPEG structure"
    yield "PNG with a corrupt IHDR", corrupt_ihdr(png), "the critical header fails its CRC"
    yield "SVG", SVG, "vector and scriptable: never a photo"
    yield "SVG entity bomb", SVG_BOMB, "XML entity expansion (billion laughs)"
    yield "SVG named as XML", b"\n\n  " + SVG_WITH_SCRIPT, "SVG after whitespace"
    yield "HTML", b"<!DOCTYPE html><html><script>alert(1)</script></html>", "a document"
    yield "PDF", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "a document"
    yield "GIF", gif(animated=False), "GIF is refused: no photo needs 256 colours"
    yield "animated GIF", gif(animated=True), "animated"
    yield "animated WebP", animated_webp(), "animated"
    yield "APNG", apng(png), "animated (acTL chunk), though libpng shows frame one"
    yield "AVIF image sequence", avif_sequence(), "animated (avis brand)"
    yield "PNG claiming 100000x100000", png_claiming(100_000, 100_000), "decompression bomb"
    yield "JPEG claiming 65000x65000", jpeg_claiming(jpeg, 65_000, 65_000), "decompression bomb"
    yield "WebP claiming 16383x16383", webp_claiming(16_383, 16_383), "decompression bomb"
    yield "JPEG claiming 0x0", jpeg_claiming(jpeg, 0, 0), "no pixels"
    yield (
        "progressive JPEG claiming 6000x6000",
        jpeg_claiming(progressive, 6_000, 6_000),
        "36 MP fits the pixel budget, but a progressive JPEG is held whole while decoding",
    )
    yield "1x100000 strip", strip(1, 100_000), "aspect ratio 100000:1"
    yield "100000x1 strip", strip(100_000, 1), "aspect ratio 100000:1"
    yield "GIF header then JavaScript", b"GIF89a/*\x00\x00*/=1;alert(document.cookie)//", "polyglot"
    yield "JPEG magic then SVG", b"\xff\xd8\xff" + SVG, "polyglot that is no JPEG"
    yield "TIFF", bytes(gradient(40, 40).tiffsave_buffer()), "TIFF is not accepted"
    yield "BMP", bmp(4, 4), "BMP is not accepted"
    yield "PNG with a zTXt bomb", png_with_chunk(png, b"zTXt", ztxt_bomb()), "zlib bomb"
    yield "PNG with a huge iCCP", png_with_chunk(png, b"iCCP", iccp_bomb()), "zlib bomb"
    yield "PNG with a 4 MiB tEXt", png_with_chunk(png, b"tEXt", big_text()), "oversized metadata"
    yield "PNG of 200000 empty chunks", many_chunks(png, 200_000), "only there to be slow"
    yield "JPEG XL", b"\xff\x0a" + noise[:64], "JPEG XL is not accepted"
    yield "Photoshop document", b"8BPS\x00\x01" + noise[:64], "not a photo format"
    yield "ISO media of an unknown brand", iso_media(b"qt  "), "a video container"


SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400">'
    b'<rect width="400" height="400" fill="red"/></svg>'
)
SVG_WITH_SCRIPT = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9">'
    b"<script>alert(1)</script></svg>"
)
SVG_BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE svg ['
    + b'<!ENTITY a0 "lol">'
    + b"".join(
        b'<!ENTITY a%d "%s">' % (i, b"".join(b"&a%d;" % (i - 1) for _ in range(10)))
        for i in range(1, 10)
    )
    + b']><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><text>&a9;</text></svg>'
)


def png_with_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """``png`` with one more chunk, placed right after IHDR (where iCCP must go)."""
    after_ihdr = 8 + 12 + 13
    return png[:after_ihdr] + png_chunk(kind, data) + png[after_ihdr:]


def many_chunks(png: bytes, count: int) -> bytes:
    """``png`` with ``count`` empty private chunks (which decoders skip) after IHDR."""
    after_ihdr = 8 + 12 + 13
    return png[:after_ihdr] + png_chunk(b"zzZz", b"") * count + png[after_ihdr:]


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG (correct CRCs) whose IHDR claims ``width`` x ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def corrupt_ihdr(png: bytes) -> bytes:
    data = bytearray(png)
    data[8 + 8 + 9] ^= 0xFF  # a byte of IHDR's colour type; the CRC now fails
    return bytes(data)


def flip_middle(data: bytes, count: int = 64) -> bytes:
    middle = len(data) // 2
    return (
        data[:middle]
        + bytes(b ^ 0xA5 for b in data[middle : middle + count])
        + data[middle + count :]
    )


def break_huffman_table(jpeg: bytes) -> bytes:
    """Every DHT segment's code counts zeroed: no Huffman code exists to decode with."""
    data = bytearray(jpeg)
    start = 0
    while (at := data.find(b"\xff\xc4", start)) >= 0:
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        data[at + 5 : at + 21] = bytes(16)
        start = at + 2 + length
    return bytes(data)


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0, or SOF2 if progressive) rewritten to claim
    ``width`` x ``height``."""
    at = jpeg.find(b"\xff\xc0")
    if at < 0:
        at = jpeg.index(b"\xff\xc2")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def webp_claiming(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims ``width`` x ``height`` (each at most 16383),
    followed by a few bytes of nothing."""
    bits = (width - 1) | (height - 1) << 14
    vp8l = b"\x2f" + struct.pack("<I", bits) + bytes(27)
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def strip(width: int, height: int) -> bytes:
    return bytes(pyvips.Image.black(width, height).cast("uchar").pngsave_buffer(keep="none"))


def gif(*, animated: bool) -> bytes:
    size = 40
    colours = ([255, 0, 0], [0, 0, 255]) if animated else ([255, 0, 0],)
    frames = [(pyvips.Image.black(size, size, bands=3) + c).cast("uchar") for c in colours]
    image = pyvips.Image.arrayjoin(frames, across=1).copy(interpretation="srgb")
    if animated:
        image.set_type(pyvips.GValue.gint_type, "page-height", size)
        image.set_type(pyvips.GValue.array_int_type, "delay", [100] * len(frames))
    return bytes(image.gifsave_buffer())


def animated_webp() -> bytes:
    size = 40
    frames = [
        (pyvips.Image.black(size, size, bands=3) + c).cast("uchar")
        for c in ([255, 0, 0], [0, 0, 255])
    ]
    image = pyvips.Image.arrayjoin(frames, across=1).copy(interpretation="srgb")
    image.set_type(pyvips.GValue.gint_type, "page-height", size)
    image.set_type(pyvips.GValue.array_int_type, "delay", [100, 100])
    return bytes(image.webpsave_buffer())


def apng(png: bytes) -> bytes:
    """``png`` with an animation control chunk: an APNG whose first frame is ``png``."""
    return png_with_chunk(png, b"acTL", struct.pack(">II", 2, 0))


def avif_sequence() -> bytes:
    """A still AVIF relabelled as an image sequence (``avis``) in its ``ftyp`` box.

    Built with libvips' AV1 encoder where it has one; otherwise only the ``ftyp`` box,
    which is all the refusal looks at.
    """
    try:
        avif = bytes(gradient(16, 16).heifsave_buffer(compression="av1"))
    except pyvips.Error:
        return iso_media(b"avis")
    return avif[:8] + b"avis" + avif[12:]


def iso_media(brand: bytes) -> bytes:
    ftyp = b"ftyp" + brand + bytes(4) + brand
    return struct.pack(">I", len(ftyp) + 4) + ftyp + bytes(64)


def ztxt_bomb() -> bytes:
    """A comment that inflates to 64 MiB from about 64 KiB."""
    return b"Comment\x00\x00" + deflated_zeros(64)


def iccp_bomb() -> bytes:
    """An ICC profile that inflates to 16 MiB."""
    return b"icc\x00\x00" + deflated_zeros(16)


def deflated_zeros(mebibytes: int) -> bytes:
    deflater = zlib.compressobj(9)
    block = bytes(1024 * 1024)
    return b"".join(deflater.compress(block) for _ in range(mebibytes)) + deflater.flush()


def big_text() -> bytes:
    """A comment just over the 4 MiB that all of a PNG's metadata may hold."""
    return b"Comment\x00" + b"A" * (4 * 1024 * 1024)


def bmp(width: int, height: int) -> bytes:
    row = (b"\x00\x00\xff" * width).ljust((width * 3 + 3) // 4 * 4, b"\x00")
    pixels = row * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels
