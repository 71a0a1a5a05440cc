"""Canonizers: temporary, exactly reversible rewrites of a model into a form LRP rules can explain.

A canonizer changes how a model computes without changing what it computes, e.g. it merges a batch
normalisation into the linear layer before it, so that a single rule sees the whole affine map.
Every change here is made by substitution, never by writing into the model's tensors: while a
canonizer is applied, the affected modules compute with new tensors or overridden attributes; on
:meth:`Canonizer.remove` the original objects are put back, so the model's ``nn.Parameter``
objects, its ``state_dict`` and the attributes of every module are exactly as before.

Examples
--------
>>> canonizer = SequentialMergeBatchNorm()
>>> applied = canonizer.apply(model)   # batch norms now merged
>>> for instance in reversed(applied):
...     instance.remove()               # model exactly as before
"""

from __future__ import annotations

import functools
import itertools
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .torchvision_types import torchvision_imported
from .types import BatchNorm, ConvolutionTranspose, Linear

__all__ = [
    "CANONIZERS",
    "AttributeCanonizer",
    "BlockCanonizer",
    "Canonizer",
    "CompositeCanonizer",
    "MergeBatchNorm",
    "NamedMergeBatchNorm",
    "SequentialMergeBatchNorm",
    "StructuralCanonizer",
    "get_canonizers",
]

_MISSING = object()
_BN_STATE = ("running_mean", "running_var", "weight", "bias")


class Canonizer(ABC):
    """Base class of canonizers.

    A canonizer is applied to a root module with :meth:`apply`, which returns the instances that
    were registered (one per change); calling :meth:`remove` on each of them, last first, reverts
    the model exactly.
    """

    def _registered_copy(self, *args: Any) -> list[Canonizer]:
        """Register a copy of this canonizer with ``args``; returns it in a list."""
        instance = self.copy()
        instance.register(*args)
        return [instance]

    @abstractmethod
    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Apply this canonizer to ``root_module`` and its children.

        Parameters
        ----------
        root_module : torch.nn.Module
            The model to canonize.

        Returns
        -------
        list[Canonizer]
            The registered instances; call ``remove`` on each to revert. The base class applies
            nothing and returns an empty list, so subclasses may extend ``super().apply(...)``.
        """
        return []

    @abstractmethod
    def register(self, *args: Any, **kwargs: Any) -> None:
        """Apply this instance's change to the modules given."""

    @abstractmethod
    def remove(self) -> None:
        """Revert the change made by :meth:`register`."""

    def copy(self) -> Canonizer:
        """Return a fresh, unregistered canonizer with the same settings."""
        return type(self)()


def _all_or_none(applications: Iterable[Callable[[], list[Canonizer]]]) -> list[Canonizer]:
    """Run each application in turn and gather the instances it applied.

    If one fails, every instance applied so far is removed, last first, and the error is raised:
    a model is either fully canonized or left as it was.
    """
    instances: list[Canonizer] = []
    try:
        for application in applications:
            instances.extend(application())
    except BaseException:
        for instance in reversed(instances):
            instance.remove()
        raise
    return instances


class _AttributeOverride:
    """Set attributes of one module and later restore exactly what was there before.

    An attribute may live in the module's ``__dict__``, ``_parameters``, ``_buffers`` or
    ``_modules``; the override remembers which store held the name (if any) and its object.
    """

    _STORES = ("_parameters", "_buffers", "_modules")

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._saved: list[tuple[str, str | None, Any]] = []

    def _locate(self, name: str) -> tuple[str | None, Any]:
        for store in self._STORES:
            slots = self.module.__dict__[store]
            if name in slots:
                return store, slots[name]
        return None, self.module.__dict__.get(name, _MISSING)

    def set(self, name: str, value: Any, store: str | None = None) -> None:
        """Set attribute ``name`` to ``value``; ``store`` forces a place (e.g. ``_parameters``)."""
        self._saved.append((name, *self._locate(name)))
        if store is None:
            setattr(self.module, name, value)
        else:
            self.module.__dict__[store][name] = value

    def restore(self) -> None:
        """Put back every overridden attribute, last first."""
        while self._saved:
            name, store, original = self._saved.pop()
            current_store, _ = self._locate(name)
            if current_store == store and original is not _MISSING:
                self._slots(store)[name] = original  # same place: keeps the key order
                continue
            self._slots(current_store).pop(name, None)
            if original is not _MISSING:
                self._slots(store)[name] = original

    def _slots(self, store: str | None) -> dict[str, Any]:
        return self.module.__dict__ if store is None else self.module.__dict__[store]


def _pass_through(input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Forward of a batch norm whose transformation has been merged into the layer before it."""
    return input


def returns_its_input(module: nn.Module) -> bool:
    """Whether ``module`` is a batch norm merged by a canonizer, whose forward returns its input."""
    return module.__dict__.get("forward") is _pass_through


def _tensor_state(tensor: Any) -> tuple:
    """Return what identifies a tensor's value besides its object: storage, version, type."""
    if not isinstance(tensor, torch.Tensor):
        return (tensor,)
    return (
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tensor._version,
        tensor.dtype,
        tensor.device,
        tuple(tensor.shape),
    )


def _weak(value: Any) -> Callable[[], Any]:
    """Return a weak reference to a tensor; for None (a missing tensor), a callable giving None."""
    return weakref.ref(value) if isinstance(value, torch.Tensor) else lambda: value


_MERGED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Merged ``(weight, bias)`` of each layer, with the state of the tensors they were merged from.

Merging a batch norm costs a pass over the layer's weights, the same in every attribution while
neither the layer nor the batch norm changes; this cache lets a later registration reuse the
result. An entry is used only while every source tensor is the same object with the same storage
and version counter (any in-place change, ``load_state_dict`` or replacement of a parameter
counts), and it dies with its layer. Nothing of the model is touched.
"""


def _shaped_like(like: torch.Tensor, *operands: torch.Tensor | None) -> torch.Tensor:
    """Return an empty meta tensor of ``like``'s shape, of the dtype ``operands`` promote to.

    A model's skeleton lives on the "meta" device, where tensors have shapes but no values, and
    every arithmetic operation on them runs PyTorch's shape rules in Python (20 to 100 us each).
    Applying canonizers to a skeleton (to see which rules its layers get) needs only the shapes of
    the merged parameters, so they are made directly.
    """
    dtypes = [operand.dtype for operand in operands if operand is not None]
    return torch.empty(
        like.shape, dtype=functools.reduce(torch.promote_types, dtypes), device="meta"
    )


def _output_channel_scaled(weight: torch.Tensor, scale: torch.Tensor, layer: nn.Module):
    """Return ``weight`` with every output channel multiplied by its entry of ``scale``."""
    if isinstance(layer, ConvolutionTranspose):
        groups = layer.groups
        grouped = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
        factors = scale.reshape(groups, 1, -1, *(1,) * (weight.ndim - 2))
        return (grouped * factors).reshape(weight.shape)
    return weight * scale.reshape(-1, *(1,) * (weight.ndim - 1))


def _output_channels(layer: nn.Module) -> int:
    weight = layer.weight
    if isinstance(layer, ConvolutionTranspose):
        return weight.shape[1] * layer.groups
    return weight.shape[0]


class MergeBatchNorm(Canonizer):
    """Merge a batch normalisation into the linear layer(s) that feed it.

    While registered, every linear layer computes with the merged weight and bias (new tensors,
    put in place of its parameters) and the batch norm passes its input through unchanged. The
    merged layer computes ``bn(layer(x))`` of the batch norm in evaluation mode (its running
    statistics). A layer without bias gets a merged bias only while registered.

    Subclasses decide which pairs to merge by implementing :meth:`merge_pairs`; :meth:`register`
    merges one pair given directly.
    """

    def __init__(self) -> None:
        self.linears: list[nn.Module] = []
        self._merging: nn.Module | None = None
        self.batch_norm: nn.Module | None = None
        self._overrides: list[_AttributeOverride] = []

    def merge_pairs(self, root_module: nn.Module) -> Iterable[tuple[list[nn.Module], nn.Module]]:
        """Yield ``(linears, batch_norm)`` pairs of ``root_module`` to merge."""
        raise NotImplementedError(
            f"{type(self).__name__} does not know which layers to merge: use "
            "SequentialMergeBatchNorm or NamedMergeBatchNorm, or call "
            "register(linears, batch_norm)."
        )

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Merge every pair found by :meth:`merge_pairs`; returns one instance per pair."""
        pairs = list(self.merge_pairs(root_module))
        return _all_or_none(
            functools.partial(self._registered_copy, linears, batch_norm)
            for linears, batch_norm in pairs
        )

    def register(self, linears: Sequence[nn.Module], batch_norm: nn.Module) -> None:
        """Merge ``batch_norm`` into every layer of ``linears``.

        Parameters
        ----------
        linears : list of torch.nn.Module
            Linear or convolutional layers whose outputs go (each on its own) into ``batch_norm``.
        batch_norm : torch.nn.Module
            A batch norm with running statistics (``torch.nn.BatchNorm*d`` or torchvision's
            ``FrozenBatchNorm2d``).

        Raises
        ------
        TypeError
            If a module is not of a mergeable type.
        ValueError
            If the batch norm has no running statistics or the channel counts differ, or this
            instance is already registered.
        """
        if self.batch_norm is not None:
            raise ValueError(
                "This MergeBatchNorm is already registered; remove() it or use a copy()."
            )
        linears = list(linears)
        scale, shift = self._affine_of(batch_norm)
        for layer in linears:
            self._check_linear(layer, batch_norm, scale.numel())
        self._merging = batch_norm  # what _merge_into's cache checks
        try:
            for layer in linears:
                self._merge_into(layer, scale, shift)
            bypass = _AttributeOverride(batch_norm)
            self._overrides.append(bypass)
            bypass.set("forward", _pass_through)
        except BaseException:
            self._restore()
            raise
        self.linears = linears
        self.batch_norm = batch_norm

    @staticmethod
    def _affine_of(batch_norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(scale, shift)`` with ``bn(x) == x * scale + shift`` per channel (eval mode)."""
        if not isinstance(batch_norm, BatchNorm):
            raise TypeError(
                f"Cannot merge a {type(batch_norm).__name__}: only batch norms "
                "(torch.nn.BatchNorm1d/2d/3d, torchvision FrozenBatchNorm2d) can be merged."
            )
        mean = getattr(batch_norm, "running_mean", None)
        var = getattr(batch_norm, "running_var", None)
        if mean is None or var is None:
            raise ValueError(
                f"The {type(batch_norm).__name__} has no running statistics "
                "(track_running_stats=False), so it cannot be merged into a layer; "
                "use a model with running statistics or no batch-norm canonizer."
            )
        weight = getattr(batch_norm, "weight", None)
        bias = getattr(batch_norm, "bias", None)
        if mean.is_meta:  # a skeleton: shapes, no values (see _shaped_like)
            scale = _shaped_like(var, var, weight)
            return scale, _shaped_like(mean, mean, scale, bias)
        with torch.no_grad():
            mean, var = mean.detach(), var.detach()
            scale = torch.rsqrt(var + batch_norm.eps)
            if weight is not None:
                scale = scale * weight.detach()
            shift = -mean * scale
            if bias is not None:
                shift = shift + bias.detach()
        return scale, shift

    @staticmethod
    def _check_linear(layer: nn.Module, batch_norm: nn.Module, channels: int) -> None:
        if not isinstance(layer, Linear) or "weight" not in layer._parameters:
            raise TypeError(
                f"Cannot merge a batch norm into a {type(layer).__name__}: only torch.nn.Linear "
                "and convolutions with a plain weight parameter can take a batch norm."
            )
        if "bias" not in layer._parameters:
            raise TypeError(f"The {type(layer).__name__} has no bias slot to hold a merged bias.")
        if _output_channels(layer) != channels:
            raise ValueError(
                f"The {type(layer).__name__} has {_output_channels(layer)} output channels but "
                f"the {type(batch_norm).__name__} normalises {channels}: they do not belong "
                "together."
            )

    def _merge_into(self, layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
        weight, bias = layer.weight, layer.bias
        batch_norm = self._merging
        sources = (weight, bias, *(getattr(batch_norm, name, None) for name in _BN_STATE))
        state = (type(self), batch_norm.eps, tuple(_tensor_state(t) for t in sources))
        cached = _MERGED.get(layer)
        if (
            cached is not None
            and cached[0] == state
            and all(ref() is source for ref, source in zip(cached[1], sources))
        ):
            self._set_merged(layer, *cached[2])
            return
        with torch.no_grad():
            factors = scale.to(device=weight.device, dtype=weight.dtype)
            offsets = shift.to(device=weight.device, dtype=weight.dtype)
            if weight.is_meta:  # a skeleton: shapes, no values (see _shaped_like)
                merged_weight = _shaped_like(weight, weight)
                merged_bias = _shaped_like(offsets, offsets, bias)
            else:
                merged_weight = _output_channel_scaled(weight.detach(), factors, layer)
                merged_bias = offsets if bias is None else bias.detach() * factors + offsets
        merged = tuple(
            nn.Parameter(value, requires_grad=False) for value in (merged_weight, merged_bias)
        )
        refs = tuple(_weak(source) for source in sources)
        _MERGED[layer] = (state, refs, merged)
        self._set_merged(layer, *merged)

    def _set_merged(self, layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Put ``weight`` and ``bias`` in place of the layer's parameters until removal."""
        override = _AttributeOverride(layer)
        self._overrides.append(override)
        for name, value in (("weight", weight), ("bias", bias)):
            if not isinstance(value, nn.Parameter):
                value = nn.Parameter(value, requires_grad=False)
            override.set(name, value, store="_parameters")

    def _restore(self) -> None:
        while self._overrides:
            self._overrides.pop().restore()

    def remove(self) -> None:
        """Put the original parameters and the batch norm's own forward back."""
        self._restore()
        self.linears = []
        self.batch_norm = None


def _sequential_pairs(root_module: nn.Module) -> Iterable[tuple[list[nn.Module], nn.Module]]:
    """Yield ``([layer], batch_norm)`` for each batch norm right after a layer in a Sequential."""
    for module in root_module.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.children())
        for previous, current in itertools.pairwise(children):
            if isinstance(current, BatchNorm) and isinstance(previous, Linear):
                yield [previous], current


class SequentialMergeBatchNorm(MergeBatchNorm):
    """Merge every batch norm that directly follows a linear layer or convolution in a Sequential.

    Only ``torch.nn.Sequential`` containers are searched, where one child's output is the next
    one's input by construction; modules that merely register a layer and a batch norm one after
    the other are left alone, since their forward may connect them differently.
    """

    def merge_pairs(self, root_module: nn.Module) -> Iterable[tuple[list[nn.Module], nn.Module]]:
        """Yield each (layer, batch norm) neighbour pair of every Sequential in the model."""
        return _sequential_pairs(root_module)


class NamedMergeBatchNorm(MergeBatchNorm):
    """Merge batch norms into layers given by their names in the model.

    Parameters
    ----------
    name_map : list of (list[str], str)
        Each entry is ``([names of the linear layers], name of the batch norm)``, names as in
        ``model.named_modules()``.
    """

    def __init__(self, name_map: Sequence[tuple[Sequence[str], str]]) -> None:
        super().__init__()
        self.name_map = [(list(linears), batch_norm) for linears, batch_norm in name_map]

    def copy(self) -> NamedMergeBatchNorm:
        """Return a fresh, unregistered canonizer with the same name map."""
        return type(self)(self.name_map)

    def merge_pairs(self, root_module: nn.Module) -> Iterable[tuple[list[nn.Module], nn.Module]]:
        """Yield the modules named by the name map.

        Raises
        ------
        ValueError
            If a name does not exist in ``root_module``.
        """
        modules = dict(root_module.named_modules())
        wanted = [name for linears, bn in self.name_map for name in [*linears, bn]]
        missing = [name for name in wanted if name not in modules]
        if missing:
            raise ValueError(
                f"NamedMergeBatchNorm: the model has no module(s) named {', '.join(missing)}; "
                "use names as listed by model.named_modules()."
            )
        return [([modules[name] for name in linears], modules[bn]) for linears, bn in self.name_map]


class AttributeCanonizer(Canonizer):
    """Temporarily override instance attributes of modules, e.g. their ``forward``.

    Parameters
    ----------
    attribute_map : callable
        ``(name, module) -> dict or None``: the attributes to set on that module (a module value
        becomes a registered child while applied), or None to leave it alone. A function value
        meant as a method must be bound to the module (e.g. ``types.MethodType(fn, module)``).
    """

    def __init__(self, attribute_map: Callable[[str, nn.Module], dict[str, Any] | None]) -> None:
        self.attribute_map = attribute_map
        self._override: _AttributeOverride | None = None

    def copy(self) -> AttributeCanonizer:
        """Return a fresh, unregistered canonizer with the same attribute map."""
        return type(self)(self.attribute_map)

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Override the attributes of every module the attribute map selects."""

        def overrides() -> Iterator[Callable[[], list[Canonizer]]]:
            for name, module in list(root_module.named_modules()):
                attributes = self.attribute_map(name, module)
                if attributes:
                    yield functools.partial(self._registered_copy, module, attributes)

        return _all_or_none(overrides())

    @property
    def module(self) -> nn.Module | None:
        """The module whose attributes this registered instance overrides (None if unregistered)."""
        return None if self._override is None else self._override.module

    def register(self, module: nn.Module, attributes: dict[str, Any]) -> None:
        """Set ``attributes`` on ``module``, remembering what was there."""
        if self._override is not None:
            raise ValueError(
                "This AttributeCanonizer is already registered; remove() it or use a copy()."
            )
        override = _AttributeOverride(module)
        try:
            for key, value in attributes.items():
                override.set(key, value)
        except BaseException:
            override.restore()
            raise
        self._override = override

    def remove(self) -> None:
        """Restore the module's attributes exactly."""
        if self._override is not None:
            self._override.restore()
            self._override = None


BlockRewrite = Callable[[nn.Module], dict | None]
"""``module -> attributes`` to set on a block (its new forward and helper modules), or None."""


class BlockCanonizer(AttributeCanonizer):
    """Rewrite every block of the given types: a new forward and the helper modules it calls.

    Parameters
    ----------
    block_types : type or tuple of type
        The block classes (subclasses included).
    rewrite : callable
        ``module -> attributes`` to set on a block, or None to leave it alone.
    description : str, optional
        What the rewrite does, for people (e.g. in a recommendation's reasons).
    """

    def __init__(
        self, block_types: type | tuple[type, ...], rewrite: BlockRewrite, description: str = ""
    ) -> None:
        self.block_types = block_types
        self.rewrite = rewrite
        self.description = description
        super().__init__(self._attributes)

    def copy(self) -> BlockCanonizer:
        """Return a fresh, unregistered canonizer for the same blocks."""
        return BlockCanonizer(self.block_types, self.rewrite, self.description)

    def _attributes(self, name: str, module: nn.Module) -> dict | None:
        if not isinstance(module, self.block_types):
            return None
        return self.rewrite(module)


class CompositeCanonizer(Canonizer):
    """Apply several canonizers in order as one.

    Parameters
    ----------
    canonizers : list of Canonizer
        The canonizers to apply, in this order.
    """

    def __init__(self, canonizers: Sequence[Canonizer]) -> None:
        self.canonizers = list(canonizers)

    def copy(self) -> CompositeCanonizer:
        """Return a composite of copies of the canonizers."""
        return type(self)([canonizer.copy() for canonizer in self.canonizers])

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Apply each canonizer in order; returns all their registered instances, in order."""
        return _all_or_none(
            functools.partial(canonizer.apply, root_module) for canonizer in self.canonizers
        )

    def register(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: a CompositeCanonizer is used through :meth:`apply`."""
        raise TypeError(
            "A CompositeCanonizer is not registered itself; call apply(root_module) and remove "
            "the instances it returns."
        )

    def remove(self) -> None:
        """Revert nothing: :meth:`apply` returns the member instances, which revert themselves."""


def _no_canonizers() -> list[Canonizer]:
    return []


def _merge_batchnorm() -> list[Canonizer]:
    return [SequentialMergeBatchNorm()]


def _vgg() -> list[Canonizer]:
    from .torchvision import VGGCanonizer

    return [VGGCanonizer()]


def _resnet() -> list[Canonizer]:
    from .torchvision import ResNetCanonizer

    return [ResNetCanonizer()]


class StructuralCanonizer(CompositeCanonizer):
    """The ``"torchvision"`` set: batch norms merged and every block this package can rewrite.

    Its members are chosen each time it is applied. Where torchvision is imported, they are
    :class:`~.torchvision.TorchvisionCanonizer`'s. Where it is not, no model can hold one of its
    blocks, and the members are what that canonizer does to any other model: Sequential batch-norm
    merging and the rewrite of ``nn.MultiheadAttention`` (:mod:`.mha`). A model that is not
    torchvision's, such as the bundled demo, is then canonized without importing torchvision,
    which takes about as long as importing torch.
    """

    def __init__(self) -> None:
        super().__init__([])

    def copy(self) -> StructuralCanonizer:
        """Return a fresh StructuralCanonizer."""
        return type(self)()

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Apply the members that exist now (see the class docstring); returns their instances."""
        return CompositeCanonizer(self.members()).apply(root_module)

    @staticmethod
    def members() -> list[Canonizer]:
        """Return fresh instances of the canonizers this set applies now."""
        if torchvision_imported():
            from .torchvision import TorchvisionCanonizer

            return [TorchvisionCanonizer()]
        return _without_torchvision()


def _without_torchvision() -> list[Canonizer]:
    """Return what :class:`StructuralCanonizer` applies to a model holding no torchvision class."""
    from .mha import ATTENTION_REWRITE

    return [SequentialMergeBatchNorm(), BlockCanonizer(*ATTENTION_REWRITE)]


def _torchvision() -> list[Canonizer]:
    return [StructuralCanonizer()]


CANONIZERS: dict[str, Callable[[], list[Canonizer]]] = {
    "none": _no_canonizers,
    "merge_batchnorm": _merge_batchnorm,
    "vgg": _vgg,
    "resnet": _resnet,
    "torchvision": _torchvision,
}
"""Named canonizer sets: each entry builds fresh canonizer instances."""


def get_canonizers(name: str) -> list[Canonizer]:
    """Return fresh instances of the canonizer set ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`CANONIZERS`.

    Raises
    ------
    ValueError
        If ``name`` is not a known canonizer set.
    """
    try:
        factory = CANONIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown canonizer {name!r}; choose one of: {', '.join(sorted(CANONIZERS))}."
        ) from None
    return factory()
