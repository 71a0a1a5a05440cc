"""Rules for products of two inputs and for layer normalisation.

Canonizers turn a gated product (squeeze-and-excitation) into a :class:`~.layer.Product` module;
:class:`SignalTakesAll` and :class:`UniformSplit` say how its relevance is shared between the
signal and the gate. :class:`LayerNormEpsilon` explains a layer norm as the linear map it is once
its standard deviation is held constant. Each rule conserves relevance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .core import Hook, Stabilizer
from .hooks import keep_output

__all__ = ["LayerNormEpsilon", "OutputRatioRule", "SignalTakesAll", "UniformSplit"]


def _summed_to(relevance: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum ``relevance`` over the dimensions along which ``like`` was broadcast."""
    return relevance if relevance.shape == like.shape else relevance.sum_to_size(like.shape)


class SignalTakesAll(Hook):
    """A product ``signal * gate`` passes all its relevance to the signal; the gate gets none.

    The gate is treated as a constant weight of the signal, as the epsilon rule would on the
    product with the gate fixed. Default for squeeze-and-excitation products.
    """

    uses_module_backward = False

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the output's relevance for the first input and zeros for the others."""
        record = self.stored_tensors
        args, relevance = record["input"], grad_output[0]
        return tuple(
            _summed_to(relevance, args[index]) if index == 0 else torch.zeros_like(args[index])
            for index in record["positions"]
        )


class UniformSplit(Hook):
    """A module with several inputs gives each input on the relevance path an equal share.

    Inputs that do not depend on the model's input (constants) get none, so nothing is lost.
    """

    uses_module_backward = False

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the output's relevance divided by the number of hooked inputs, per input."""
        record = self.stored_tensors
        args = record["input"]
        share = grad_output[0] / len(record["positions"])
        return tuple(_summed_to(share, args[index]) for index in record["positions"])


def _normalised_dims(module: nn.Module, input: torch.Tensor) -> tuple[int, ...]:
    """Return the dimensions a layer norm normalises: channels for LayerNorm2d, else the last."""
    if _is_channels_first(module):
        return (1,)
    count = len(module.normalized_shape)
    return tuple(range(input.dim() - count, input.dim()))


def _is_channels_first(module: nn.Module) -> bool:
    from torchvision.models.convnext import LayerNorm2d

    return isinstance(module, LayerNorm2d)


class OutputRatioRule(Hook):
    """A closed-form rule that divides the arriving relevance by its stabilized output ``s(y)``.

    It keeps the call's output for the backward pass; subclasses compute the inputs' relevance
    from ``R / s(y)`` in :meth:`backward`.

    Parameters
    ----------
    epsilon : float or callable, optional
        The stabilizer of the denominator ``s(y)``.
    """

    uses_module_backward = False

    def __init__(self, epsilon: float | Callable = 1e-6) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.stabilizer = Stabilizer.ensure(epsilon)

    def forward(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        """Keep the call's output for the backward pass."""
        keep_output(self.stored_tensors, output)


class LayerNormEpsilon(OutputRatioRule):
    """The epsilon rule for a layer norm whose standard deviation is held constant.

    With ``sigma`` fixed, ``y = w (x - mean(x)) / sigma + b`` is linear in ``x``; the epsilon rule
    on that map has the closed form ``R_x = x (h - mean(h)) / sigma`` with ``h = w R / s(y)``, the
    means taken over the normalised dimensions. Relevance is conserved up to the bias and the
    stabilizer. For ``torch.nn.LayerNorm`` (the last dimensions) and torchvision's ``LayerNorm2d``
    (the channels of an image tensor).

    Parameters
    ----------
    epsilon : float or callable, optional
        The stabilizer of the denominator ``s(y)``.
    """

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the relevance of the input in closed form."""
        record = self.stored_tensors
        x = record["input"][record["positions"][0]].detach()
        output = record["output"].detach()
        dims = _normalised_dims(module, x)
        variance = x.var(dim=dims, unbiased=False, keepdim=True)
        sigma = torch.sqrt(variance + module.eps)
        h = grad_output[0] / self.stabilizer(output)
        if module.weight is not None:
            weight = module.weight.detach()
            h = h * (weight.view(1, -1, *(1,) * (x.dim() - 2)) if dims == (1,) else weight)
        return (x * (h - h.mean(dim=dims, keepdim=True)) / sigma,)
