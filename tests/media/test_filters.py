"""Each named filter changes pixels the way its description says, at any size."""

from __future__ import annotations

import pytest
import pyvips

from photogram.media.filters import FILTERS, Filter, UnknownFilter, get_filter, list_filters

NAMED = [f for f in FILTERS.values() if f.name != "normal"]


def chart(width: int = 240, height: int = 160) -> pyvips.Image:
    """Every hue left to right, dark to light top to bottom, moderately saturated."""
    xyz = pyvips.Image.xyz(width, height)
    lightness = 20 + 60 * xyz[1] / max(height - 1, 1)
    hue = xyz[0] * 360 / width
    chroma = pyvips.Image.black(width, height) + 40
    lch = lightness.bandjoin([chroma, hue]).copy(interpretation="lch")
    return lch.colourspace("srgb").cast("uchar")


def solid(colour: list[int], width: int = 64, height: int = 48) -> pyvips.Image:
    image = pyvips.Image.black(width, height, bands=3) + colour
    return image.cast("uchar").copy(interpretation="srgb")


def chroma(image: pyvips.Image) -> float:
    return float(image.colourspace("lch")[1].avg())


def mean(image: pyvips.Image, band: int) -> float:
    return float(image[band].avg())


def contrast(image: pyvips.Image) -> float:
    return float(image.colourspace("b-w").deviate())


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (240, 160), (3000, 2000)], ids=str)
@pytest.mark.parametrize("filter_", FILTERS.values(), ids=lambda f: f.name)
def test_every_filter_keeps_the_image_kind_and_size(filter_: Filter, size: tuple[int, int]) -> None:
    source = chart(*size)
    out = filter_.apply(source)
    assert (out.width, out.height) == size
    assert (out.bands, out.format, out.interpretation) == (3, "uchar", "srgb")
    out.avg()  # every pixel computes
    if filter_.name != "normal" and size[0] > 1:
        assert (out - source).abs().avg() > 3, "the filter should visibly change the picture"


def test_normal_changes_nothing() -> None:
    source = chart()
    assert (FILTERS["normal"].apply(source) - source).abs().max() == 0


@pytest.mark.parametrize("filter_", FILTERS.values(), ids=lambda f: f.name)
def test_filters_are_deterministic(filter_: Filter) -> None:
    source = chart(640, 480)
    assert filter_.apply(source).write_to_memory() == filter_.apply(source).write_to_memory()


def test_moon_is_black_and_white_with_lifted_shadows() -> None:
    out = FILTERS["moon"].apply(chart())
    assert (out[0] - out[1]).abs().max() == 0
    assert (out[1] - out[2]).abs().max() == 0
    assert FILTERS["moon"].apply(solid([0, 0, 0]))(0, 0)[0] >= 50  # no pure black


def test_clarendon_adds_contrast_and_saturation_with_cool_shadows() -> None:
    source = chart()
    out = FILTERS["clarendon"].apply(source)
    assert contrast(out) > contrast(source) * 1.05
    assert chroma(out) > chroma(source) * 1.1
    shadow = FILTERS["clarendon"].apply(solid([30, 30, 30]))(0, 0)
    assert shadow[2] > shadow[0]  # a grey shadow turns blue-ish


def test_gingham_fades_mutes_and_lifts_blacks() -> None:
    source = chart()
    out = FILTERS["gingham"].apply(source)
    assert chroma(out) < chroma(source) * 0.9
    assert contrast(out) < contrast(source)
    assert min(FILTERS["gingham"].apply(solid([0, 0, 0]))(0, 0)) >= 30
    lavender = FILTERS["gingham"].apply(solid([128, 128, 128]))(0, 0)
    assert lavender[2] > lavender[1]  # a lavender cast on neutral grey


def test_juno_warms_and_saturates() -> None:
    source = chart()
    out = FILTERS["juno"].apply(source)
    assert chroma(out) > chroma(source) * 1.1
    warmth = mean(out, 0) - mean(out, 2)
    assert warmth > mean(source, 0) - mean(source, 2) + 5


def test_lark_brightens_and_tones_down_reds_while_strengthening_blues() -> None:
    source = chart()
    out = FILTERS["lark"].apply(source)
    assert out.colourspace("b-w").avg() > source.colourspace("b-w").avg() + 3
    red, blue = solid([190, 60, 60]), solid([60, 90, 190])
    lark = FILTERS["lark"].apply
    assert chroma(lark(red)) < chroma(red) * 0.85
    assert chroma(lark(blue)) > chroma(blue) * 1.05


def test_earlybird_warms_and_darkens_the_corners() -> None:
    grey = solid([150, 150, 150], 400, 300)
    out = FILTERS["earlybird"].apply(grey)
    centre, corner = out(200, 150), out(2, 2)
    assert centre[0] > centre[2]  # warm
    assert sum(corner) < sum(centre) - 60  # vignetted
    # The vignette follows the shape: both corners of a strip are dark, its middle is not.
    strip = FILTERS["earlybird"].apply(solid([150, 150, 150], 1000, 100))
    assert sum(strip(0, 0)) < sum(strip(500, 50)) - 60
    assert sum(strip(999, 99)) < sum(strip(500, 50)) - 60


def test_unknown_names_are_refused_with_the_list_of_filters() -> None:
    assert get_filter(None).name == "normal"
    assert get_filter("moon") is FILTERS["moon"]
    with pytest.raises(UnknownFilter) as refused:
        get_filter("sepia-ish")
    assert isinstance(refused.value, ValueError)
    for name in FILTERS:
        assert name in str(refused.value)


def test_filters_are_listed_for_the_api() -> None:
    listed = list_filters()
    assert [f["id"] for f in listed] == list(FILTERS)
    assert listed[0] == {"id": "normal", "title": "Normal", "description": "The photo as taken."}
    for entry in listed:
        assert set(entry) == {"id", "title", "description"}
        assert entry["title"]
        assert entry["description"].endswith(".")
    assert {"clarendon", "juno", "lark", "gingham", "moon"} <= {f["id"] for f in listed}
