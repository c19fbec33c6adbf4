"""Photos: checked by their content, then normalised into the JPEG sizes photogram serves.

``probe`` decides whether an upload is a photo photogram accepts, without trusting its name
or the type a client claims; ``process`` turns an accepted photo into the stored sizes.
Both are pure functions of their input (no database, no I/O besides reading a given path),
CPU-bound and blocking: call them through ``asyncio.to_thread``. libvips releases the GIL
while it works, so several can run at once. ``process`` is deterministic (the same bytes in
give the same bytes out), so a background task can simply run it again.

The checks, cheapest first, each before any work it protects:

1. byte size, then the magic bytes: only JPEG, PNG, WebP, and HEIC/AVIF where this libvips
   can decode them, get as far as a parser. SVG, GIF, TIFF, PDF, BMP and the rest never
   reach one, whatever libvips could open;
2. for PNG, a walk over the chunk headers: APNG animation and oversized (or zlib-bomb)
   metadata chunks are refused before libpng inflates anything;
3. the header, parsed by libvips: its choice of loader must agree with the magic bytes
   (a polyglot that reads as two formats is refused), and the pixel count, aspect ratio and
   page count are checked before a single pixel is decoded;
4. the decode itself, strict (``fail_on=error``): a truncated or structurally corrupt file
   is refused instead of being padded with grey.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import IO, Any

import pyvips

from photogram.media import blurhash
from photogram.media.filters import get_filter

# libvips keeps its last 100 operations, and the images they hold, so that repeating one is
# free. photogram never repeats one (every upload is new), and the cache would keep recent
# photos' pixels alive between uploads, so it is off for the whole process: memory per
# photo stays what one photo needs.
pyvips.cache_set_max(0)

#: An upload: its bytes, or the path of a file holding them.
Upload = bytes | str | os.PathLike[str]

#: Longest side of the normalised original; every other size is made from it.
ORIGINAL_SIZE = 2048
#: Longest side of each smaller size, by variant name. Never upscaled.
SIZES = {"1080": 1080, "640": 640, "320": 320}
#: The square thumbnail's side: always exactly this, centre-cropped (upscaled if need be,
#: so a grid of thumbnails never has holes).
THUMB_SIZE = 150
VARIANTS = ("original", *SIZES, "thumb")
#: Every variant's JPEG quality, with optimised Huffman tables and 4:2:0 chroma (libjpeg's
#: choice below quality 90). See docs/media-processing.md for why JPEG only.
JPEG_QUALITY = 85
#: Progressive JPEGs and interlaced PNGs cannot be decoded a strip at a time: the whole
#: image (for a JPEG, every DCT coefficient) is held at once, about 7 bytes a pixel as
#: measured, where a baseline JPEG streams in about 60 MiB at any size. They get this share
#: of the pixel budget, so that the worst case stays near what a streamed photo costs.
WHOLE_IMAGE_SHARE = 0.5
#: Longest side over shortest. Panoramas fit; a 1x100000 strip, which fits any pixel budget
#: and can only become a smear of a thumbnail, does not.
MAX_ASPECT = 20
#: Blurhash: computed from a thumbnail this small (the hash keeps only a few cosine terms,
#: so more pixels would change nothing but the cost), with 4x3 components (3x4 when the
#: photo is portrait: more terms along the longer side).
BLURHASH_SIZE = 32
BLURHASH_COMPONENTS = (4, 3)
#: All PNG metadata chunks together (iCCP, zTXt, iTXt, tEXt, eXIf), after inflating: far
#: above any real photo's (an ICC profile is a few KiB, XMP tens), far below harm.
MAX_PNG_METADATA = 4 * 1024 * 1024
#: Encoders write pixel data in chunks of 8 KiB or more (a row each, at worst): a real PNG
#: has a few thousand. A file of millions of empty chunks is only there to be slow.
MAX_PNG_CHUNKS = 100_000


class InvalidImage(ValueError):
    """The upload is not a photo photogram accepts; the message says why, fit for a client."""


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    title: str
    mime_type: str
    #: The libvips loader (without its ``_source``/``_buffer`` suffix) that must read it.
    loader: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("jpeg", "JPEG", "image/jpeg", "jpegload"),
        Format("png", "PNG", "image/png", "pngload"),
        Format("webp", "WebP", "image/webp", "webpload"),
        Format("heic", "HEIC", "image/heic", "heifload"),
        Format("avif", "AVIF", "image/avif", "heifload"),
    )
}

#: Formats recognised by their magic bytes only to be refused with a precise message.
REFUSED = {
    "gif": "GIF images",
    "tiff": "TIFF images",
    "bmp": "BMP images",
    "ico": "Icons",
    "psd": "Photoshop documents",
    "jxl": "JPEG XL images",
    "jp2": "JPEG 2000 images",
    "pdf": "PDF documents",
    "text": "Text documents (SVG, HTML, XML)",
    "heif-sequence": "Image sequences (animated HEIF or AVIF)",
}

# ISO base media file format brands (the ``ftyp`` box). Sequences are refused as animated;
# a file naming only the generic ``mif1`` says nothing of its codec and is not guessed at.
_AVIF_BRANDS = {b"avif"}
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis"}
_SEQUENCE_BRANDS = {b"avis", b"msf1", b"hevc", b"hevx", b"hevm", b"hevs"}


@dataclass(frozen=True, slots=True)
class Probe:
    format: str
    mime_type: str
    #: Upright: after the EXIF orientation is applied (what every variant will show).
    width: int
    height: int
    #: The EXIF orientation (1-8) the upload carries; 1 when it has none.
    orientation: int
    byte_size: int
    #: How libvips reads the stored pixels (``srgb``, ``b-w``, ``cmyk``, ``rgb16`` ...).
    interpretation: str
    has_icc_profile: bool


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    data: bytes
    width: int
    height: int
    #: Hex MD5 of ``data``: what the database records and the store migration verifies.
    md5: str
    size: int
    mime_type: str = "image/jpeg"
    extension: str = "jpg"


@dataclass(frozen=True, slots=True)
class Processed:
    #: The upload, as ``probe`` saw it.
    source: Probe
    #: The filter applied ("normal" for none).
    filter: str
    #: Of the normalised original (upright, longest side at most ORIGINAL_SIZE).
    width: int
    height: int
    blurhash: str
    #: By name, in VARIANTS order.
    variants: dict[str, Variant]


def supported_formats() -> tuple[str, ...]:
    """The upload formats this libvips decodes (``jpeg``, ``png``, ``webp``, ``avif`` ...)."""
    return tuple(name for name in FORMATS if _decodes(name))


def supported_mime_types() -> tuple[str, ...]:
    """The MIME types of ``supported_formats()``, for ``/api/v2/instance``."""
    return tuple(FORMATS[name].mime_type for name in supported_formats())


def accepted_description() -> str:
    """The supported formats as a client reads them: "JPEG, PNG, WebP or AVIF"."""
    titles = [FORMATS[name].title for name in supported_formats()]
    return ", ".join(titles[:-1]) + " or " + titles[-1] if len(titles) > 1 else titles[0]


def probe(upload: Upload, *, max_bytes: int, max_pixels: int) -> Probe:
    """What ``upload`` is, or InvalidImage; decodes it fully (cheaply), so it is proven whole.

    The decode is shrink-on-load where the format allows (JPEG at 1/8, WebP scaled): every
    byte of the compressed data is still read and checked, but few pixels are made.
    """
    with _reader(upload) as reader:
        found = _inspect(reader, max_bytes=max_bytes, max_pixels=max_pixels)
        try:
            image = pyvips.Image.thumbnail_source(
                reader.source(), 64, no_rotate=True, option_string="fail_on=error"
            )
            _check_loader(image, found.format)
            image.avg()  # libvips is lazy: this is what makes it decode every pixel
        except pyvips.Error:
            raise InvalidImage(_corrupt()) from None
    return found


def process(
    upload: Upload,
    *,
    filter_name: str | None = None,
    max_pixels: int,
    max_bytes: int | None = None,
) -> Processed:
    """Every variant of ``upload`` as JPEG, with the named filter applied; InvalidImage or
    UnknownFilter (both ValueError) if that cannot be done.

    Orientation is applied, colour converted to sRGB, and then only pixels go on: the
    decoded image is copied into fresh memory with no metadata attached, so neither EXIF
    (GPS, camera serials), XMP, IPTC, comments nor the ICC profile can reach a variant.
    The sizes are made from that one in-memory normalised original: the upload is decoded
    once, with shrink-on-load, and memory stays at a few copies of a 2048 px image.
    """
    chosen = get_filter(filter_name)  # an unknown name fails before any decoding
    with _reader(upload) as reader:
        found = _inspect(reader, max_bytes=max_bytes, max_pixels=max_pixels)
        try:
            decoded = pyvips.Image.thumbnail_source(
                reader.source(),
                ORIGINAL_SIZE,
                height=ORIGINAL_SIZE,
                size="down",
                # Turned upright later, size by size: turning it here would make libvips
                # hold a second copy of the shrunk image, which rotating reads out of order.
                no_rotate=True,
                option_string="fail_on=error",
                **_colour_options(found),
            )
            _check_loader(decoded, found.format)
            # Decoding, converting and filtering all happen here, in one pass. Every size is
            # made from this image; the filters are the same either way up.
            stored = _pixels_only(chosen.apply(_srgb8(decoded)))
        except pyvips.Error:
            raise InvalidImage(_corrupt()) from None
    turn = found.orientation
    base = _upright(stored, turn)
    # The largest size takes as long to encode as all the others together, and libjpeg
    # encodes on one core: where libvips may use more, it is encoded alongside the rest.
    original = _alongside(_variant, "original", base)
    variants = {}
    for name, size in SIZES.items():
        smaller = stored.thumbnail_image(size, height=size, size="down")
        variants[name] = _variant(name, _upright(smaller, turn))
    thumb = stored.thumbnail_image(THUMB_SIZE, height=THUMB_SIZE, crop="centre", size="both")
    variants["thumb"] = _variant("thumb", _upright(thumb, turn))
    return Processed(
        source=found,
        filter=chosen.name,
        width=int(base.width),
        height=int(base.height),
        blurhash=_blurhash(stored, turn),
        variants={"original": original.result(), **variants},
    )


# Reading the upload.


class _Reader:
    """Random access to the upload's bytes, and libvips sources over them."""

    def __init__(
        self,
        size: int,
        data: bytes | None = None,
        path: str | None = None,
        handle: IO[bytes] | None = None,
    ) -> None:
        self.size = size
        self._data = data
        self._path = path
        self._handle = handle

    def read(self, offset: int, length: int) -> bytes:
        if self._data is not None:
            return self._data[offset : offset + length]
        assert self._handle is not None
        self._handle.seek(offset)
        return self._handle.read(length)

    def source(self) -> Any:
        # A source, not a buffer or a file name: libvips neither copies the bytes nor keeps
        # the load in its operation cache (which would pin every upload's bytes in memory).
        if self._data is not None:
            return pyvips.Source.new_from_memory(self._data)
        return pyvips.Source.new_from_file(self._path)


@contextmanager
def _reader(upload: Upload) -> Iterator[_Reader]:
    if isinstance(upload, bytes):
        yield _Reader(len(upload), data=upload)
        return
    path = os.fspath(upload)
    # An unreadable path is the caller's fault, not the upload's: OSError, not InvalidImage.
    with open(path, "rb") as handle:
        yield _Reader(os.fstat(handle.fileno()).st_size, path=path, handle=handle)


# The checks.


def _inspect(reader: _Reader, *, max_bytes: int | None, max_pixels: int) -> Probe:
    if reader.size == 0:
        raise InvalidImage("The file is empty.")
    if max_bytes is not None and reader.size > max_bytes:
        raise InvalidImage(f"The file is larger than {describe_bytes(max_bytes)}.")
    kind = sniff(reader.read(0, 64))
    if kind in REFUSED:
        raise InvalidImage(f"{REFUSED[kind]} are not accepted; {_upload_instead()}")
    if kind not in FORMATS:
        raise InvalidImage(f"The file is not an image photogram can read; {_upload_instead()}")
    fmt = FORMATS[kind]
    if not _decodes(kind):
        raise InvalidImage(f"This server cannot read {fmt.title} photos; {_upload_instead()}")
    if kind == "png":
        _check_png_chunks(reader)
    try:
        # Lazy: only the header is parsed, so a decompression bomb costs nothing yet.
        header = pyvips.Image.new_from_source(
            reader.source(), "", access="sequential", fail_on="error"
        )
    except pyvips.Error:
        raise InvalidImage(
            f"The file starts like a {fmt.title} image but cannot be read: it is "
            "truncated, corrupt or not an image."
        ) from None
    _check_loader(header, kind)
    width, height = int(header.width), int(header.height)
    fields = set(header.get_fields())
    if width < 1 or height < 1:
        raise InvalidImage("The image has no pixels.")
    if width * height > max_pixels:
        raise InvalidImage(
            f"The image is too large: {width}x{height} is more than {max_pixels:,} pixels."
        )
    if "interlaced" in fields and int(header.get("interlaced")):
        limit = int(max_pixels * WHOLE_IMAGE_SHARE)
        if width * height > limit:
            kind_of = "a progressive JPEG" if kind == "jpeg" else "an interlaced image"
            raise InvalidImage(
                f"The image is too large: {width}x{height} is more than {limit:,} pixels for "
                f"{kind_of}; save it as a baseline (non-progressive) image, or smaller."
            )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InvalidImage(
            f"The image is too long and thin ({width}x{height}); its longer side may be at "
            f"most {MAX_ASPECT} times its shorter."
        )
    if "n-pages" in fields and int(header.get("n-pages")) > 1:
        raise InvalidImage(_animated())
    orientation = int(header.get("orientation")) if "orientation" in fields else 1
    if orientation not in range(1, 9):
        orientation = 1  # libvips ignores an invalid tag; so does the size we report
    if orientation >= 5:  # 5-8 turn the picture a quarter
        width, height = height, width
    return Probe(
        format=kind,
        mime_type=fmt.mime_type,
        width=width,
        height=height,
        orientation=orientation,
        byte_size=reader.size,
        interpretation=str(header.interpretation),
        has_icc_profile="icc-profile-data" in fields,
    )


def sniff(head: bytes) -> str:
    """The format ``head`` (a file's first bytes) announces: a FORMATS or REFUSED key, or
    "unknown". Deciding here, before libvips looks, means no other format's parser (SVG's
    XML parser, a PDF renderer, TIFF's many codecs) ever sees an upload.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _sniff_heif(head)
    refused = (
        ((b"GIF87a", b"GIF89a"), "gif"),
        ((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "tiff"),
        ((b"BM",), "bmp"),
        ((b"\x00\x00\x01\x00",), "ico"),
        ((b"8BPS",), "psd"),
        ((b"\xff\x0a", b"\x00\x00\x00\x0cJXL "), "jxl"),
        ((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51"), "jp2"),
        ((b"%PDF",), "pdf"),
    )
    for magics, kind in refused:
        if head.startswith(magics):
            return kind
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return "text"
    return "unknown"


def _sniff_heif(head: bytes) -> str:
    box_size = struct.unpack(">I", head[:4])[0]
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)}
    brands = {major} | compatible
    if major in _SEQUENCE_BRANDS:
        return "heif-sequence"
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIC_BRANDS:
        return "heic"
    return "unknown"


def _check_loader(image: Any, kind: str) -> None:
    """libvips' own sniffing must pick the loader the magic bytes promised: a file that
    one reader takes for a JPEG and another for something else is refused."""
    loader = str(image.get("vips-loader"))
    for suffix in ("_source", "_buffer"):
        loader = loader.removesuffix(suffix)
    if loader != FORMATS[kind].loader:
        raise InvalidImage(
            f"The file's content does not match its format: it starts like a "
            f"{FORMATS[kind].title} image but reads as something else."
        )


_PNG_METADATA = {b"iCCP", b"zTXt", b"iTXt", b"tEXt", b"eXIf"}


def _check_png_chunks(reader: _Reader) -> None:
    """Refuses an APNG (animation) and metadata that would inflate past MAX_PNG_METADATA.

    Only chunk headers are read, plus the metadata chunks themselves; pixel data is
    skipped. Inflating is bounded, so a zlib bomb in a zTXt costs at most the budget.
    """
    offset = 8
    budget = MAX_PNG_METADATA
    for _ in range(MAX_PNG_CHUNKS):
        if offset + 8 > reader.size:
            return
        length, kind = struct.unpack(">I4s", reader.read(offset, 8))
        if kind == b"acTL":
            raise InvalidImage(_animated())
        if kind in _PNG_METADATA:
            if length > budget:
                raise InvalidImage(_oversized_metadata(kind))
            body = reader.read(offset + 8, length)
            compressed = _png_compressed_text(kind, body)
            if compressed is None:
                budget -= len(body)
            else:
                inflater = zlib.decompressobj()
                try:
                    inflated = len(inflater.decompress(compressed, budget + 1))
                except zlib.error:
                    inflated = 0  # unreadable: libpng will skip it with a warning
                if inflated > budget:
                    raise InvalidImage(_oversized_metadata(kind))
                budget -= inflated
        if kind == b"IEND":
            return
        offset += 12 + length
    raise InvalidImage(f"The PNG file has more than {MAX_PNG_CHUNKS:,} chunks.")


def _png_compressed_text(kind: bytes, body: bytes) -> bytes | None:
    """The zlib stream inside an iCCP, zTXt or compressed iTXt chunk; None for the rest."""
    name_end = body.find(b"\x00")
    if name_end < 0:
        return None
    if kind in (b"iCCP", b"zTXt"):
        return body[name_end + 2 :]  # after the name's NUL and the compression method
    if kind == b"iTXt" and body[name_end + 1 : name_end + 2] == b"\x01":
        rest = body[name_end + 3 :]  # after NUL, compression flag, method
        language_end = rest.find(b"\x00")
        translated_end = rest.find(b"\x00", language_end + 1)
        return rest[translated_end + 1 :] if language_end >= 0 and translated_end >= 0 else None
    return None


# Processing steps.


def _colour_options(found: Probe) -> dict[str, str]:
    """How ``thumbnail`` should reach sRGB.

    An embedded profile (Display P3 from phones, Adobe RGB from cameras, a CMYK or grey
    profile) is honoured. Without one, RGB is taken as sRGB, as browsers do, and nothing is
    transformed: asking for an sRGB export of an untagged image costs a needless ICC
    transform. CMYK without a profile gets libvips' default CMYK profile.
    """
    if found.has_icc_profile:
        return {"export_profile": "srgb"}
    if found.interpretation == "cmyk":
        return {"import_profile": "cmyk", "export_profile": "srgb"}
    return {}


def _srgb8(image: Any) -> Any:
    """``image`` as 8-bit sRGB in exactly three bands; transparency onto white."""
    if image.format == "ushort" and image.interpretation not in ("rgb16", "grey16"):
        image = image.copy(interpretation="rgb16" if image.bands >= 3 else "grey16")
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.bands > 3:
        image = image.extract_band(0, n=3)
    return image.copy(interpretation="srgb")


#: The fields every libvips image has: its shape, not anything about the picture.
_SHAPE_FIELDS = frozenset(
    {"width", "height", "bands", "format", "coding", "interpretation"}
    | {"xoffset", "yoffset", "xres", "yres", "filename"}
)


def _pixels_only(image: Any) -> Any:
    """``image`` rendered into memory with every metadata field dropped.

    Removing fields rather than listing the dangerous ones: whatever a loader attaches
    (EXIF and its parsed tags, XMP, IPTC, ICC, comments, fields a future libvips adds)
    goes. Every variant is made from this image, and is saved with ``keep="none"`` too.
    """
    bare = image.copy()  # a header of its own: removing fields leaves ``image`` alone
    for field in bare.get_fields():
        if field not in _SHAPE_FIELDS:
            bare.remove(field)
    return bare.copy_memory()


def _upright(image: Any, orientation: int) -> Any:
    """``image``, stored as the upload's EXIF ``orientation`` says, turned upright."""
    if orientation == 1:
        return image
    tagged = image.copy()  # libvips' own table of the eight orientations, not a copy of it
    tagged.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return tagged.autorot()  # which also drops the tag again


_helpers = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="encode")


def _alongside(function: Callable[..., Variant], *args: Any) -> Future[Variant]:
    """``function(*args)`` on a helper thread when libvips may use more than one core,
    else here and now (so ``VIPS_CONCURRENCY=1`` still means one core)."""
    if pyvips.vips_lib.vips_concurrency_get() > 1:
        return _helpers.submit(function, *args)
    done: Future[Variant] = Future()
    done.set_result(function(*args))
    return done


def _variant(name: str, image: Any) -> Variant:
    data = bytes(image.jpegsave_buffer(Q=JPEG_QUALITY, optimize_coding=True, keep="none"))
    return Variant(
        name=name,
        data=data,
        width=int(image.width),
        height=int(image.height),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        size=len(data),
    )


def _blurhash(image: Any, orientation: int) -> str:
    tiny = _upright(image.thumbnail_image(BLURHASH_SIZE, height=BLURHASH_SIZE), orientation)
    x, y = BLURHASH_COMPONENTS
    if tiny.height > tiny.width:
        x, y = y, x
    return blurhash.encode(bytes(tiny.write_to_memory()), tiny.width, tiny.height, (x, y))


# Capabilities: can this libvips decode a sample of each format? Found once per format,
# when first needed: trying AVIF means loading its encoder, which costs a process that only
# ever sees JPEGs 5 MiB.


@cache
def _decodes(name: str) -> bool:
    sample = pyvips.Image.black(16, 16, bands=3).linear([1, 1, 1], [200, 120, 40]).cast("uchar")
    sample = sample.copy(interpretation="srgb")
    savers = {
        "jpeg": lambda: sample.jpegsave_buffer(),
        "png": lambda: sample.pngsave_buffer(),
        "webp": lambda: sample.webpsave_buffer(),
        # HEIC can only be tried where libvips can also write HEVC; a build that decodes
        # but cannot encode it (libde265 without x265) is reported, conservatively, as not
        # reading HEIC.
        "heic": lambda: sample.heifsave_buffer(compression="hevc"),
        "avif": lambda: sample.heifsave_buffer(compression="av1"),
    }
    try:
        data = bytes(savers[name]())
        if sniff(data[:64]) != name:
            return False
        decoded = pyvips.Image.thumbnail_source(pyvips.Source.new_from_memory(data), 8)
        _check_loader(decoded, name)
        decoded.avg()
    except (pyvips.Error, InvalidImage):
        return False
    return True


# Messages.


def _upload_instead() -> str:
    return f"upload a photo as {accepted_description()}."


def _corrupt() -> str:
    return "The image could not be decoded: the file is truncated or corrupt."


def _animated() -> str:
    return "Animated images are not accepted; upload a still photo."


def _oversized_metadata(kind: bytes) -> str:
    return (
        f"The image carries too much metadata ({kind.decode('ascii')} chunk); at most "
        f"{describe_bytes(MAX_PNG_METADATA)} is accepted."
    )


def describe_bytes(count: int) -> str:
    """A size as people read it in an error message: 16 MiB, 64 KiB, 1,000 bytes."""
    if count >= 1024 * 1024 and count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MiB"
    if count >= 1024 and count % 1024 == 0:
        return f"{count // 1024} KiB"
    return f"{count:,} bytes"
