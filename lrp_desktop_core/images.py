"""Loading images for a model: decoding, orientation, colour conversion and preprocessing.

:func:`load_image` reads PNG, JPEG, BMP, TIFF and WebP files (anything Pillow decodes), applies the
EXIF orientation, converts every colour mode to RGB (transparency is composited on white) and
returns both the model input and a display image with the same geometry, so a heatmap computed for
the input lies exactly over the picture. Bad files raise :class:`ImageLoadError` naming the file,
the problem and what to do; no global Pillow setting is changed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from .models import ModelSpec

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings of the image formats offered in file dialogs."""

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image (width x height) that is decoded; bigger ones are refused as possible bombs."""


class ImageLoadError(Exception):
    """An image could not be loaded; the message names the file, the problem and what to do."""


@dataclass
class LoadedImage:
    """An image prepared for a model.

    Attributes
    ----------
    path : Path or None
        The file it came from (None for an image given in memory).
    tensor : torch.Tensor
        (3, H, W) float32, preprocessed for the model.
    display : np.ndarray
        (H, W, 3) uint8 RGB at the model's input geometry, pixel-aligned with ``tensor``.
    original_size : tuple of int
        (width, height) of the image before resizing, after EXIF orientation.
    """

    path: Path | None
    tensor: torch.Tensor
    display: np.ndarray
    original_size: tuple[int, int]


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as RGB: transparency composited on white, 16-bit and float scaled to 8 bits.

    Parameters
    ----------
    image : PIL.Image.Image
        An image in any Pillow mode.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    ) or (image.mode in ("L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def prepare_image(image: Image.Image, spec: ModelSpec, path: Path | None = None) -> LoadedImage:
    """Prepare an in-memory image (e.g. pasted) for ``spec``'s model, as :func:`load_image` does.

    Parameters
    ----------
    image : PIL.Image.Image
        The decoded image, in any mode.
    spec : ModelSpec
        The model whose preprocessing to apply.
    path : Path, optional
        Where the image came from, for the record.
    """
    rgb = to_rgb(image)
    display = np.asarray(spec.fit(rgb), dtype=np.uint8).copy()
    return LoadedImage(path, spec.preprocess(rgb), display, rgb.size)


def _check_path(path: Path) -> None:
    """Raise :class:`ImageLoadError` for a path that cannot hold an image."""
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file. Check the path and the file name.")
    if path.is_dir():
        raise ImageLoadError(f"{path} is a folder, not an image file. Choose an image inside it.")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path} is empty (0 bytes). Save or copy the image again.")


def _decode(path: Path) -> Image.Image:
    """Open, size-check, orient and fully decode the image in ``path``."""
    with warnings.catch_warnings():
        # Pillow warns about big images against its own global limit; ours is MAX_IMAGE_PIXELS.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageLoadError(
                    f"{path} is {width} x {height} = {width * height:,} pixels, more than the "
                    f"limit of {MAX_IMAGE_PIXELS:,} (it could exhaust memory). Scale it down "
                    "with an image editor first."
                )
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            oriented.load()
            return oriented


def load_image(path: str | Path, spec: ModelSpec) -> LoadedImage:
    """Load an image file and prepare it for ``spec``'s model.

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG, BMP, TIFF or WebP file (anything Pillow can decode).
    spec : ModelSpec
        The model whose preprocessing (resize, centre crop, normalisation) to apply.

    Returns
    -------
    LoadedImage
        The model input and the display image at the input geometry.

    Raises
    ------
    ImageLoadError
        If the path is missing, a folder or empty, or the file is not an image, is damaged or
        truncated, or is too large.
    """
    path = Path(path)
    _check_path(path)
    try:
        image = to_rgb(_decode(path))
    except ImageLoadError:
        raise
    except UnidentifiedImageError as error:
        raise ImageLoadError(
            f"{path} is not an image file that can be read (supported: "
            f"{', '.join(IMAGE_SUFFIXES)}). Choose an image file or convert it."
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            f"{path} is too large to decode safely ({error}). Scale it down first."
        ) from error
    except PermissionError as error:
        raise ImageLoadError(f"{path} cannot be read: permission denied ({error}).") from error
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError... for bad data
        raise ImageLoadError(
            f"{path} is damaged, truncated or in an unsupported colour mode and cannot be decoded "
            f"({error}). Open it in an image editor and save it again as RGB, or use another copy."
        ) from error
    return prepare_image(image, spec, path)
