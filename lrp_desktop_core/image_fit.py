"""Fitting a picture to a network's input without torchvision.

The shorter side is resized, the centre is cropped and the pixels are normalised. Importing
torchvision takes about as long as importing torch, and a model that is not torchvision's (the
bundled demo, a user's own network) needs nothing else from it. For a PIL image, each function here
gives the same result, bit for bit, as its namesake in ``torchvision.transforms.functional``:
``resize`` (which leaves PIL's antialiasing on), ``center_crop``, and ``pil_to_tensor`` followed by
``normalize``. The tests compare them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["RESAMPLING", "center_crop", "normalised_tensor", "resize_shorter_side"]

RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
"""PIL's resampling filter for each interpolation a model spec can name."""


def resize_shorter_side(image: Image.Image, size: int, interpolation: str) -> Image.Image:
    """Return ``image`` resized so that its shorter side is ``size`` pixels, keeping its aspect.

    The longer side is rounded down; a square image counts its width as the shorter side. An
    image that already has that size is returned as it is.
    """
    width, height = image.size
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    if new_size == (width, height):
        return image
    return image.resize(new_size, RESAMPLING[interpolation])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Return the centred ``size`` x ``size`` square of ``image``.

    A side shorter than ``size`` is first padded with zeros, half on each side (the odd pixel
    after the image); the crop's offset is rounded half to even.
    """
    width, height = image.size
    if size > width or size > height:
        border = (
            max(size - width, 0) // 2,
            max(size - height, 0) // 2,
            (max(size - width, 0) + 1) // 2,
            (max(size - height, 0) + 1) // 2,
        )
        bands = len(image.getbands())
        image = ImageOps.expand(image, border=border, fill=0 if bands == 1 else (0,) * bands)
        width, height = image.size
        if (width, height) == (size, size):
            return image
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def normalised_tensor(
    image: Image.Image, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Return ``image``'s pixels as a normalised float32 (channels, height, width) tensor.

    The pixels are scaled to [0, 1], then shifted by ``mean`` and divided by ``std`` per channel.
    The arithmetic is numpy's, on the calling thread alone: images are prepared on background
    threads while torch computes, and torch's own kernels there would start a thread team of
    their own for each loading thread, competing with the computation for the cores.
    """
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    scaled = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    shift = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    scale = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return torch.from_numpy((scaled - shift) / scale)
