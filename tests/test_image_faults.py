"""Tests of image loading where numbers or memory could go wrong: NaN pixels, huge and odd sizes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lrp_desktop_core import images
from lrp_desktop_core.images import ImageLoadError, load_image, prepare_image
from lrp_desktop_core.models import ModelSpec, get_spec


@pytest.fixture(scope="module")
def spec():
    """Return the demo's spec: resize the shorter side to 64, centre-crop 64x64."""
    return get_spec("demo")


@pytest.fixture
def fitted_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Return the sizes of the images handed to the preprocessing (``ModelSpec.fit``), in order."""
    sizes: list[tuple[int, int]] = []
    fit = ModelSpec.fit

    def recording_fit(self, image):
        sizes.append(image.size)
        return fit(self, image)

    monkeypatch.setattr(ModelSpec, "fit", recording_fit)
    return sizes


def _float_tiff(path, bad_value: float, count: int) -> None:
    values = np.full((40, 50), 0.5, dtype=np.float32)
    values.flat[:count] = bad_value
    Image.fromarray(values).save(path)


def _checkered(width: int, height: int) -> Image.Image:
    """Return a picture with edges and gradients, so a wrongly scaled decode differs visibly."""
    xs = np.arange(width, dtype=np.uint16)[None, :]
    ys = np.arange(height, dtype=np.uint16)[:, None]
    squares = ((xs // (width // 12) + ys // (height // 9)) % 2 * 150).astype(np.uint8)
    red = np.broadcast_to(squares + (xs * 100 // width).astype(np.uint8), (height, width))
    green = np.broadcast_to((ys * 255 // height).astype(np.uint8), (height, width))
    blue = np.broadcast_to((xs * 255 // width).astype(np.uint8), (height, width))
    return Image.fromarray(np.ascontiguousarray(np.stack([red, green, blue], axis=-1)))


@pytest.mark.parametrize(("bad_value", "count"), [(np.nan, 3), (np.inf, 1), (-np.inf, 7)])
def test_float_tiffs_with_values_that_are_not_finite_are_refused(tmp_path, spec, bad_value, count):
    path = tmp_path / "float.tif"
    _float_tiff(path, bad_value, count)
    with Image.open(path) as saved:
        assert saved.mode == "F"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageLoadError, match=f"holds {count} of 2,000 values that are not fin"):
            load_image(path, spec)
    with pytest.raises(ImageLoadError) as caught:
        load_image(path, spec)
    assert str(path) in str(caught.value)


def test_finite_float_tiffs_still_load(tmp_path, spec):
    path = tmp_path / "float.tif"
    _float_tiff(path, 0.5, 0)
    loaded = load_image(path, spec)
    assert torch.isfinite(loaded.tensor).all()
    assert (loaded.display[..., 0] == 128).all()  # 0.5 of 255, rounded


def test_images_in_memory_with_nan_are_refused(spec):
    values = np.zeros((30, 30), dtype=np.float32)
    values[5, 5] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageLoadError, match="the image holds 1 of 900 values"):
            prepare_image(Image.fromarray(values), spec)


@pytest.mark.parametrize(
    ("size", "decoded", "fitted"),
    [((4000, 3000), (500, 375), (85, 64)), ((3001, 2003), (376, 251), (95, 64))],
    ids=["divisible", "partial_blocks"],
)
def test_large_jpegs_are_decoded_at_reduced_size_close_to_the_full_decode(
    tmp_path, spec, fitted_sizes, monkeypatch, size, decoded, fitted
):
    path = tmp_path / "large.jpg"
    _checkered(*size).save(path, quality=95)
    decoded_sizes = []
    to_rgb = images.to_rgb

    def recording_to_rgb(image, name):
        decoded_sizes.append(image.size)
        return to_rgb(image, name)

    monkeypatch.setattr(images, "to_rgb", recording_to_rgb)
    loaded = load_image(path, spec)
    assert decoded_sizes == [decoded]  # JPEG's 1/8 scale decoding: the shorter side stays >= 64
    assert fitted_sizes[0] == fitted  # then shrunk to the resize target, never below
    assert loaded.original_size == size
    with Image.open(path) as full:
        reference = spec.preprocess(full.convert("RGB"))
    assert loaded.tensor.shape == reference.shape == (3, 64, 64)
    difference = (loaded.tensor - reference).abs()
    # normalised units: one grey level is about 0.017; a scaled decode is off by a level or two
    assert difference.mean() < 0.05 and difference.max() < 0.5


@pytest.mark.parametrize(
    ("size", "fitted"),
    [((1000, 600), (106, 64)), ((200, 120), (200, 120)), ((130, 300), (64, 147))],
    ids=["large", "too_small_to_shrink", "just_large_enough"],
)
def test_other_formats_are_shrunk_to_the_resize_and_match_the_full_resize(
    tmp_path, spec, fitted_sizes, size, fitted
):
    path = tmp_path / "picture.png"
    _checkered(*size).save(path)
    loaded = load_image(path, spec)
    assert fitted_sizes[0] == fitted and min(fitted) >= spec.resize
    assert loaded.original_size == size and loaded.tensor.shape == (3, 64, 64)
    with Image.open(path) as full:
        reference = spec.preprocess(full.convert("RGB"))
    difference = (loaded.tensor - reference).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.2


def test_rotated_jpegs_report_their_full_size_after_orientation(tmp_path, spec, fitted_sizes):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    _checkered(1200, 800).save(path, exif=exif)
    loaded = load_image(path, spec)
    assert loaded.original_size == (800, 1200)
    assert fitted_sizes[0] == (100, 150)  # decoded at 1/8, then turned upright


def test_images_needing_more_memory_than_available_are_refused(tmp_path, spec, monkeypatch):
    path = tmp_path / "strip.png"
    Image.new("RGB", (1, 20_000), (10, 20, 30)).save(path)
    monkeypatch.setattr(images, "available_memory", lambda: 256 * 2**20)
    with pytest.raises(ImageLoadError) as caught:
        load_image(path, spec)
    message = str(caught.value)
    assert str(path) in message and "(1 x 20000 pixels)" in message
    # 64 x 1,280,000 pixels after resizing the shorter side to 64
    assert "needs about 0.6 GiB after resizing to 64 x 1280000" in message
    assert "more than the 0.2 GiB available" in message
    with pytest.raises(ImageLoadError, match="the image \\(1 x 20000 pixels\\) needs about"):
        prepare_image(Image.new("RGB", (1, 20_000)), spec)


def test_elongated_images_load_where_memory_suffices(tmp_path, spec, monkeypatch):
    path = tmp_path / "strip.png"
    Image.new("RGB", (500, 2), (10, 20, 30)).save(path)
    monkeypatch.setattr(images, "available_memory", lambda: 256 * 2**20)
    loaded = load_image(path, spec)
    assert loaded.original_size == (500, 2) and (loaded.display == (10, 20, 30)).all()


def test_available_memory_is_known_here():
    available = images.available_memory()
    assert available is not None and 0 < available < 2**50


def test_available_memory_is_the_least_of_machine_container_and_address_space(monkeypatch):
    monkeypatch.setattr(images, "_machine_available", lambda: 20 * 2**30)
    monkeypatch.setattr(images, "_cgroup_available", lambda: 6 * 2**30)
    monkeypatch.setattr(images, "_address_space_available", lambda: None)
    assert images.available_memory() == 6 * 2**30
    monkeypatch.setattr(images, "_address_space_available", lambda: 2**30)
    assert images.available_memory() == 2**30
    for name in ("_machine_available", "_cgroup_available", "_address_space_available"):
        monkeypatch.setattr(images, name, lambda: None)
    assert images.available_memory() is None


def test_an_address_space_limit_counts_from_the_process_size(monkeypatch):
    resource = pytest.importorskip("resource")
    with open("/proc/self/statm", encoding="ascii") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    limit = size + 512 * 2**20
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (limit, limit))
    left = images._address_space_available()
    assert left is not None and 256 * 2**20 < left <= 512 * 2**20
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (resource.RLIM_INFINITY,) * 2)
    assert images._address_space_available() is None


def test_running_out_of_memory_while_resizing_is_an_image_load_error(tmp_path, spec, monkeypatch):
    path = tmp_path / "picture.png"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(path)

    def exhausted(self, image):
        raise MemoryError

    monkeypatch.setattr(ModelSpec, "fit", exhausted)
    with pytest.raises(ImageLoadError, match="ran out of memory while being resized to 96 x 64"):
        load_image(path, spec)
