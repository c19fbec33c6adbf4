"""The photo pipeline on its own: what it accepts, what it makes, and what it refuses."""

from __future__ import annotations

import hashlib
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blurhash
import pytest
import pyvips

from photogram.media import processing
from photogram.media.filters import FILTERS, UnknownFilter
from photogram.media.processing import VARIANTS, InvalidImage, Processed, probe, process
from tests.accounts.images import with_exif
from tests.media.corpus import MAX_PIXELS, corpus, iso_media, png_chunk

MAX_BYTES = 20 * 1024 * 1024
RED = [255, 0, 0]
BLUE = [0, 0, 255]
#: Field-name prefixes of every metadata block libvips reads from a JPEG.
METADATA_FIELDS = ("exif", "xmp", "iptc", "icc", "orientation", "jpeg-comment", "gps")
#: JPEG markers a variant may contain: SOI, APP0 (JFIF), DQT, SOF0/SOF2, DHT, DRI, SOS.
ALLOWED_MARKERS = {0xD8, 0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDD, 0xDA}


def scene(width: int, height: int) -> pyvips.Image:
    """A smooth colourful picture: compresses like a photo, not like noise."""
    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    red = x * (255 / max(width - 1, 1))
    green = y * (255 / max(height - 1, 1))
    blue = (x + y) * (255 / max(width + height - 2, 1))
    return red.bandjoin([green, blue]).cast("uchar").copy(interpretation="srgb")


def quadrant(width: int = 300, height: int = 200) -> pyvips.Image:
    """Blue, with the top-left quadrant (as stored) red."""
    xyz = pyvips.Image.xyz(width, height)
    corner = (xyz[0] < width // 2) & (xyz[1] < height // 2)
    return corner.ifthenelse(RED, BLUE).cast("uchar").copy(interpretation="srgb")


def jpeg(image: pyvips.Image, quality: int = 90) -> bytes:
    return bytes(image.jpegsave_buffer(Q=quality, keep="none"))


def oriented(image: pyvips.Image, orientation: int) -> bytes:
    """A JPEG of ``image``'s pixels as stored, tagged with an EXIF ``orientation``."""
    tagged = image.copy()
    tagged.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return bytes(tagged.jpegsave_buffer(Q=95, keep="exif"))


XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.5N" '
    b'exif:GPSLongitude="2,17.4E"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def laden(image: pyvips.Image) -> bytes:
    """A JPEG of ``image`` carrying every kind of metadata: EXIF with GPS, XMP with GPS, IPTC,
    a Display P3 ICC profile and a comment."""
    tagged = image.icc_transform("p3", input_profile="srgb")
    tagged.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitudeRef", "N")
    tagged.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitude", "48/1 51/1 30/1")
    tagged.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Make", "Camera Maker")
    tagged.set_type(pyvips.GValue.blob_type, "xmp-data", XMP)
    data = bytes(tagged.jpegsave_buffer(Q=95, keep="all"))
    iptc = b"\x1c\x02\x78\x00\x0ba secret caption"
    photoshop = b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc
    extra = segment(0xED, photoshop) + segment(0xFE, b"shot at 48.8584 N, 2.2945 E")
    return data[:2] + extra + data[2:]


def metadata_fields(image: pyvips.Image) -> list[str]:
    return [f for f in image.get_fields() if f.startswith(METADATA_FIELDS)]


def jpeg_markers(data: bytes) -> list[int]:
    """The markers of ``data``'s segments, up to and including the start of scan."""
    assert data[:2] == b"\xff\xd8"
    markers, at = [0xD8], 2
    while at < len(data):
        assert data[at] == 0xFF
        marker = data[at + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    raise AssertionError("no start of scan")


def decoded(data: bytes) -> pyvips.Image:
    image = pyvips.Image.new_from_buffer(data, "")
    assert image.get("vips-loader") == "jpegload_buffer"
    return image


def run(data: bytes | Path, filter_name: str | None = None) -> Processed:
    return process(data, filter_name=filter_name, max_pixels=MAX_PIXELS)


def fit(width: int, height: int, size: int) -> tuple[int, int]:
    if max(width, height) <= size:
        return width, height
    if width >= height:
        return size, round(height * size / width)
    return round(width * size / height), size


def close(actual: list[float], expected: list[int], tolerance: float = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# Sizes.


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (3000, 2000),  # landscape
        (2000, 3000),  # portrait
        (2500, 2500),  # square
        (900, 700),  # between the sizes
        (300, 200),  # smaller than 320
        (60, 90),  # smaller than the thumbnail
        (4100, 205),  # exactly the 20:1 limit
    ],
)
def test_every_variant_has_the_right_size(width: int, height: int) -> None:
    result = run(jpeg(scene(width, height)))

    assert list(result.variants) == list(VARIANTS)
    expected = {"original": fit(width, height, 2048)}
    for name in ("1080", "640", "320"):
        expected[name] = fit(*expected["original"], int(name))
    for name, (w, h) in expected.items():
        variant = result.variants[name]
        image = decoded(variant.data)
        assert (image.width, image.height) == (variant.width, variant.height)
        # The long side is exact; the short one is the scaled size, rounded either way.
        assert max(variant.width, variant.height) == max(w, h), name
        assert abs(variant.width - w) <= 1, name
        assert abs(variant.height - h) <= 1, name
        # Never upscaled.
        assert variant.width <= width, name
        assert variant.height <= height, name
    thumb = decoded(result.variants["thumb"].data)
    assert (thumb.width, thumb.height) == (150, 150)
    assert (result.width, result.height) == (
        result.variants["original"].width,
        result.variants["original"].height,
    )


def test_every_variant_is_an_srgb_jpeg_whose_md5_and_size_match_its_bytes() -> None:
    result = run(jpeg(scene(1600, 1200)))
    for name, variant in result.variants.items():
        assert variant.name == name
        assert variant.size == len(variant.data) > 0
        assert variant.md5 == hashlib.md5(variant.data).hexdigest()
        assert (variant.mime_type, variant.extension) == ("image/jpeg", "jpg")
        image = decoded(variant.data)
        assert (image.bands, image.format, image.interpretation) == (3, "uchar", "srgb")


# Orientation.

#: Where the stored top-left corner ends up once each EXIF orientation is applied.
UPRIGHT_CORNER = {
    1: "top-left",
    2: "top-right",
    3: "bottom-right",
    4: "bottom-left",
    5: "top-left",
    6: "top-right",
    7: "bottom-right",
    8: "bottom-left",
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_tagged_photos_come_out_upright(orientation: int) -> None:
    upload = oriented(quadrant(300, 200), orientation)
    assert pyvips.Image.new_from_buffer(upload, "").get("orientation") == orientation

    result = run(upload)

    turned = orientation >= 5
    assert probe(upload, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).orientation == orientation
    for name in ("original", "320", "thumb"):
        image = decoded(result.variants[name].data)
        if name != "thumb":
            assert (image.width, image.height) == ((200, 300) if turned else (300, 200))
        assert "orientation" not in image.get_fields()
        w, h = image.width, image.height
        quarters = {
            "top-left": image(w // 4, h // 4),
            "top-right": image(3 * w // 4, h // 4),
            "bottom-left": image(w // 4, 3 * h // 4),
            "bottom-right": image(3 * w // 4, 3 * h // 4),
        }
        red_corner = UPRIGHT_CORNER[orientation]
        for corner, pixel in quarters.items():
            assert close(pixel, RED if corner == red_corner else BLUE, 40), (name, corner)
    # The blurhash is of the upright photo too: more terms along its longer side, and
    # reddest in the corner where the red quarter ends up.
    assert size_flag(result.blurhash) == ((3, 4) if turned else (4, 3))
    w, h = (8, 12) if turned else (12, 8)
    preview = blurhash.decode(result.blurhash, w, h)
    corners = {
        "top-left": (0, 0),
        "top-right": (w - 1, 0),
        "bottom-left": (0, h - 1),
        "bottom-right": (w - 1, h - 1),
    }
    reddest = max(corners, key=lambda c: preview.getpixel(corners[c])[0])
    assert reddest == UPRIGHT_CORNER[orientation]


# Metadata.


def test_no_metadata_survives_in_any_variant() -> None:
    upload = with_exif(laden(scene(800, 600)), orientation=6)
    source = pyvips.Image.new_from_buffer(upload, "")
    # The upload really carries what must not leak.
    fields = source.get_fields()
    for field in ("exif-ifd3-GPSLatitude", "xmp-data", "iptc-data", "icc-profile-data"):
        assert field in fields
    assert b"shot at 48.8584 N" in upload

    result = run(upload)

    for name, variant in result.variants.items():
        image = decoded(variant.data)
        assert metadata_fields(image) == [], name
        assert set(jpeg_markers(variant.data)) <= ALLOWED_MARKERS, name
        for leak in (b"Exif", b"GPS", b"xmpmeta", b"Photoshop", b"8BIM", b"48.8584", b"Maker"):
            assert leak not in variant.data, (name, leak)


@pytest.mark.parametrize("saver", ["pngsave_buffer", "webpsave_buffer"])
def test_png_and_webp_metadata_is_dropped_too(saver: str) -> None:
    image = scene(400, 300).copy()
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitude", "48/1 51/1 30/1")
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitudeRef", "N")
    image.set_type(pyvips.GValue.blob_type, "xmp-data", XMP)
    upload = bytes(getattr(image, saver)(keep="all"))
    assert "exif-ifd3-GPSLatitude" in pyvips.Image.new_from_buffer(upload, "").get_fields()

    for name, variant in run(upload).variants.items():
        assert metadata_fields(decoded(variant.data)) == [], name
        assert set(jpeg_markers(variant.data)) <= ALLOWED_MARKERS, name


# Colour.

COLOUR = [200, 60, 40]


def solid(colour: list[int], width: int = 300, height: int = 200) -> pyvips.Image:
    return (
        (pyvips.Image.black(width, height, bands=3) + colour)
        .cast("uchar")
        .copy(interpretation="srgb")
    )


def cmyk(keep: str) -> bytes:
    converted = solid(COLOUR).icc_transform("cmyk", input_profile="srgb")
    return bytes(converted.jpegsave_buffer(Q=95, keep=keep))


def sixteen_bit() -> bytes:
    image = (solid(COLOUR).cast("ushort") * 257).copy(interpretation="rgb16")
    return bytes(image.pngsave_buffer(bitdepth=16))


def display_p3() -> bytes:
    # The same colour, stored as Display P3 numbers with the profile that says so: read
    # without the profile it would come out duller; read with it, it is the colour again.
    return bytes(solid(COLOUR).icc_transform("p3", input_profile="srgb").jpegsave_buffer(Q=95))


@pytest.mark.parametrize(
    ("label", "upload", "interpretation", "expected"),
    [
        # CMYK cannot hold this red exactly: the round trip through ink moves it a little.
        ("CMYK with its profile", cmyk("icc"), "cmyk", COLOUR),
        ("CMYK without a profile", cmyk("none"), "cmyk", COLOUR),
        ("16-bit RGB PNG", sixteen_bit(), "rgb16", COLOUR),
        ("Display P3", display_p3(), "srgb", COLOUR),
        ("greyscale JPEG", jpeg(solid(COLOUR).colourspace("b-w")), "b-w", [110, 110, 110]),
        (
            "16-bit greyscale PNG",
            bytes(
                (solid(COLOUR).colourspace("b-w").cast("ushort") * 257)
                .copy(interpretation="grey16")
                .pngsave_buffer(bitdepth=16)
            ),
            "grey16",
            [110, 110, 110],
        ),
        (
            "greyscale with alpha, over white",
            bytes(solid(COLOUR).colourspace("b-w").bandjoin(128).pngsave_buffer()),
            "b-w",
            [182, 182, 182],
        ),
        (
            "transparent RGBA, over white",
            bytes(solid(COLOUR).bandjoin(0).pngsave_buffer()),
            "srgb",
            [255, 255, 255],
        ),
    ],
)
def test_output_is_srgb_whatever_the_input(
    label: str, upload: bytes, interpretation: str, expected: list[int]
) -> None:
    assert pyvips.Image.new_from_buffer(upload, "").interpretation == interpretation, label
    result = run(upload)
    for name, variant in result.variants.items():
        image = decoded(variant.data)
        assert (image.bands, image.interpretation) == (3, "srgb"), (label, name)
        tolerance = 10 if interpretation == "cmyk" else 4
        assert close(image(image.width // 2, image.height // 2), expected, tolerance), (label, name)


# Determinism, threads, paths.


def test_output_is_deterministic_whether_from_bytes_a_path_or_threads(tmp_path: Path) -> None:
    uploads = [oriented(scene(1200 + 100 * i, 900), 1 + i % 8) for i in range(6)]
    serial = [run(upload, filter_name="clarendon") for upload in uploads]
    again = [run(upload, filter_name="clarendon") for upload in uploads]
    path = tmp_path / "photo.jpg"
    path.write_bytes(uploads[0])
    from_path = run(path, filter_name="clarendon")
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda u: run(u, filter_name="clarendon"), uploads * 2))

    def fingerprint(result: Processed) -> tuple[str, ...]:
        return (result.blurhash, *(v.md5 for v in result.variants.values()))

    assert [fingerprint(r) for r in again] == [fingerprint(r) for r in serial]
    assert fingerprint(from_path) == fingerprint(serial[0])
    assert [fingerprint(r) for r in threaded] == [fingerprint(r) for r in serial * 2]


# Blurhash.


def size_flag(hash_: str) -> tuple[int, int]:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
    flag = digits.index(hash_[0])
    return flag % 9 + 1, flag // 9 + 1


@pytest.mark.parametrize(
    ("width", "height", "components"), [(600, 400, (4, 3)), (400, 600, (3, 4))]
)
def test_blurhash_is_valid_with_components_along_the_longer_side(
    width: int, height: int, components: tuple[int, int]
) -> None:
    result = run(jpeg(scene(width, height)))
    assert blurhash.is_valid_blurhash(result.blurhash)
    assert len(result.blurhash) == 4 + 2 * components[0] * components[1]
    assert size_flag(result.blurhash) == components


def test_blurhash_carries_the_average_colour() -> None:
    result = run(jpeg(solid(COLOUR)))
    average = blurhash.decode(result.blurhash, 8, 8).getpixel((4, 4))
    assert close(list(average), COLOUR, 8)


# Filters through the pipeline.


def test_a_filter_is_applied_to_every_variant() -> None:
    upload = jpeg(scene(900, 600))
    plain, moon = run(upload), run(upload, filter_name="moon")
    assert (moon.filter, plain.filter) == ("moon", "normal")
    for name in VARIANTS:
        image = decoded(moon.variants[name].data)
        # Black and white: no chroma beyond JPEG's rounding.
        assert (image[0] - image[1]).abs().max() <= 3, name
        assert (image[1] - image[2]).abs().max() <= 3, name
        assert moon.variants[name].md5 != plain.variants[name].md5


def test_an_unknown_filter_is_refused_before_any_decoding() -> None:
    with pytest.raises(UnknownFilter, match="choose one of: normal, clarendon"):
        process(b"not even an image", filter_name="valencia-ish", max_pixels=MAX_PIXELS)
    assert issubclass(UnknownFilter, ValueError)
    assert set(FILTERS) >= {"normal", "clarendon", "juno", "lark", "gingham", "moon"}


# What probe reports and accepts.


@pytest.mark.parametrize(
    ("saver", "options", "format_", "mime_type"),
    [
        ("jpegsave_buffer", {}, "jpeg", "image/jpeg"),
        ("pngsave_buffer", {}, "png", "image/png"),
        ("webpsave_buffer", {}, "webp", "image/webp"),
        ("webpsave_buffer", {"lossless": True}, "webp", "image/webp"),
    ],
)
def test_probe_reports_format_and_size(
    saver: str, options: dict[str, object], format_: str, mime_type: str
) -> None:
    upload = bytes(getattr(scene(320, 240), saver)(**options))
    found = probe(upload, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert (found.format, found.mime_type) == (format_, mime_type)
    assert (found.width, found.height, found.orientation) == (320, 240, 1)
    assert found.byte_size == len(upload)
    assert format_ in processing.supported_formats()
    assert mime_type in processing.supported_mime_types()


def test_probe_reports_upright_size_and_reads_paths(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(oriented(scene(320, 240), 6))
    found = probe(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert (found.width, found.height, found.orientation) == (240, 320, 6)


def test_avif_is_accepted_exactly_when_this_libvips_decodes_it() -> None:
    try:
        upload = bytes(scene(320, 240).heifsave_buffer(compression="av1"))
    except pyvips.Error:
        # No AV1 encoder in this libvips: a hand-made AVIF ``ftyp`` box stands in.
        upload = iso_media(b"avif")
    if "avif" in processing.supported_formats():
        assert "image/avif" in processing.supported_mime_types()
        found = probe(upload, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        assert (found.format, found.width, found.height) == ("avif", 320, 240)
        assert run(upload).variants["original"].width == 320
    else:
        with pytest.raises(InvalidImage, match="cannot read AVIF"):
            probe(upload, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_heic_is_refused_clearly_where_this_libvips_cannot_decode_it() -> None:
    upload = iso_media(b"heic")  # a HEIC's ftyp box and nothing else
    expected = "cannot be read" if "heic" in processing.supported_formats() else "cannot read HEIC"
    with pytest.raises(InvalidImage, match=expected):
        probe(upload, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_gif_is_not_a_supported_format() -> None:
    assert "gif" not in processing.supported_formats()
    assert "image/gif" not in processing.supported_mime_types()
    assert processing.accepted_description().startswith("JPEG, PNG, WebP")


def test_limits_are_inclusive() -> None:
    upload = jpeg(scene(300, 200))
    probe(upload, max_bytes=len(upload), max_pixels=300 * 200)
    with pytest.raises(InvalidImage, match="larger than"):
        probe(upload, max_bytes=len(upload) - 1, max_pixels=MAX_PIXELS)
    with pytest.raises(InvalidImage, match="more than 59,999 pixels"):
        probe(upload, max_bytes=MAX_BYTES, max_pixels=300 * 200 - 1)
    with pytest.raises(InvalidImage, match="more than 59,999 pixels"):
        process(upload, max_pixels=300 * 200 - 1)
    probe(jpeg(scene(400, 20)), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    with pytest.raises(InvalidImage, match="long and thin"):
        probe(jpeg(scene(420, 20)), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_progressive_and_interlaced_images_get_half_the_pixel_budget() -> None:
    image = scene(300, 200)
    budget = 2 * 300 * 200
    for upload in (
        bytes(image.jpegsave_buffer(interlace=True)),
        bytes(image.pngsave_buffer(interlace=True)),
    ):
        assert pyvips.Image.new_from_buffer(upload, "").get("interlaced") == 1
        assert probe(upload, max_bytes=MAX_BYTES, max_pixels=budget).width == 300
        assert run(upload).variants["original"].width == 300
        with pytest.raises(InvalidImage, match="more than 59,999 pixels for") as refused:
            probe(upload, max_bytes=MAX_BYTES, max_pixels=budget - 2)
        assert "baseline" in str(refused.value)
    # A baseline JPEG of the same size has the whole budget.
    probe(jpeg(image), max_bytes=MAX_BYTES, max_pixels=300 * 200)


def test_bytes_after_the_end_of_the_image_are_accepted_and_never_stored() -> None:
    tail = b"<script>alert(document.cookie)</script>" * 10
    for upload in (jpeg(scene(400, 300)) + tail, bytes(scene(400, 300).pngsave_buffer()) + tail):
        probe(upload, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        for variant in run(upload).variants.values():
            assert b"<script>" not in variant.data


def test_png_metadata_within_the_budget_is_accepted() -> None:
    png = bytes(scene(200, 100).pngsave_buffer(keep="none"))
    comment = png_chunk(b"tEXt", b"Comment\x00" + b"x" * 200_000)
    upload = png[:33] + comment + png[33:]
    assert run(upload).variants["original"].width == 200


def test_a_reader_disagreeing_with_the_magic_bytes_is_refused() -> None:
    # No polyglot that fools this libvips build is known; the check is exercised directly.
    png = pyvips.Image.new_from_buffer(bytes(scene(8, 8).pngsave_buffer()), "")
    with pytest.raises(InvalidImage, match="does not match its format"):
        processing._check_loader(png, "jpeg")


# The hostile corpus.

HOSTILE = list(corpus())


def test_the_corpus_is_large_and_each_case_named_once() -> None:
    names = [name for name, _, _ in HOSTILE]
    assert len(names) >= 20
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("name", "upload", "reason"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_every_hostile_file_is_refused_quickly(name: str, upload: bytes, reason: str) -> None:
    for attempt in (
        lambda: probe(upload, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS),
        lambda: process(upload, max_pixels=MAX_PIXELS),
        lambda: process(upload, filter_name="earlybird", max_pixels=MAX_PIXELS),
    ):
        started = time.perf_counter()
        with pytest.raises(InvalidImage) as refused:
            attempt()
        assert time.perf_counter() - started < 1.0, (name, reason)
        message = str(refused.value)
        assert message.endswith("."), message
        assert "vips" not in message.lower(), message
