"""Photo processing: photogram's libvips pipeline against the same sizes made with Pillow.

A batch of 12-megapixel JPEGs (4000x3000, quality 90, half of them tagged with EXIF
orientation 6 as a phone takes a portrait) goes through the full pipeline: the normalised
original (longest side 2048), 1080, 640 and 320 px, a 150x150 centre-cropped thumbnail
and a blurhash, every size a JPEG at quality 85 with optimised Huffman tables and no
metadata, and an MD5 of each. The photos are generated once (smooth scenes with texture
and sensor noise, from libvips' noise generators) and kept in ``--dir``.

Each side runs in a fresh subprocess, so the peak RSS it reports (``VmHWM``) is its own:

* **libvips**: ``photogram.media.processing.process`` exactly as the upload worker calls
  it, with the two glibc malloc arenas that workers and app servers set for themselves
  (``media_malloc_arenas``). That also parses the header and checks format, pixel count
  and aspect ratio first, which the Pillow side does not do. Decoding is ``thumbnail``
  (shrink-on-load, which for a 4000 px JPEG and a 2048 px target cannot shrink: it would
  go below 2048), lanczos3 with a reducing gap of 2; the smaller sizes are made from the
  in-memory 2048 px image, and each size is turned upright as it is made. libvips uses
  its own thread pool (as many threads as cores by default), and the 2048 px JPEG is
  encoded on a helper thread alongside the smaller sizes.
* **libvips, 1 thread**: the same with ``VIPS_CONCURRENCY=1``: what a single core does
  (no helper thread either).
* **libvips, glibc arenas**: the same with glibc's default arenas (eight per core), as a
  process that does not cap them would run.
* **Pillow**: ``Image.draft`` (JPEG's DCT-domain shrink-on-load, which libvips uses too,
  and with the same rule: never below the target), resize to 2048 with LANCZOS and
  ``reducing_gap=2.0`` (libvips' algorithm: box-shrink by whole factors while at least
  twice the target remains, then lanczos), the EXIF transpose applied to the 2048 px image
  (cheaper than rotating 12 MP first), an ICC conversion to sRGB if a profile is embedded
  (these photos have none, so neither side converts), smaller sizes from the 2048 px image
  the same way, ``ImageOps.fit`` for the thumbnail, the same blurhash C encoder, and
  ``save(quality=85, optimize=True)`` with 4:2:0 chroma as libvips does. Single-threaded,
  as Pillow is.

Throughput is the median of ``--rounds`` alternated runs, each a pass over the batch after
one warm-up photo; peak RSS is the largest of the runs. "One photo" is a separate fresh
process that processes a single photo once, with no warm-up: the memory one upload costs.

The formats section decides whether WebP variants would pay: for each photo's 2048 and
1080 px sizes, JPEG at quality 85 (what photogram stores) against WebP at the lowest
quality whose SSIM (luma, 11x11 Gaussian window) reaches the JPEG's, in bytes and
encode time.

    .venv/bin/python bench/media.py [--photos 8] [--rounds 3] [--dir DIR] [--no-formats]
        [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 4000, 3000
MAX_PIXELS = 40_000_000
SIZES = (1080, 640, 320)
QUALITY = 85
GENERATOR_VERSION = 1

#: What ``media_malloc_arenas`` (2 by default) makes workers and app servers set at start.
WORKER_ARENAS = {"MALLOC_ARENA_MAX": "2"}
SIDES: list[tuple[str, str, dict[str, str]]] = [
    ("libvips", "libvips", WORKER_ARENAS),
    ("libvips, 1 thread", "libvips", {**WORKER_ARENAS, "VIPS_CONCURRENCY": "1"}),
    ("libvips, glibc arenas", "libvips", {}),
    ("Pillow", "pillow", {}),
]


# The photos.


def generate(path: Path, seed: int) -> None:
    """A 4000x3000 landscape-like scene: sky, a wavy horizon, textured ground, sensor noise."""
    import pyvips

    w, h = WIDTH, HEIGHT
    xyz = pyvips.Image.xyz(w, h)
    y = xyz[1] / h
    horizon = 0.45 + 0.1 * pyvips.Image.perlin(w, h, cell_size=900, seed=seed)
    ground = y > horizon
    texture = (
        pyvips.Image.perlin(w, h, cell_size=250, seed=seed + 1) * 0.5
        + pyvips.Image.perlin(w, h, cell_size=40, seed=seed + 2) * 0.3
        + pyvips.Image.perlin(w, h, cell_size=8, seed=seed + 3) * 0.2
    )
    cells = pyvips.Image.worley(w, h, cell_size=120, seed=seed + 4) / 120
    lightness = ground.ifthenelse(45 + 18 * texture + 10 * cells, 85 - 25 * y + 8 * texture)
    a = ground.ifthenelse(-18 + 10 * texture + 4 * (seed % 3), -5 + 2 * texture)
    b = ground.ifthenelse(25 + 15 * texture, -30 + 8 * y)
    lab = lightness.bandjoin([a, b]).copy(interpretation="lab")
    noise = pyvips.Image.gaussnoise(w, h, sigma=4, mean=0, seed=seed + 5)
    image = (lab.colourspace("srgb") + noise).cast("uchar").copy(interpretation="srgb")
    if seed % 2:  # a portrait, as phones store one: landscape pixels, orientation 6
        image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    image.jpegsave(str(path), Q=90, keep="exif")


def ensure_photos(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"photo-v{GENERATOR_VERSION}-{i}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        if not path.exists():
            print(f"generating {path.name} …", file=sys.stderr)
            partial = path.with_suffix(".tmp")
            generate(partial, seed=i + 1)
            partial.replace(path)
    return paths


# The two pipelines, each run in its own process.


def libvips_pipeline() -> Any:
    from photogram.media import processing

    def run(data: bytes) -> int:
        result = processing.process(data, max_pixels=MAX_PIXELS)
        return sum(v.size for v in result.variants.values())

    return run


def pillow_pipeline() -> Any:
    from blurhash import _functions as blurhash_c
    from PIL import Image, ImageCms, ImageOps

    transposes = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    srgb = ImageCms.createProfile("sRGB")
    lanczos = Image.Resampling.LANCZOS

    def fit(image: Image.Image, size: int) -> Image.Image:
        w, h = image.size
        if max(w, h) <= size:
            return image
        scale = size / max(w, h)
        target = (size, round(h * scale)) if w >= h else (round(w * scale), size)
        return image.resize(target, lanczos, reducing_gap=2.0)

    def save(image: Image.Image) -> int:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=QUALITY, optimize=True, subsampling="4:2:0")
        data = out.getvalue()
        hashlib.md5(data, usedforsecurity=False).hexdigest()
        return len(data)

    def blurhash(image: Image.Image) -> str:
        tiny = fit(image, 32)
        x, y = (4, 3) if tiny.width >= tiny.height else (3, 4)
        pixels = tiny.tobytes()
        destination = blurhash_c.ffi.new("char[]", 2 + 4 + 80 * 2 + 1)
        result = blurhash_c.lib.create_hash_from_pixels(
            x,
            y,
            tiny.width,
            tiny.height,
            blurhash_c.ffi.from_buffer("uint8_t[]", pixels),
            tiny.width * 3,
            destination,
        )
        return str(blurhash_c.ffi.string(result).decode())

    def run(data: bytes) -> int:
        with Image.open(io.BytesIO(data)) as source:
            source.draft("RGB", (2048, 2048))
            orientation = source.getexif().get(0x0112, 1)
            icc = source.info.get("icc_profile")
            image = source.convert("RGB") if source.mode != "RGB" else source
            base = fit(image, 2048)
            if base is image:
                base = image.copy()
        if orientation in transposes:
            base = base.transpose(transposes[orientation])
        if icc:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            base = ImageCms.profileToProfile(base, profile, srgb, outputMode="RGB")
        total = save(base)
        for size in SIZES:
            total += save(fit(base, size))
        total += save(ImageOps.fit(base, (150, 150), lanczos, centering=(0.5, 0.5)))
        blurhash(base)
        return total

    return run


def status(field: str) -> float:
    """A ``/proc/self/status`` memory figure, in MiB."""
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(side: str, files: list[str], *, one: bool) -> dict[str, Any]:
    run = libvips_pipeline() if side == "libvips" else pillow_pipeline()
    baseline = status("VmRSS")
    if one:
        run(Path(files[0]).read_bytes())
        return {"baseline_rss_mib": baseline, "peak_rss_mib": status("VmHWM")}
    run(Path(files[0]).read_bytes())  # warm-up: first-call set-up is not throughput
    started = time.perf_counter()
    total = 0
    for name in files:
        total += run(Path(name).read_bytes())
    elapsed = time.perf_counter() - started
    probe_ms = None
    if side == "libvips":  # the upload check, which runs in the request, apart
        from photogram.media import processing

        started = time.perf_counter()
        for name in files:
            processing.probe(
                Path(name).read_bytes(), max_bytes=64 * 1024 * 1024, max_pixels=MAX_PIXELS
            )
        probe_ms = (time.perf_counter() - started) / len(files) * 1000
    return {
        "probe_ms": probe_ms,
        "photos": len(files),
        "seconds": elapsed,
        "photos_per_second": len(files) / elapsed,
        "variant_bytes_per_photo": total / len(files),
        "baseline_rss_mib": baseline,
        "peak_rss_mib": status("VmHWM"),
    }


def run_child(
    side: str, env: dict[str, str], files: list[Path], *, one: bool = False
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", side, *(["--one"] if one else [])]
    command += [str(f) for f in files]
    completed = subprocess.run(
        command,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


# WebP or not: bytes and encode time at equal SSIM.


def ssim(reference: Any, candidate: Any) -> float:
    def luma(image: Any) -> Any:
        return image.colourspace("b-w").cast("float")

    def blur(image: Any) -> Any:
        return image.gaussblur(1.5, precision="float")

    x, y = luma(reference), luma(candidate)
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    index = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(index.avg())


def timed_encode(image: Any, saver: str, **options: Any) -> tuple[bytes, float]:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        data = bytes(getattr(image, saver)(keep="none", **options))
        times.append(time.perf_counter() - started)
    return data, statistics.median(times)


def compare_formats(files: list[Path]) -> list[dict[str, Any]]:
    import pyvips

    pyvips.cache_set_max(0)
    rows = []
    for size in (2048, 1080):
        jpeg_bytes = webp_bytes = 0
        jpeg_seconds = webp_seconds = 0.0
        qualities, ssims = [], []
        for path in files:
            reference = pyvips.Image.thumbnail(str(path), size, height=size).copy_memory()
            jpeg, jpeg_time = timed_encode(
                reference, "jpegsave_buffer", Q=QUALITY, optimize_coding=True
            )
            target = ssim(reference, pyvips.Image.new_from_buffer(jpeg, ""))

            def webp_ssim(quality: int, reference: Any = reference) -> float:
                data = reference.webpsave_buffer(Q=quality, keep="none")
                return ssim(reference, pyvips.Image.new_from_buffer(data, ""))

            low, high = 1, 100  # the lowest WebP quality whose SSIM reaches the JPEG's
            while low < high:
                middle = (low + high) // 2
                if webp_ssim(middle) >= target:
                    high = middle
                else:
                    low = middle + 1
            webp, webp_time = timed_encode(reference, "webpsave_buffer", Q=low)
            jpeg_bytes += len(jpeg)
            webp_bytes += len(webp)
            jpeg_seconds += jpeg_time
            webp_seconds += webp_time
            qualities.append(low)
            ssims.append(target)
        n = len(files)
        rows.append(
            {
                "size": size,
                "jpeg_quality": QUALITY,
                "ssim": statistics.mean(ssims),
                "webp_quality_median": statistics.median(qualities),
                "jpeg_kib": jpeg_bytes / n / 1024,
                "webp_kib": webp_bytes / n / 1024,
                "webp_size_ratio": webp_bytes / jpeg_bytes,
                "jpeg_encode_ms": jpeg_seconds / n * 1000,
                "webp_encode_ms": webp_seconds / n * 1000,
            }
        )
    return rows


# Running and reporting.


def measure(args: argparse.Namespace) -> dict[str, Any]:
    files = ensure_photos(args.dir, args.photos)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in SIDES}
    for round_ in range(args.rounds):
        order = SIDES if round_ % 2 == 0 else SIDES[::-1]
        for label, side, env in order:
            print(f"round {round_ + 1}/{args.rounds}: {label} …", file=sys.stderr)
            runs[label].append(run_child(side, env, files))
    sides = []
    for label, side, env in SIDES:
        one = run_child(side, env, files[:1], one=True)
        sides.append(
            {
                "side": label,
                "photos_per_second": statistics.median(r["photos_per_second"] for r in runs[label]),
                "ms_per_photo": statistics.median(
                    r["seconds"] / r["photos"] * 1000 for r in runs[label]
                ),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[label]),
                "probe_ms": runs[label][0]["probe_ms"]
                and statistics.median(r["probe_ms"] for r in runs[label]),
                "baseline_rss_mib": statistics.median(r["baseline_rss_mib"] for r in runs[label]),
                "one_photo_peak_rss_mib": one["peak_rss_mib"],
                "one_photo_baseline_rss_mib": one["baseline_rss_mib"],
                "variant_kib_per_photo": runs[label][0]["variant_bytes_per_photo"] / 1024,
                "runs": runs[label],
            }
        )
    by_side = {s["side"]: s for s in sides}
    vips, pillow = by_side["libvips"], by_side["Pillow"]
    result: dict[str, Any] = {
        "photos": args.photos,
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "sides": sides,
        "throughput_ratio": vips["photos_per_second"] / pillow["photos_per_second"],
        "single_thread_throughput_ratio": by_side["libvips, 1 thread"]["photos_per_second"]
        / pillow["photos_per_second"],
        "peak_rss_ratio": vips["peak_rss_mib"] / pillow["peak_rss_mib"],
        "one_photo_peak_rss_ratio": vips["one_photo_peak_rss_mib"]
        / pillow["one_photo_peak_rss_mib"],
    }
    if args.formats:
        print("formats …", file=sys.stderr)
        result["formats"] = compare_formats(files)
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        f"media: {result['photos']} photos of {WIDTH}x{HEIGHT} (12 MP), median of "
        f"{result['rounds']} rounds, {result['cores']} cores",
        "",
        f"{'side':<20}{'photos/s':>9}{'ms/photo':>10}{'peak RSS':>10}{'baseline':>10}"
        f"{'1 photo':>9}{'1 photo - baseline':>20}",
    ]
    for s in result["sides"]:
        lines.append(
            f"{s['side']:<20}{s['photos_per_second']:>9.2f}{s['ms_per_photo']:>10.0f}"
            f"{s['peak_rss_mib']:>7.0f}MiB{s['baseline_rss_mib']:>7.0f}MiB"
            f"{s['one_photo_peak_rss_mib']:>6.0f}MiB"
            f"{s['one_photo_peak_rss_mib'] - s['one_photo_baseline_rss_mib']:>17.0f}MiB"
        )
    lines += [
        "",
        f"throughput libvips / Pillow: {result['throughput_ratio']:.2f}x "
        f"(1 thread: {result['single_thread_throughput_ratio']:.2f}x); target 3x",
        f"peak RSS libvips / Pillow: batch {result['peak_rss_ratio']:.2f}, "
        f"one photo {result['one_photo_peak_rss_ratio']:.2f}; target 0.5",
        f"upload check (probe) with libvips: {result['sides'][0]['probe_ms']:.1f} ms a photo",
    ]
    if "formats" in result:
        lines += [
            "",
            f"{'size':<6}{'SSIM':>7}{'JPEG q':>8}{'JPEG':>9}{'WebP q':>8}{'WebP':>9}"
            f"{'WebP/JPEG':>11}{'JPEG enc':>10}{'WebP enc':>10}",
        ]
        for f in result["formats"]:
            lines.append(
                f"{f['size']:<6}{f['ssim']:>7.4f}{f['jpeg_quality']:>8}{f['jpeg_kib']:>6.0f}KiB"
                f"{f['webp_quality_median']:>8.0f}{f['webp_kib']:>6.0f}KiB"
                f"{f['webp_size_ratio']:>11.2f}{f['jpeg_encode_ms']:>8.1f}ms"
                f"{f['webp_encode_ms']:>8.1f}ms"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--photos", type=int, default=8, help="photos in the batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs per side")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "photogram-bench-media",
        help="where the generated photos are kept between runs",
    )
    parser.add_argument("--no-formats", dest="formats", action="store_false")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--worker", choices=["libvips", "pillow"], help=argparse.SUPPRESS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.files, one=args.one)))
        return 0
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
