"""Tests of relevance-to-image conversion: zennit-style helpers and heatmap overlays."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lrp_desktop_core.cmap import CMAPS, ColorMap
from lrp_desktop_core.image import (
    CONTOUR_LEVELS,
    MODES,
    OVERLAY_STYLES,
    SIDE_BY_SIDE_GAP,
    colorize,
    gridify,
    heatmap_bounds,
    imgify,
    imsave,
    interval_norm_bounds,
    overlay,
    palette,
    relevance_map,
    side_by_side,
)

RAMP = np.arange(12.0).reshape(3, 4)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def picture(height: int = 8, width: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(40, 215, size=(height, width, 3), dtype=np.uint8)


def split_relevance(height: int = 8, width: int = 8) -> np.ndarray:
    """Positive relevance in the left half, negative (half as strong) in the right half."""
    relevance = np.zeros((height, width))
    relevance[:, : width // 2] = 1.0
    relevance[:, width // 2 :] = -0.5
    return relevance


# --- bounds and grids ----------------------------------------------------------------------


def test_interval_norm_bounds_per_sample_by_default():
    data = np.stack([RAMP - 5, 2 * RAMP])
    low, high = interval_norm_bounds(data)
    assert low.shape == high.shape == (2, 1, 1)
    np.testing.assert_array_equal(low.ravel(), [-5, 0])
    np.testing.assert_array_equal(high.ravel(), [6, 22])


def test_interval_norm_bounds_symmetric_and_explicit_axes():
    data = torch.tensor(np.stack([RAMP - 5, 2 * RAMP]))
    low, high = interval_norm_bounds(data, symmetric=True)
    np.testing.assert_array_equal(high.ravel(), [6, 22])
    np.testing.assert_array_equal(low, -high)
    low, high = interval_norm_bounds(data, dim=(0, 1, 2))
    assert (low.item(), high.item()) == (-5, 22)
    low, high = interval_norm_bounds(np.array([3.0, -1.0, 2.0]))
    assert (low.item(), high.item()) == (-1, 3)


def test_gridify_default_shape_fills_rows_first_with_minimum():
    batch = np.arange(10.0).reshape(5, 1, 2) + 5
    grid = gridify(batch)
    assert grid.shape == (3, 4, 1)  # 3 rows x 2 columns of 1 x 2 tiles
    np.testing.assert_array_equal(grid[..., 0], [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 5, 5]])


def test_gridify_explicit_shape_fill_channels_and_dtype():
    batch = torch.arange(3 * 3 * 2 * 2, dtype=torch.uint8).reshape(3, 3, 2, 2)  # channels first
    grid = gridify(batch, shape=(1, 4), fill_value=7)
    assert grid.shape == (2, 8, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:, 2:4], batch[1].permute(1, 2, 0).numpy())
    assert (grid[:, 6:] == 7).all()
    with pytest.raises(ValueError, match="cannot hold 3 images"):
        gridify(batch, shape=(1, 2))


# --- imgify layouts ------------------------------------------------------------------------


@pytest.mark.parametrize("data", [RAMP, RAMP[None], RAMP[:, :, None], torch.tensor(RAMP)])
def test_imgify_single_channel_is_palette_image(data):
    image = imgify(data, cmap="gray")
    assert image.mode == "P" and image.size == (4, 3)
    np.testing.assert_array_equal(pixels(image), np.round(RAMP / 11 * 255))
    np.testing.assert_array_equal(rgb(image)[..., 0], pixels(image))  # gray palette


@pytest.mark.parametrize("channels_first", [True, False])
def test_imgify_three_channels_is_rgb(channels_first):
    data = np.stack([RAMP, RAMP + 1, RAMP + 2])
    image = imgify(data if channels_first else data.transpose(1, 2, 0))
    assert image.mode == "RGB" and image.size == (4, 3)
    np.testing.assert_array_equal(pixels(image)[..., 1], np.round((RAMP + 1) / 13 * 255))


@pytest.mark.parametrize(
    ("batch", "mode"),
    [
        (np.stack([RAMP, 2 * RAMP]), "P"),
        (np.stack([RAMP, 2 * RAMP])[:, None], "P"),
        (np.stack([RAMP, 2 * RAMP])[:, None].repeat(3, 1), "RGB"),
        (np.stack([RAMP, 2 * RAMP])[..., None].repeat(3, -1), "RGB"),
    ],
)
def test_imgify_grid_of_batch_normalises_each_sample(batch, mode):
    image = imgify(batch, grid=True, cmap="gray")
    assert image.mode == mode and image.size == (4, 6)
    values = rgb(image)[..., 0]
    np.testing.assert_array_equal(values[:3], values[3:])  # x and 2x look alike per sample


def test_imgify_grid_with_shared_scale():
    image = imgify(np.stack([RAMP, 2 * RAMP]), grid=True, cmap="gray", per_sample=False)
    values = pixels(image)
    assert values[:3].max() == np.round(11 / 22 * 255) and values[3:].max() == 255


def test_imgify_gridfill_sets_empty_cells():
    batch = np.arange(5 * 2 * 2.0).reshape(5, 2, 2)  # a grid of 3 rows x 2 columns
    image = imgify(batch, grid=True, gridfill=200)
    assert pixels(image).shape == (6, 4) and (pixels(image)[4:, 2:] == 200).all()
    with pytest.raises(ValueError, match="gridfill"):
        imgify(batch, grid=True, gridfill=300)


def test_imgify_rejects_unreadable_layouts():
    with pytest.raises(ValueError, match="1 or 3"):
        imgify(np.zeros((4, 5, 6)))
    with pytest.raises(ValueError, match="grid=True"):
        imgify(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        imgify(np.array([[0.0, np.nan]]))


def test_imgify_symmetric_puts_zero_at_centre():
    image = imgify(RAMP - 3, cmap="gray", symmetric=True)
    values = pixels(image)
    assert values[0, 3] == 128  # the zero entry
    assert values[-1, -1] == 255 and values[0, 0] == np.round(5 / 16 * 255)


def test_imgify_explicit_bounds_win_one_at_a_time():
    both = pixels(imgify(RAMP, vmin=0, vmax=22, cmap="gray"))
    np.testing.assert_array_equal(both, np.round(RAMP / 22 * 255))
    only_max = pixels(imgify(RAMP + 4, vmax=30, cmap="gray"))  # vmin stays the data's 4
    np.testing.assert_array_equal(only_max, np.round(RAMP / 26 * 255))
    clipped = pixels(imgify(RAMP, vmin=2, vmax=5, cmap="gray"))
    assert clipped[0, 0] == 0 and clipped[-1, -1] == 255
    with pytest.raises(ValueError, match="must not exceed"):
        imgify(RAMP, vmin=3, vmax=1)


def test_imgify_palette_follows_cmap_and_level():
    image = imgify(RAMP, cmap="coldnhot", level=1.5)
    np.testing.assert_array_equal(rgb(image), palette("coldnhot", 1.5)[pixels(image)])
    custom = imgify(RAMP, cmap=ColorMap("f00,0f0"))
    assert tuple(rgb(custom)[0, 0]) == (255, 0, 0) and tuple(rgb(custom)[-1, -1]) == (0, 255, 0)


@pytest.mark.parametrize(
    "data",
    [np.zeros((3, 4)), np.full((3, 4), 2.5), np.full((3, 3, 4), -1.0)],
    ids=["zeros", "constant", "constant-rgb"],
)
@pytest.mark.parametrize("symmetric", [False, True])
def test_imgify_constant_data_gives_valid_image_without_warnings(data, symmetric):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = imgify(data, symmetric=symmetric, cmap="bwr")
        values = rgb(image)
    assert np.isfinite(values).all() and values.dtype == np.uint8
    assert len(np.unique(values.reshape(-1, 3), axis=0)) == 1  # one flat colour


def test_imgify_grid_with_one_constant_sample_without_warnings():
    batch = np.stack([RAMP, np.zeros_like(RAMP)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = pixels(imgify(batch, grid=True, symmetric=True))
    assert (values[3:] == 128).all() and values[:3].max() == 255


def test_imsave_round_trip_palette_and_rgb(tmp_path):
    data = np.linspace(-1, 1, 20).reshape(4, 5)
    path = tmp_path / "heat.png"
    imsave(path, data, cmap="coldnhot", symmetric=True)
    with Image.open(path) as reread:
        assert reread.mode == "P"
        np.testing.assert_array_equal(
            rgb(reread), rgb(imgify(data, cmap="coldnhot", symmetric=True))
        )
    buffer = io.BytesIO()
    colour = np.random.default_rng(1).random((3, 4, 5))
    imsave(buffer, colour, format="PNG", writer_params={"compress_level": 1})
    buffer.seek(0)
    with Image.open(buffer) as reread:
        assert reread.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(reread), pixels(imgify(colour)))


def test_imsave_grid_to_file(tmp_path):
    path = tmp_path / "grid.png"
    imsave(path, torch.randn(5, 1, 3, 4), grid=True, cmap="bwr", symmetric=True)
    with Image.open(path) as reread:
        assert reread.size == (8, 9)


@pytest.mark.oracle
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("shape", [(6, 7), (3, 6, 7), (4, 1, 6, 7), (4, 3, 6, 7)])
def test_imgify_matches_zennit(shape, symmetric):
    zennit_image = pytest.importorskip("zennit.image")
    data = torch.randn(*shape, dtype=torch.float64).numpy()
    grid = len(shape) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = zennit_image.imgify(data, cmap="coldnhot", symmetric=symmetric, grid=grid)
    ours = imgify(data, cmap="coldnhot", symmetric=symmetric, grid=grid)
    assert ours.mode == theirs.mode and ours.size == theirs.size
    if theirs.mode == "P":
        # zennit's palette does not survive current Pillow; compare palette indices instead
        theirs.putpalette(zennit_image.palette("coldnhot").tobytes())
    # zennit truncates to 8 bits, this project rounds: at most one step apart
    assert np.abs(pixels(ours).astype(int) - pixels(theirs)).max() <= 1


@pytest.mark.oracle
def test_interval_norm_bounds_match_zennit():
    zennit_image = pytest.importorskip("zennit.image")
    data = torch.randn(3, 2, 4, 5, dtype=torch.float64).numpy()
    for symmetric in (False, True):
        for ours, theirs in zip(
            interval_norm_bounds(data, symmetric=symmetric),
            zennit_image.interval_norm_bounds(data, symmetric=symmetric),
            strict=True,
        ):
            np.testing.assert_allclose(ours, theirs)


# --- relevance maps and bounds -------------------------------------------------------------


def test_relevance_map_sums_channels_of_arrays_and_tensors():
    relevance = torch.randn(3, 4, 5)
    expected = relevance.sum(0).double().numpy()
    np.testing.assert_allclose(relevance_map(relevance), expected, rtol=1e-6)
    np.testing.assert_allclose(relevance_map(relevance[None].numpy()), expected, rtol=1e-6)
    np.testing.assert_array_equal(relevance_map(RAMP), RAMP)
    with pytest.raises(ValueError, match="not a heatmap"):
        relevance_map(np.zeros(5))


def test_heatmap_bounds_per_mode():
    relevance = np.array([[3.0, -5.0], [1.0, 0.0]])
    assert heatmap_bounds(relevance, "signed") == (-5.0, 5.0)
    assert heatmap_bounds(relevance, "positive") == (0.0, 3.0)
    assert heatmap_bounds(relevance, "negative") == (0.0, 5.0)
    assert heatmap_bounds(relevance, "absolute") == (0.0, 5.0)
    with pytest.raises(ValueError, match="unknown display mode"):
        heatmap_bounds(relevance, "loud")


def test_heatmap_bounds_clip_percentile():
    relevance = np.linspace(-1.0, 1.0, 201).reshape(1, 201)
    relevance[0, 0] = -100.0  # one outlier
    low, high = heatmap_bounds(relevance, "signed", clip_percentile=99.0)
    assert high == pytest.approx(np.percentile(np.abs(relevance), 99.0))
    assert low == -high and high < 1.0
    # a percentile that lands on zero keeps the maximum
    sparse = np.zeros((10, 10))
    sparse[0, 0] = 2.0
    assert heatmap_bounds(sparse, "positive", clip_percentile=50) == (0.0, 2.0)
    with pytest.raises(ValueError, match="clip_percentile"):
        heatmap_bounds(sparse, clip_percentile=0)


# --- colorize and overlay ------------------------------------------------------------------


def test_colorize_diverging_map_sides():
    heat = colorize(split_relevance(), "coldnhot", "signed")
    assert heat.shape == (8, 8, 3) and heat.dtype == np.uint8
    assert tuple(heat[0, 0]) == (255, 255, 255)  # the strongest positive: the hot end
    assert heat[0, -1, 2] > heat[0, -1, 0]  # negative: the cold (blue) side
    positive = colorize(split_relevance(), "coldnhot", "positive")
    assert tuple(positive[0, 0]) == (255, 255, 255) and tuple(positive[0, -1]) == (0, 0, 0)
    negative = colorize(split_relevance(), "coldnhot", "negative")
    assert tuple(negative[0, -1]) == (0, 255, 255) and tuple(negative[0, 0]) == (0, 0, 0)


def test_colorize_sequential_map_uses_whole_range_in_magnitude_modes():
    heat = colorize(split_relevance(), "gray", "absolute")
    assert tuple(heat[0, 0]) == (255, 255, 255)
    assert tuple(heat[0, -1]) == (128, 128, 128)
    assert tuple(colorize(np.zeros((2, 2)), "gray", "absolute")[0, 0]) == (0, 0, 0)


def test_overlay_shape_and_opaque_composite():
    result = overlay(picture(), torch.randn(3, 8, 8))
    assert result.shape == (8, 8, 4) and result.dtype == np.uint8
    assert (result[..., 3] == 255).all()


@pytest.mark.parametrize("mode", MODES)
def test_overlay_of_zero_relevance_is_the_picture_without_warnings(mode):
    image = picture()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = overlay(
            image, np.zeros((3, 8, 8)), mode=mode, clip_percentile=99.5, style="weighted"
        )
    np.testing.assert_array_equal(result[..., :3], image)


def test_overlay_positive_mode_leaves_negative_regions_untouched():
    image = picture()
    result = overlay(image, split_relevance(), mode="positive", style="weighted")
    np.testing.assert_array_equal(result[:, 4:, :3], image[:, 4:])
    assert (result[:, :4, :3] != image[:, :4]).any(axis=-1).all()


def test_overlay_negative_mode_leaves_positive_regions_untouched():
    image = picture()
    result = overlay(image, split_relevance(), mode="negative", style="weighted")
    np.testing.assert_array_equal(result[:, :4, :3], image[:, :4])
    assert (result[:, 4:, :3] != image[:, 4:]).any(axis=-1).all()


@pytest.mark.parametrize("cmap", ["coldnhot", "bwr"])
def test_overlay_signed_colours_positive_red_and_negative_blue(cmap):
    gray = np.full((8, 8, 3), 128, dtype=np.uint8)
    relevance = split_relevance() * np.array([0.5] * 4 + [1.0] * 4)  # +0.5 left, -0.5 right
    result = overlay(gray, relevance, cmap=cmap, opacity=1.0, bounds=(-1.0, 1.0)).astype(int)
    left, right = result[0, 0], result[0, -1]
    assert left[0] > left[2] + 60 and right[2] > right[0] + 60


def test_overlay_strength_scales_opacity():
    image = np.zeros((1, 3, 3), dtype=np.uint8)
    relevance = np.array([[0.0, 0.5, 1.0]])
    layer = overlay(
        image,
        relevance,
        cmap="gray",
        mode="absolute",
        opacity=0.8,
        composite=False,
        style="weighted",
    )
    np.testing.assert_array_equal(layer[0, :, 3], np.round(np.array([0.0, 0.4, 0.8]) * 255))
    unchanged = overlay(picture(), split_relevance(), opacity=0.0, style="weighted")
    np.testing.assert_array_equal(unchanged[..., :3], picture())


def test_overlay_layer_composited_by_hand_equals_composite():
    image = picture()
    relevance = torch.randn(8, 8)
    layer = overlay(image, relevance, composite=False, style="weighted").astype(float) / 255
    alpha = layer[..., 3:]
    by_hand = image / 255 * (1 - alpha) + layer[..., :3] * alpha
    composite = overlay(image, relevance, style="weighted")
    assert np.abs(np.round(by_hand * 255) - composite[..., :3]).max() <= 1


def test_overlay_clip_percentile_strengthens_ordinary_pixels():
    relevance = np.full((8, 8), 0.1)
    relevance[0, 0] = 10.0  # one outlier would wash out the rest
    kwargs = {"cmap": "gray", "mode": "positive", "composite": False, "style": "weighted"}
    plain = overlay(picture(), relevance, **kwargs)
    clipped = overlay(picture(), relevance, clip_percentile=90, **kwargs)
    assert plain[4, 4, 3] < 10 and clipped[4, 4, 3] == round(0.6 * 255)


def test_overlay_shared_bounds_win():
    image = picture()
    relevance = np.random.default_rng(2).normal(size=(8, 8))
    shared = heatmap_bounds(2 * relevance)  # a second panel twice as strong sets the scale
    own = overlay(image, relevance, composite=False, style="weighted")
    first = overlay(
        image, relevance, bounds=shared, clip_percentile=50, composite=False, style="weighted"
    )
    second = overlay(image, 2 * relevance, bounds=shared, composite=False, style="weighted")
    assert np.abs(2 * first[..., 3].astype(int) - second[..., 3]).max() <= 2
    assert (first[..., 3] < own[..., 3]).any()
    with pytest.raises(ValueError, match="bounds"):
        overlay(image, relevance, bounds=(1.0, -1.0))


def test_overlay_resizes_relevance_to_the_picture():
    image = picture(32, 48)
    result = overlay(image, split_relevance(4, 6), mode="positive", style="weighted")
    assert result.shape == (32, 48, 4)
    np.testing.assert_array_equal(result[:, 30:, :3], image[:, 30:])
    assert (result[:, :20, :3] != image[:, :20]).any(axis=-1).all()
    black = np.zeros((1, 40, 3), np.uint8)
    ramp = overlay(black, np.linspace(0, 1, 10)[None], "gray", 1.0, "positive", style="weighted")
    assert (np.diff(ramp[0, :, 0].astype(int)) >= 0).all()


def test_overlay_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        overlay(picture().astype(float), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="opacity"):
        overlay(picture(), np.zeros((8, 8)), opacity=1.5)
    with pytest.raises(ValueError, match="unknown display mode"):
        overlay(picture(), np.zeros((8, 8)), mode="both")
    with pytest.raises(ValueError, match="unknown colour map"):
        overlay(picture(), np.ones((8, 8)), cmap="rainbow")


def test_cmaps_usable_by_name_in_overlay():
    for name in CMAPS:
        assert overlay(picture(), split_relevance(), cmap=name).shape == (8, 8, 4)


def red_photo(height: int = 16, width: int = 16) -> np.ndarray:
    """Return a saturated red picture: the colour a red-yellow heatmap is easily mistaken for."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = 220
    return image


def is_grey(pixels: np.ndarray) -> bool:
    channels = pixels[..., :3].astype(int)
    return bool((np.ptp(channels, axis=-1) <= 1).all())


def test_greyscale_style_is_the_default_and_shows_both_signs_on_a_red_photo():
    assert OVERLAY_STYLES[0] == "greyscale"
    relevance = np.zeros((16, 16))
    relevance[:, :4] = 1.0  # positive
    relevance[:, 12:] = -1.0  # negative, as strong
    result = overlay(red_photo(), relevance, "coolwarm", opacity=0.6)
    np.testing.assert_array_equal(
        result, overlay(red_photo(), relevance, "coolwarm", opacity=0.6, style="greyscale")
    )
    background, positive, negative = result[0, 8], result[0, 0], result[0, -1]
    assert is_grey(result[:, 5:11])  # no relevance: the photo in grey, its red gone
    assert positive[0] > positive[2] + 40 and negative[2] > negative[0] + 40
    # the weighted style hides nothing here either, but there the red photo looks like relevance
    weighted = overlay(red_photo(), relevance, "coolwarm", style="weighted")
    assert not is_grey(weighted[:, 5:11]) and is_grey(background[None])


def test_greyscale_style_has_uniform_opacity():
    relevance = np.linspace(-1.0, 1.0, 9)[None].repeat(3, 0)
    layer = overlay(picture(3, 9), relevance, opacity=0.7, composite=False)
    assert (layer[..., 3] == round(0.7 * 255)).all()


def test_weak_negative_relevance_still_shows_in_the_default_style():
    relevance = split_relevance(16, 16) * np.r_[[1.0] * 8, [0.2] * 8]  # negative at 10 % of max
    grey = overlay(red_photo(), relevance, "bwr", opacity=0.6)
    weighted = overlay(red_photo(), relevance, "bwr", opacity=0.6, style="weighted")
    blue_minus_red = grey[0, -1, 2].astype(int) - grey[0, -1, 0]
    assert blue_minus_red > 10  # bluish: visibly negative
    assert weighted[0, -1, 0] > weighted[0, -1, 2]  # the weighted style leaves the photo red


def test_contour_style_draws_lines_in_level_colours_only_around_strong_regions():
    relevance = np.zeros((40, 40))
    relevance[10:30, 5:15] = 1.0
    relevance[10:30, 25:35] = -1.0
    result = overlay(picture(40, 40), relevance, "bwr", style="contour")
    inside, outside = result[20, 10], result[2, 20]
    assert is_grey(inside[None]) and is_grey(outside[None])  # lines only, no fill
    row = result[20]
    reddish = (row[:, 0].astype(int) - row[:, 2] > 40).nonzero()[0]
    bluish = (row[:, 2].astype(int) - row[:, 0] > 40).nonzero()[0]
    assert reddish.size and reddish.min() >= 4 and reddish.max() <= 15
    assert bluish.size and bluish.min() >= 24 and bluish.max() <= 35
    assert len(CONTOUR_LEVELS) == 3
    nothing = overlay(picture(40, 40), np.zeros((40, 40)), style="contour")
    assert is_grey(nothing)


def test_side_by_side_puts_input_heatmap_and_overlay_in_a_row():
    image, relevance = picture(8, 8), split_relevance()
    row = side_by_side(image, relevance, "bwr", mode="signed", bounds=(-1.0, 1.0))
    assert row.shape == (8, 3 * 8 + 2 * SIDE_BY_SIDE_GAP, 3) and row.dtype == np.uint8
    np.testing.assert_array_equal(row[:, :8], image)
    assert (row[:, 8 : 8 + SIDE_BY_SIDE_GAP] == 255).all()
    start = 8 + SIDE_BY_SIDE_GAP
    np.testing.assert_array_equal(
        row[:, start : start + 8], colorize(relevance, "bwr", bounds=(-1.0, 1.0))
    )
    np.testing.assert_array_equal(
        row[:, -8:], overlay(image, relevance, "bwr", bounds=(-1.0, 1.0))[..., :3]
    )


def test_unknown_overlay_style_is_refused():
    with pytest.raises(ValueError, match="unknown overlay style"):
        overlay(picture(), split_relevance(), style="blend")
