"""The errors of an explanation that went wrong numerically, and the checks that raise them.

:func:`~.explain.explain` raises :class:`NonFiniteError` where its input, the logits or the
relevance hold NaN or inf, and :class:`DeviceOutOfMemoryError` where the device's memory did not
suffice; both messages say which images and what to do. Both are re-exported by ``explain``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .explain import Method

__all__ = ["DeviceOutOfMemoryError", "NonFiniteError", "check_finite", "out_of_memory_error"]


class NonFiniteError(ValueError):
    """Raised when the input, the logits or the relevance of an explanation hold NaN or inf.

    The message says which of them, for which images of the batch (numbered from 1), and what
    to do about it.

    Parameters
    ----------
    message : str
        The explanation for the user.
    what : str
        What is not finite: "input", "logits" or "relevance".
    samples : tuple of int
        The positions in the batch (from 0) of the images affected.

    Attributes
    ----------
    what : str
        As given.
    samples : tuple of int
        As given.
    """

    def __init__(self, message: str, what: str, samples: tuple[int, ...]) -> None:
        super().__init__(message)
        self.what = what
        self.samples = samples


class DeviceOutOfMemoryError(RuntimeError):
    """Raised when the device runs out of memory during :func:`explain`.

    The device's cache is emptied before it is raised, so that a smaller request can run next.

    Parameters
    ----------
    message : str
        The explanation for the user, naming the batch and image size and what to do.
    device : str
        The device that ran out of memory, e.g. ``"cuda:0"``.
    batch_size : int
        The number of images in the batch.
    image_size : tuple of int
        Height and width of the images.

    Attributes
    ----------
    device, batch_size, image_size
        As given.
    """

    def __init__(
        self, message: str, device: str, batch_size: int, image_size: tuple[int, ...]
    ) -> None:
        super().__init__(message)
        self.device = device
        self.batch_size = batch_size
        self.image_size = image_size


def out_of_memory_error(
    inputs: torch.Tensor, device: torch.device, method: Method
) -> DeviceOutOfMemoryError:
    """Return the error saying that explaining ``inputs`` did not fit into ``device``'s memory."""
    count, image_size = len(inputs), tuple(inputs.shape[2:])
    images = "one image" if count == 1 else f"a batch of {count} images"
    size = " x ".join(str(side) for side in image_size)
    advice = "explain fewer images at once, use smaller images, or run on the CPU"
    if method.kind == "occlusion":
        advice = f"lower the occlusion batch size, {advice}"
    return DeviceOutOfMemoryError(
        f"{device} ran out of memory explaining {images} of {size} pixels with "
        f"{method.label()}: {advice}.",
        str(device),
        count,
        image_size,
    )


_NON_FINITE_ADVICE = {
    "input": "check how the images were loaded and preprocessed (a normalisation by a zero "
    "standard deviation, say); the explanation needs finite inputs",
    "logits": "the model's weights hold NaN or inf, or a layer overflows the model's floating "
    "point type ({dtype}); check the weights file and the scale of the input",
    "relevance": "the gradient overflows the model's floating point type ({dtype}); try a "
    "wider type or another method",
}
_NON_FINITE_LRP_ADVICE = (
    "a rule's stabilizer may be too small (try a larger epsilon), or a value overflows the "
    "model's floating point type ({dtype})"
)


def check_finite(values: torch.Tensor, what: str, method: Method, dtype: torch.dtype) -> None:
    """Raise :class:`NonFiniteError` if ``values`` (batch first) hold NaN or inf.

    ``what`` names them ("input", "logits" or "relevance"); ``dtype`` is the model's type.
    """
    bad = (~torch.isfinite(values)).flatten(1).sum(dim=1)
    samples = tuple(bad.nonzero()[:, 0].tolist())
    if not samples:
        return
    count = len(values)
    if count == 1:
        where = ""
    elif len(samples) == 1:
        where = f" in image {samples[0] + 1} of {count}"
    else:
        where = f" in images {', '.join(str(i + 1) for i in samples)} of {count}"
    advice = _NON_FINITE_ADVICE[what]
    if what == "relevance" and method.kind == "lrp":
        advice = _NON_FINITE_LRP_ADVICE
    advice = advice.format(dtype=str(dtype).removeprefix("torch."))
    if what == "input":
        total = int(bad.sum())
        subject = f"The input holds {total} NaN or inf value{'s' if total > 1 else ''}"
    elif what == "logits":
        subject = "The model's outputs (logits) hold NaN or inf"
    else:
        subject = f"The relevance ({method.label()}) holds NaN or inf"
    raise NonFiniteError(f"{subject}{where}: {advice}.", what, samples)
