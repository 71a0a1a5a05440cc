"""The core of the LRP engine: the reference API in one namespace, and composites.

Every name here follows the reference API (``shared/spec/core-api-reference.txt``), so code written
for it runs unchanged. Where the reference leaves room, this module chooses the safer behaviour:

* parameters are modified by substitution, never in place, so a model's ``nn.Parameter`` objects
  keep their identity and bit-identical values, also when an error interrupts the computation;
* every forward call of a hooked module keeps its own record, so a module used twice in one
  forward pass gets the relevance of each call;
* every tensor argument of a module gets relevance, and non-tensor arguments pass untouched.

The building blocks live in :mod:`.primitives` (stabilisation, expansion, parameter
modification) and :mod:`.hooks` (hooks and handles); this module holds composites and
``collect_leaves`` and gathers every name of the reference.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from .hooks import BasicHook, Hook, Identity, RemovableHandle, RemovableHandleList
from .primitives import (
    ParamMod,
    Stabilizer,
    expand,
    stabilize,
    substituted_parameters,
    uncompress,
    zero_wrap,
)

__all__ = [
    "BasicHook",
    "Composite",
    "CompositeContext",
    "Hook",
    "Identity",
    "ParamMod",
    "RemovableHandle",
    "RemovableHandleList",
    "Stabilizer",
    "collect_leaves",
    "expand",
    "stabilize",
    "substituted_parameters",
    "uncompress",
    "zero_wrap",
]


def collect_leaves(module: nn.Module) -> Iterator[nn.Module]:
    """Collect all leaf modules of a module, depth-first in registration order.

    Parameters
    ----------
    module : torch.nn.Module
        The module whose leaves are collected.

    Yields
    ------
    leaf : torch.nn.Module
        A module without children; ``module`` itself if it has none.
    """
    children = list(module.children())
    if not children:
        yield module
        return
    for child in children:
        yield from collect_leaves(child)


class CompositeContext:
    """Register a composite to a module on entering and remove it on exiting.

    Parameters
    ----------
    module : torch.nn.Module
        The module to which the composite is registered.
    composite : Composite
        The composite to register.
    """

    def __init__(self, module: nn.Module, composite: Composite) -> None:
        self.module = module
        self.composite = composite

    def __enter__(self) -> nn.Module:
        self.composite.register(self.module)
        return self.module

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        self.composite.remove()
        return False


class Composite:
    """Apply canonizers and register hooks to the modules of a model.

    One instance may be registered to a single module at a time.

    Parameters
    ----------
    module_map : callable, optional
        ``(ctx: dict, name: str, module) -> Hook or None``, asked for every named module in
        pre-order (the root included) with one ``ctx`` dict per registration; a copy of each
        returned hook is registered to that module.
    canonizers : list of Canonizer, optional
        Canonizers applied, in order, before the hooks are registered.
    """

    def __init__(
        self,
        module_map: Callable[[dict, str, nn.Module], Hook | None] | None = None,
        canonizers: Sequence[Any] | None = None,
    ) -> None:
        self.module_map = module_map if module_map is not None else self._no_hook
        self.canonizers = list(canonizers or [])
        self.handles = RemovableHandleList()
        self.hooks: list[Hook] = []
        self._applied_canonizers: list[Any] = []

    @staticmethod
    def _no_hook(ctx: dict, name: str, module: nn.Module) -> None:
        return None

    def register(self, module: nn.Module) -> None:
        """Apply the canonizers and register the hooks to ``module`` and its children.

        Whatever this composite registered before is removed first. Other hooks on the modules
        stay.
        """
        self.remove()
        try:
            for canonizer in self.canonizers:
                self._applied_canonizers.extend(canonizer.apply(module))
            ctx: dict = {}
            for name, child in module.named_modules():
                template = self.module_map(ctx, name, child)
                if template is not None:
                    hook = template.copy()
                    self.hooks.append(hook)
                    self.handles.append(hook.register(child))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove every hook, then revert the canonizers in reverse order."""
        self.handles.remove()
        self.hooks.clear()
        for canonizer in reversed(self._applied_canonizers):
            canonizer.remove()
        self._applied_canonizers.clear()

    @property
    def hook_refs(self) -> weakref.WeakSet:
        """Weak references to the hooks registered now (zennit's name), e.g. to switch them off."""
        return weakref.WeakSet(self.hooks)

    def context(self, module: nn.Module) -> CompositeContext:
        """Return a context that registers this composite to ``module`` and removes it on exit."""
        return CompositeContext(module, self)

    @contextmanager
    def inactive(self) -> Iterator[Composite]:
        """Switch the hooks off, so that the plain gradient flows.

        Use it e.g. to differentiate an attribution.
        """
        states = [(hook, hook.active) for hook in self.hooks]
        for hook, _ in states:
            hook.active = False
        try:
            yield self
        finally:
            registered = {id(hook) for hook in self.hooks}
            for hook, state in states:
                if id(hook) in registered:
                    hook.active = state
