"""Fitting a picture to a network's input: bit for bit what torchvision's functions give."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as reference

from lrp_desktop_core.image_fit import center_crop, normalised_tensor, resize_shorter_side
from lrp_desktop_core.models import demo_samples, get_spec

SIZES = [(64, 64), (90, 70), (70, 90), (255, 257), (300, 225), (33, 500), (224, 224), (1, 3)]
"""Image (width, height): square, landscape, portrait, odd, extreme, tiny."""
FITS = [(64, 64), (256, 224), (232, 224), (342, 299), (518, 518), (80, 100)]
"""(resize, crop): the demo's, ImageNet's, ConvNeXt's, Inception's, ViT-H's, a crop > resize."""


def noise(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def assert_same_image(mine: Image.Image, theirs: Image.Image) -> None:
    assert mine.size == theirs.size and mine.mode == theirs.mode
    assert np.array_equal(np.asarray(mine), np.asarray(theirs))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_resize_and_crop_give_torchvisions_pixels(interpolation, mode):
    for seed, (size, (resize, crop)) in enumerate(itertools.product(SIZES, FITS)):
        image = noise(size, mode, seed)
        resized = resize_shorter_side(image, resize, interpolation)
        expected = reference.resize(
            image, resize, interpolation=InterpolationMode(interpolation), antialias=True
        )
        assert_same_image(resized, expected)
        assert_same_image(center_crop(resized, crop), reference.center_crop(expected, [crop, crop]))


def test_an_image_of_the_right_size_is_not_resampled():
    image = noise((64, 90), "RGB", 1)
    assert resize_shorter_side(image, 64, "bicubic") is image


def test_crops_larger_than_the_image_pad_with_zeros_like_torchvision():
    image = noise((5, 8), "RGB", 0)
    for crop in (6, 7, 8, 9, 12):
        assert_same_image(center_crop(image, crop), reference.center_crop(image, [crop, crop]))
    padded = np.asarray(center_crop(image, 9))
    assert padded.shape == (9, 9, 3) and not padded[:, :2].any() and not padded[:, -2:].any()


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("size", [(37, 29), (224, 224)])
def test_normalised_tensors_equal_torchvisions(mode, size):
    image = noise(size, mode, 3)
    channels = len(image.getbands())
    mean, std = (0.485, 0.456, 0.406)[:channels], (0.229, 0.224, 0.225)[:channels]
    expected = reference.normalize(reference.pil_to_tensor(image).float() / 255.0, mean, std)
    tensor = normalised_tensor(image, mean, std)
    assert tensor.dtype == torch.float32 and tensor.shape == (channels, size[1], size[0])
    assert torch.equal(tensor, expected)


class KernelLog(TorchDispatchMode):
    """Records every torch kernel called while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.kernels.append(str(func))
        return func(*args, **(kwargs or {}))


def test_normalising_runs_no_torch_kernel():
    # Loading threads prepare images while torch computes: a torch kernel there would start a
    # thread team of its own and compete with the computation for the cores.
    image = noise((224, 224), "RGB", 4)
    with KernelLog() as log:
        normalised_tensor(image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with KernelLog() as control:  # the log sees torch's arithmetic
        torch.from_numpy(np.array(image)).float() / 255.0
    wrapping = "aten.lift_fresh.default"  # from_numpy: a tensor around numpy's memory, no work
    assert [kernel for kernel in log.kernels if kernel != wrapping] == []
    assert [kernel for kernel in control.kernels if kernel != wrapping]


def test_a_spec_preprocesses_photos_and_samples_as_before():
    spec = get_spec("demo")
    photo = noise((640, 427), "RGB", 5)
    for image in (photo, Image.open(demo_samples()[0]).convert("RGB")):
        fitted = reference.center_crop(
            reference.resize(image, spec.resize, antialias=True), [spec.crop, spec.crop]
        )
        expected = reference.normalize(
            reference.pil_to_tensor(fitted).float() / 255.0, list(spec.mean), list(spec.std)
        )
        assert torch.equal(spec.preprocess(image), expected)
