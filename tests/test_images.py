"""Tests of image loading: formats, orientation, colour modes, geometry and every bad input."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from lrp_desktop_core import images
from lrp_desktop_core.images import ImageLoadError, load_image, prepare_image
from lrp_desktop_core.models import get_spec


@pytest.fixture(scope="module")
def spec():
    """Return the demo's spec: resize the shorter side to 64, centre-crop 64x64."""
    return get_spec("demo")


def _picture(width: int = 96, height: int = 72) -> Image.Image:
    """Return a smooth colour picture, so lossy formats stay close to the original."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def _assert_aligned(loaded, spec):
    """Return the tensor is exactly the normalised display image."""
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    from_display = (torch.from_numpy(loaded.display).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(loaded.tensor, from_display)


@pytest.mark.parametrize(
    ("suffix", "lossless"),
    [(".png", True), (".bmp", True), (".tiff", True), (".webp", False), (".jpg", False)],
)
def test_formats_load_at_the_model_geometry(tmp_path, spec, suffix, lossless):
    picture = _picture()
    path = tmp_path / f"picture{suffix}"
    picture.save(path)
    loaded = load_image(path, spec)
    assert loaded.path == path and loaded.original_size == (96, 72)
    assert loaded.tensor.shape == (3, 64, 64) and loaded.tensor.dtype == torch.float32
    assert loaded.display.shape == (64, 64, 3) and loaded.display.dtype == np.uint8
    _assert_aligned(loaded, spec)
    expected = np.asarray(spec.fit(picture))
    difference = np.abs(loaded.display.astype(int) - expected.astype(int))
    assert difference.max() == 0 if lossless else difference.mean() < 6


def test_display_is_the_centre_crop(tmp_path, spec):
    stripes = np.zeros((64, 128, 3), dtype=np.uint8)
    stripes[:, 32:96] = 255  # white centre, black left and right quarters
    path = tmp_path / "wide.png"
    Image.fromarray(stripes).save(path)
    loaded = load_image(path, spec)
    assert (loaded.display == 255).all()


def test_exif_orientation_is_applied(tmp_path, spec):
    picture = np.zeros((32, 64, 3), dtype=np.uint8)
    picture[:, :32] = (255, 0, 0)  # left half red
    picture[:, 32:] = (0, 0, 255)  # right half blue
    image = Image.fromarray(picture)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    loaded = load_image(path, spec)
    assert loaded.original_size == (32, 64)
    top, bottom = loaded.display[8, 32], loaded.display[56, 32]
    assert tuple(top) == (255, 0, 0) and tuple(bottom) == (0, 0, 255)


def test_transparency_is_composited_on_white(tmp_path, spec):
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[:, :32] = (0, 0, 0, 0)  # left: transparent black
    rgba[:, 32:] = (0, 128, 0, 255)  # right: opaque green
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    display = load_image(path, spec).display
    assert (display[:, :32] == 255).all()
    assert (display[:, 32:] == (0, 128, 0)).all()


@pytest.mark.parametrize(
    ("make", "expected_grey"),
    [
        (lambda: Image.new("L", (64, 64), 90), 90),
        (lambda: Image.new("1", (64, 64), 1), 255),
        (lambda: Image.new("LA", (64, 64), (40, 255)), 40),
        (lambda: Image.new("P", (64, 64), 0).convert("L").convert("P"), 0),
        (lambda: Image.fromarray(np.full((64, 64), 65535, dtype=np.uint16)), 255),
    ],
    ids=["grayscale", "bilevel", "grayscale_alpha", "palette", "16bit"],
)
def test_colour_modes_become_rgb(tmp_path, spec, make, expected_grey):
    path = tmp_path / "mode.png"
    make().save(path)
    display = load_image(path, spec).display
    assert display.shape == (64, 64, 3)
    assert (display == expected_grey).all()


def test_palette_image_keeps_its_colours(tmp_path, spec):
    image = Image.new("RGB", (64, 64), (200, 30, 60)).quantize(colors=4)
    path = tmp_path / "palette.png"
    image.save(path)
    assert (load_image(path, spec).display == (200, 30, 60)).all()


def test_prepare_image_accepts_images_in_memory(spec):
    loaded = prepare_image(Image.new("RGBA", (80, 64), (10, 20, 30, 255)), spec)
    assert loaded.path is None and (loaded.display == (10, 20, 30)).all()
    _assert_aligned(loaded, spec)


def _truncated(image_format: str):
    """Return a writer of the first half of an encoded picture."""

    def make(path):
        buffer = io.BytesIO()
        _picture(200, 150).save(buffer, format=image_format)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    return make


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("missing.png", lambda p: None, "no such file"),
        ("folder.png", lambda p: p.mkdir(), "is a folder"),
        ("empty.png", lambda p: p.write_bytes(b""), "is empty"),
        ("notes.png", lambda p: p.write_text("not an image at all"), "not an image file"),
        ("cut.png", _truncated("PNG"), "damaged, truncated"),
        ("cut.jpg", _truncated("JPEG"), "damaged, truncated"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, spec, name, make, problem):
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageLoadError, match=problem) as caught:
        load_image(path, spec)
    assert str(path) in str(caught.value)


def test_images_above_our_pixel_limit_are_refused(tmp_path, spec, monkeypatch):
    path = tmp_path / "big.png"
    _picture(40, 30).save(path)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="40 x 30 = 1,200 pixels") as caught:
        load_image(path, spec)
    assert str(path) in str(caught.value)


def test_pillow_decompression_bombs_are_refused(tmp_path, spec, monkeypatch):
    path = tmp_path / "bomb.png"
    _picture(40, 30).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match="too large") as caught:
        load_image(path, spec)
    assert str(path) in str(caught.value)


def test_loading_leaves_no_global_state_changed(tmp_path, spec):
    path = tmp_path / "picture.png"
    _picture().save(path)
    limit, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    filters = list(warnings.filters)
    load_image(path, spec)
    with pytest.raises(ImageLoadError):
        load_image(tmp_path / "missing.png", spec)
    assert limit == Image.MAX_IMAGE_PIXELS
    assert truncated == ImageFile.LOAD_TRUNCATED_IMAGES
    assert warnings.filters == filters


def test_image_suffixes_cover_the_supported_formats():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} <= set(images.IMAGE_SUFFIXES)
