"""Loading images for a model: decoding, orientation, colour conversion and preprocessing.

:func:`load_image` reads PNG, JPEG, BMP, TIFF and WebP files (anything Pillow decodes), applies the
EXIF orientation, converts every colour mode to RGB (transparency is composited on white) and
returns both the model input and a display image with the same geometry, so a heatmap computed for
the input lies exactly over the picture. An image much larger than the model's input is decoded at
reduced size (JPEG's own scaled decoding, or Pillow's ``reduce`` for other formats), never below
what the preprocessing needs. Bad files raise :class:`ImageLoadError` naming the file, the problem
and what to do: also float images with NaN or infinite values, and images that would need more
memory than is available once resized. No global Pillow setting is changed.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .image_fit import RESAMPLING, normalised_tensor

if TYPE_CHECKING:
    from .models import ModelSpec

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings of the image formats offered in file dialogs."""

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image (width x height) that is decoded; bigger ones are refused as possible bombs."""


REDUCING_GAP = 3.0
"""How much larger than the resize target an image stays after the fast whole-factor reduction
that precedes resampling (Pillow's ``reducing_gap``); 3 is indistinguishable from a full resize."""

BYTES_PER_RESIZED_PIXEL = 8
"""Memory the resize to the model's input needs per output pixel: Pillow keeps 4 bytes per RGB
pixel, and its two-pass resampling holds an intermediate image up to that size as well."""


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


def to_rgb(image: Image.Image, name: str = "the image") -> Image.Image:
    """Return ``image`` as RGB: transparency composited on white, 16-bit and float scaled to 8 bits.

    Parameters
    ----------
    image : PIL.Image.Image
        An image in any Pillow mode.
    name : str
        What to call the image in an error message, e.g. its file.

    Raises
    ------
    ImageLoadError
        If a float image holds NaN or infinite values.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        _check_finite(values, name)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    has_alpha = (
        image.mode in ("RGBA", "LA", "PA", "La", "RGBa")
        or (image.mode == "P" and "transparency" in image.info)
        or (image.mode in ("L", "RGB") and "transparency" in image.info)
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def available_memory() -> int | None:
    """Return the bytes of memory available to a new allocation, or None where unknown.

    The smallest of what the machine has free (``MemAvailable`` from ``/proc/meminfo`` on Linux:
    free memory plus caches that can be dropped; elsewhere the free physical pages that
    ``os.sysconf`` reports), what the process's cgroup (container) limit leaves, and what its
    address-space limit (``ulimit -v``) leaves.
    """
    known = [
        value
        for value in (_machine_available(), _cgroup_available(), _address_space_available())
        if value is not None
    ]
    return min(known, default=None)


def _machine_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _read_number(path: str) -> int | None:
    """Return the integer in a one-line system file, None where missing or not a number ("max")."""
    try:
        with open(path, encoding="ascii") as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


def _cgroup_available() -> int | None:
    """Return what the cgroup v2 memory limit leaves (None without a limit)."""
    limit = _read_number("/sys/fs/cgroup/memory.max")
    used = _read_number("/sys/fs/cgroup/memory.current")
    return None if limit is None or used is None else max(limit - used, 0)


def _address_space_available() -> int | None:
    """Return what the address-space limit leaves beyond the process's current size.

    None without a limit, and where the platform has no such limit.
    """
    try:
        import resource  # Unix only
    except ImportError:
        return None
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    return max(limit - size, 0)


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

    Raises
    ------
    ImageLoadError
        If the image holds NaN or infinite values, or would need more memory than is available
        once resized.
    """
    name = "the image" if path is None else str(path)
    _check_memory(image.size, spec, name)
    return _prepared(to_rgb(image, name), spec, path, image.size)


def _prepared(
    rgb: Image.Image, spec: ModelSpec, path: Path | None, original_size: tuple[int, int]
) -> LoadedImage:
    """Preprocess an RGB image; a large one is first shrunk to the resize target, fast.

    Pillow's ``reducing_gap`` first reduces by a whole factor (``Image.reduce``) and then resamples
    with the box kept exact, so the image keeps its geometry and the spec's resize becomes a copy.
    """
    try:
        if min(rgb.size) >= 2 * spec.resize:
            resample = RESAMPLING[spec.interpolation]
            rgb = rgb.resize(_resized_size(rgb.size, spec), resample, reducing_gap=REDUCING_GAP)
        fitted = spec.fit(rgb)  # once, for both: what ModelSpec.preprocess does to an RGB image
        display = np.asarray(fitted, dtype=np.uint8).copy()
        tensor = normalised_tensor(fitted, spec.mean, spec.std)
    except MemoryError as error:  # the estimate of _check_memory fell short of the truth
        width, height = _resized_size(original_size, spec)
        raise ImageLoadError(
            f"{path or 'the image'} ({original_size[0]} x {original_size[1]} pixels) ran out of "
            f"memory while being resized to {width} x {height}. Crop it to a less elongated "
            "shape, or scale it down, first."
        ) from error
    return LoadedImage(path, tensor, display, original_size)


def _check_finite(values: np.ndarray, name: str) -> None:
    """Raise :class:`ImageLoadError` if ``values`` holds NaN or infinite numbers."""
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ImageLoadError(
            f"{name} holds {bad:,} of {values.size:,} values that are not finite (NaN or "
            "infinite), so those pixels have no brightness. Replace them (e.g. with 0) in the "
            "program that wrote the image, then load it again."
        )


def _check_memory(size: tuple[int, int], spec: ModelSpec, name: str) -> None:
    """Raise :class:`ImageLoadError` if resizing an image of ``size`` would exhaust memory."""
    width, height = _resized_size(size, spec)
    needed = width * height * BYTES_PER_RESIZED_PIXEL
    available = available_memory()
    if available is not None and needed > available:
        raise ImageLoadError(
            f"{name} ({size[0]} x {size[1]} pixels) needs about {needed / 2**30:.1f} GiB after "
            f"resizing to {width} x {height} (shorter side {spec.resize}), more than the "
            f"{available / 2**30:.1f} GiB available. Crop it to a less elongated shape first."
        )


def _resized_size(size: tuple[int, int], spec: ModelSpec) -> tuple[int, int]:
    """Return the (width, height) an image of ``size`` has after ``spec``'s resize, before the crop.

    Parameters
    ----------
    size : tuple of int
        (width, height) of the image.
    spec : ModelSpec
        The model whose preprocessing resizes the shorter side to :attr:`~.ModelSpec.resize`.
    """
    width, height = size
    short, long = min(size), max(size)
    scaled = int(spec.resize * long / short)
    return (spec.resize, scaled) if width <= height else (scaled, spec.resize)


def _check_path(path: Path) -> None:
    """Raise :class:`ImageLoadError` for a path that cannot hold an image."""
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file. Check the path and the file name.")
    if path.is_dir():
        raise ImageLoadError(f"{path} is a folder, not an image file. Choose an image inside it.")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path} is empty (0 bytes). Save or copy the image again.")


def _decode(path: Path, spec: ModelSpec) -> tuple[Image.Image, tuple[int, int]]:
    """Open, size-check, orient and decode the image in ``path``, reduced where ``spec`` allows.

    Returns the decoded image and its full (width, height) after orientation.  JPEGs are decoded
    at 1/2, 1/4 or 1/8 scale where the shorter side stays at least ``spec.resize``.
    """
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
            _check_memory(opened.size, spec, str(path))
            scale = spec.resize / min(width, height)
            if scale < 0.5:
                opened.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            oriented.load()
            swapped = oriented.size != opened.size
            return oriented, (height, width) if swapped else (width, height)


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
        truncated, is too large, holds NaN or infinite values, or would need more memory than is
        available once resized.
    """
    path = Path(path)
    _check_path(path)
    try:
        decoded, original_size = _decode(path, spec)
        image = to_rgb(decoded, str(path))
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
    return _prepared(image, spec, path, original_size)


MASK_SUFFIX = "_mask.png"
"""The name ending of an object mask stored beside its image: ``<stem>_mask.png``."""


def mask_file(image_path: str | Path) -> Path:
    """Return where the object mask of ``image_path`` lies (``<stem>_mask.png`` beside it)."""
    path = Path(image_path)
    return path.with_name(path.stem + MASK_SUFFIX)


def is_mask_file(path: str | Path) -> bool:
    """Whether ``path`` names an object mask (``*_mask.png``) rather than an image."""
    return Path(path).name.lower().endswith(MASK_SUFFIX)


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing file with an image suffix that is not an object mask."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not is_mask_file(path)


def image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Return the images in ``folder`` (in its sub-folders too if ``recursive``), sorted.

    Object masks (``*_mask.png``) are no images here: the app's folder view, the command line
    and the bundled samples all list a folder through this function.
    """
    pattern = "**/*" if recursive else "*"
    return sorted(path for path in Path(folder).glob(pattern) if is_image_file(path))
