"""Groups of layer types that rules and composites are assigned to, usable with ``isinstance``.

Each group is a class that is never instantiated: ``isinstance(module, Convolution)`` is true for
every module whose type is one of the group's members, and ``issubclass`` works the same way on
types. Groups may contain other groups.

Examples
--------
>>> isinstance(torch.nn.Conv2d(3, 8, 3), Linear)
True
>>> issubclass(torch.nn.ReLU, Activation)
True
"""

from __future__ import annotations

import sys

from torch import nn

__all__ = [
    "Activation",
    "AvgPool",
    "BatchNorm",
    "Convolution",
    "ConvolutionStandard",
    "ConvolutionTranspose",
    "LayerNorm",
    "Linear",
    "MaxPool",
    "TypeGroup",
]


class _TypeGroupMeta(type):
    """Metaclass that makes ``isinstance``/``issubclass`` test membership in a group of types."""

    def member_types(cls) -> tuple[type, ...]:
        """Return the member types, resolving optional ones from modules imported so far."""
        optional = tuple(
            getattr(sys.modules[module_name], type_name)
            for module_name, type_name in cls.optional_members
            if module_name in sys.modules and hasattr(sys.modules[module_name], type_name)
        )
        return tuple(cls.members) + optional

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, cls.member_types())

    def __subclasscheck__(cls, subclass: type) -> bool:
        if isinstance(subclass, _TypeGroupMeta):
            return all(issubclass(member, cls) for member in subclass.member_types())
        return issubclass(subclass, cls.member_types())


class TypeGroup(metaclass=_TypeGroupMeta):
    """Base of the type groups; a subclass lists its member types in ``members``.

    Attributes
    ----------
    members : tuple of type
        The module types (or other groups) that belong to the group.
    optional_members : tuple of (str, str)
        ``(module name, type name)`` pairs of types from packages that are only looked up once
        their module has been imported (an instance of such a type cannot exist before that).
    """

    members: tuple[type, ...] = ()
    optional_members: tuple[tuple[str, str], ...] = ()

    def __new__(cls, *args, **kwargs):
        """Refuse to make an instance: a group only names layer types."""
        raise TypeError(f"{cls.__name__} is a group of layer types for isinstance checks only")


class ConvolutionStandard(TypeGroup):
    """Standard 1d, 2d and 3d convolutions."""

    members = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ConvolutionTranspose(TypeGroup):
    """Transposed 1d, 2d and 3d convolutions."""

    members = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class Convolution(TypeGroup):
    """All convolutions, standard and transposed."""

    members = (ConvolutionStandard, ConvolutionTranspose)


class Linear(TypeGroup):
    """All linear layers with weights: every convolution and ``torch.nn.Linear``."""

    members = (Convolution, nn.Linear)


class BatchNorm(TypeGroup):
    """Batch normalisation in 1d, 2d and 3d, and torchvision's ``FrozenBatchNorm2d``."""

    members = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    optional_members = (("torchvision.ops.misc", "FrozenBatchNorm2d"),)


class LayerNorm(TypeGroup):
    """Layer normalisation: ``torch.nn.LayerNorm`` and its subclasses.

    Subclasses include torchvision's channels-first ``LayerNorm2d``.
    """

    members = (nn.LayerNorm,)


class AvgPool(TypeGroup):
    """Average pooling in 1d, 2d and 3d, fixed and adaptive."""

    members = (
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AvgPool3d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d,
    )


class MaxPool(TypeGroup):
    """Max pooling in 1d, 2d and 3d, fixed and adaptive."""

    members = (
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.MaxPool3d,
        nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d,
        nn.AdaptiveMaxPool3d,
    )


class Activation(TypeGroup):
    """The element-wise activation functions of ``torch.nn``."""

    members = (
        nn.CELU,
        nn.ELU,
        nn.GELU,
        nn.Hardshrink,
        nn.Hardsigmoid,
        nn.Hardswish,
        nn.Hardtanh,
        nn.LeakyReLU,
        nn.LogSigmoid,
        nn.Mish,
        nn.PReLU,
        nn.ReLU,
        nn.ReLU6,
        nn.RReLU,
        nn.SELU,
        nn.SiLU,
        nn.Sigmoid,
        nn.Softplus,
        nn.Softshrink,
        nn.Softsign,
        nn.Tanh,
        nn.Tanhshrink,
        nn.Threshold,
    )
