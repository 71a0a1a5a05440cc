"""Find the operations on the relevance path that no rule redistributes.

Relevance flows as the gradient and rules replace it module by module, so an operation outside a
module with a rule (``x + y`` in a parent's ``forward``, or a parent using a child's weights
functionally) scales relevance instead of redistributing it, and the heatmap is silently wrong.
:func:`audit_composite` runs one forward pass under a :class:`~torch.overrides.TorchFunctionMode`
that follows the input-dependent tensors while module hooks tell in which module each operation
runs. It reports operations in modules without a rule, except relevance-neutral ones
(``outside_op``); modules with a rule that never ran while others used their weights
(``never_ran``); and modules without a rule that apply their own parameters to the relevance path
(``parameters_without_rule``). Since the pass does not depend on the rules,
:func:`audit_rulemap` runs it once per model, canonizer set and input shape, and works out the
findings of every rule map from what it recorded.

Examples
--------
>>> for warning in audit_rulemap(model, rules, (1, 3, 224, 224)).warnings:
...     print(warning)
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections import Counter
from collections.abc import Callable, Set
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .canonizers import get_canonizers
from .core import Composite
from .rulemap import NO_RULE, RuleMap

__all__ = ["AuditFinding", "AuditReport", "audit_composite", "audit_rulemap"]


@dataclass(frozen=True)
class AuditFinding:
    """One way in which relevance escapes the rules.

    Attributes
    ----------
    kind : str
        ``"outside_op"``, ``"never_ran"`` or ``"parameters_without_rule"``.
    module : str
        The module's name in the (canonized) model; ``""`` is the model's own forward.
    op : str
        The torch function of an ``"outside_op"`` (e.g. ``"mul"``); ``""`` otherwise.
    count : int
        How many calls or uses the pass saw.
    message : str
        One sentence for people, naming the module and the operation.
    """

    kind: str
    module: str
    op: str
    count: int
    message: str


@dataclass(frozen=True)
class AuditReport:
    """The findings of one audit, in the order they were found.

    Attributes
    ----------
    findings : tuple of AuditFinding
        Empty where every operation on the relevance path is covered by a rule.
    """

    findings: tuple[AuditFinding, ...]

    @property
    def warnings(self) -> tuple[str, ...]:
        """The findings' messages, in order."""
        return tuple(finding.message for finding in self.findings)

    @property
    def ok(self) -> bool:
        """Whether the audit found nothing."""
        return not self.findings

    def for_module(self, name: str) -> tuple[AuditFinding, ...]:
        """Return the findings whose module is exactly ``name``."""
        return tuple(finding for finding in self.findings if finding.module == name)


_NEUTRAL_OPS = frozenset(
    """view view_as reshape reshape_as permute flatten unflatten cat concat concatenate stack
    split split_with_sizes chunk unbind __getitem__ narrow select transpose t movedim moveaxis
    swapaxes swapdims squeeze
    unsqueeze expand expand_as contiguous clone detach to type type_as float double half bfloat16
    roll flip relu max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
    max_pool2d_with_indices max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d
    adaptive_max_pool3d mean adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d""".split()
)
_DROPOUTS = frozenset(
    "dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout".split()
)
_CONSTANT_OPS = frozenset(
    """zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros
    new_ones new_empty new_full""".split()
)
"""Operations whose result depends on the shape of their input only, not on its values."""
_DUNDER_OPS = {"add": "add", "sub": "sub", "mul": "mul", "truediv": "div", "matmul": "matmul"}


def _op_name(func: Callable) -> str:
    """Return ``func``'s name with in-place and operator spellings normalised.

    ``__iadd__`` and ``add_`` both become ``add``.
    """
    name = getattr(func, "__name__", repr(func))
    if name.startswith("__") and name.endswith("__"):
        core = name[2:-2]
        plain = core[1:] if core[:1] in ("i", "r") and core[1:] in _DUNDER_OPS else core
        return _DUNDER_OPS.get(plain, name)
    return name[:-1] if name.endswith("_") else name


def _zero(value: Any) -> bool:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return all(item is None or item == 0 for item in values)


def _is_neutral(name: str, args: tuple, kwargs: dict) -> bool:
    """Tell whether an op's gradient passes relevance on conservatively.

    Such ops are views and copies, ReLU, max pooling, means, zero padding, dropout in evaluation
    mode, and average pooling whose windows hold only inputs.
    """

    def argument(position: int, key: str, default: Any) -> Any:
        return kwargs.get(key, args[position] if len(args) > position else default)

    if name == "pad":
        return argument(2, "mode", "constant") == "constant" and _zero(argument(3, "value", 0))
    if name in _DROPOUTS:
        return not argument(2, "training", True)
    if name in ("avg_pool1d", "avg_pool2d", "avg_pool3d"):
        even = _zero(argument(3, "padding", 0)) or not argument(5, "count_include_pad", True)
        return even and argument(6, "divisor_override", None) is None
    return name in _NEUTRAL_OPS


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def _where(module: str) -> str:
    return f"`{module}`" if module else "the model's own forward"


_MESSAGES = {
    "outside_op": "{op} outside any module with a rule in {where} ({count} call{s}): relevance is "
    "scaled, not redistributed",
    "never_ran": "the rule of {where} never ran: its weights are used directly by {users}, so "
    "relevance there is not redistributed",
    "parameters_without_rule": "{where} has no rule but applies its own parameters {names} to the "
    "relevance path ({count} use{s}): relevance there is not redistributed",
}


def _finding(kind: str, module: str, op: str, count: int, **details: str) -> AuditFinding:
    where = _where(module)
    text = _MESSAGES[kind].format(op=op, where=where, count=count, s="s" * (count != 1), **details)
    return AuditFinding(kind, module, op, count, text)


class _TensorMarks:
    """Marks on tensors, by identity, that keep no tensor alive (tensors compare elementwise)."""

    def __init__(self) -> None:
        self._marks: dict[int, tuple[weakref.ref, Any]] = {}

    def set(self, tensor: torch.Tensor, mark: Any) -> None:
        self._marks[id(tensor)] = (weakref.ref(tensor), mark)

    def get(self, tensor: torch.Tensor) -> Any:
        ref, mark = self._marks.get(id(tensor), (None, None))
        return mark if ref is not None and ref() is tensor else None


def _owners_of(marks: _TensorMarks, tensors: list[torch.Tensor]) -> tuple[tuple[str, str], ...]:
    return tuple(dict.fromkeys(owner for t in tensors for owner in marks.get(t) or ()))


@dataclass(frozen=True)
class _Trace:
    """What one forward pass did on the relevance path, whoever has a rule.

    The findings of any set of modules with a rule follow from it (:meth:`report`), so a model is
    traced once per canonizer set and input, and a changed rule map needs no new pass.

    Attributes
    ----------
    modules : tuple of str
        The names of the (canonized) model's modules, in order.
    ran : frozenset of str
        The modules that were called on input-dependent tensors.
    calls : dict
        ``(module, op, neutral, owners) -> count`` for every call on input-dependent tensors, in
        the order first seen: the innermost running module, the op's name, whether it passes
        relevance on conservatively, and the (module, parameter) pairs its other inputs come from.
    """

    modules: tuple[str, ...]
    ran: frozenset[str]
    calls: dict[tuple[str, str, bool, tuple[tuple[str, str], ...]], int]

    def report(self, ruled: Set[str]) -> AuditReport:
        """Return the findings when exactly the modules named in ``ruled`` have a rule."""
        outside: Counter[tuple[str, str]] = Counter()
        own_uses: Counter[str] = Counter()
        own_names: dict[str, dict[str, None]] = {}
        foreign_uses: Counter[tuple[str, str, str]] = Counter()
        for (where, op, neutral, owners), count in self.calls.items():
            own = [param for module, param in owners if module == where]
            if own and where not in ruled:
                own_uses[where] += count
                own_names.setdefault(where, {}).update(dict.fromkeys(own))
            for module in dict.fromkeys(module for module, _ in owners if module != where):
                foreign_uses[module, where, op] += count
            if where not in ruled and not neutral:
                outside[where, op] += count
        findings = [
            _finding("outside_op", module, op, count) for (module, op), count in outside.items()
        ]
        for owner in (name for name in self.modules if name in ruled and name not in self.ran):
            uses = {key: count for key, count in foreign_uses.items() if key[0] == owner}
            if uses:
                users = ", ".join(f"{_where(user)} ({op})" for _, user, op in uses)
                findings.append(_finding("never_ran", owner, "", sum(uses.values()), users=users))
        for module, count in own_uses.items():
            names = ", ".join(f"`{name}`" for name in own_names[module])
            findings.append(_finding("parameters_without_rule", module, "", count, names=names))
        return AuditReport(tuple(findings))


class _Tracer(TorchFunctionMode):
    """Follow the input through one forward pass and record what runs where.

    Input-dependent tensors are *tainted*; tensors computed from parameters alone carry their
    *owners*, the (module, parameter) pairs they come from, so a weight used after a view or
    ``expand`` still counts as used.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.tainted, self.owners = _TensorMarks(), _TensorMarks()
        self.stack: list[str] = []
        self.handles: list[Any] = []
        self.ran: set[str] = set()
        self.calls: Counter[tuple[str, str, bool, tuple[tuple[str, str], ...]]] = Counter()
        self.modules = dict(model.named_modules())
        for name, module in self.modules.items():
            for param_name, param in module.named_parameters(recurse=False):
                self.owners.set(param, (*(self.owners.get(param) or ()), (name, param_name)))

    def attach(self) -> None:
        """Register hooks that keep the innermost running module on top of the stack.

        This holds also while the forward hooks of a rule run.
        """
        for name, module in self.modules.items():
            enter = functools.partial(self._enter, name)
            self.handles.append(
                module.register_forward_pre_hook(enter, prepend=True, with_kwargs=True)
            )
            self.handles.append(module.register_forward_hook(self._leave, always_call=True))

    def detach(self) -> None:
        """Remove the hooks of :meth:`attach`."""
        while self.handles:
            self.handles.pop().remove()

    def _enter(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.stack.append(name)
        if any(self.tainted.get(tensor) for tensor in _tensors((args, kwargs))):
            self.ran.add(name)

    def _leave(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = _op_name(func)
        if name in _CONSTANT_OPS:
            return result
        inputs, outputs = _tensors((args, kwargs)), _tensors(result)
        tainted = any(self.tainted.get(tensor) for tensor in inputs)
        if tainted and outputs and name != "__get__":
            where = self.stack[-1] if self.stack else ""
            owners = _owners_of(self.owners, inputs)
            self.calls[where, name, _is_neutral(name, args, kwargs), owners] += 1
        if name == "__setitem__":
            outputs.append(args[0])  # written into
        if tainted:
            for tensor in outputs:
                self.tainted.set(tensor, True)
        elif owners := _owners_of(self.owners, inputs):
            for tensor in outputs:
                self.owners.set(tensor, owners)
        return result

    def trace(self) -> _Trace:
        """Return what the pass did."""
        return _Trace(tuple(self.modules), frozenset(self.ran), dict(self.calls))


def _restore_training(flags: list[tuple[nn.Module, bool]]) -> None:
    for module, training in flags:
        module.training = training


def _traced(
    model: nn.Module, composite: Composite, inputs: torch.Tensor
) -> tuple[_Trace, set[str]]:
    """Trace one pass with ``composite`` registered; return the trace and the modules with a rule.

    The model keeps its parameters, values, hooks and training flags, also when the pass raises.
    """
    source = inputs.detach().clone().requires_grad_(inputs.is_floating_point())
    with ExitStack() as stack:
        flags = [(module, module.training) for module in model.modules()]
        stack.callback(_restore_training, flags)
        composite.register(model)
        stack.callback(composite.remove)
        model.eval()  # after registering, so that modules canonizers add are in eval mode too
        rule_hooks = {id(hook) for hook in composite.hooks}
        ruled = {
            name
            for name, module in model.named_modules()
            if any(
                id(getattr(hook, "__self__", None)) in rule_hooks
                for hook in module._forward_pre_hooks.values()
            )
        }
        tracer = _Tracer(model)
        stack.callback(tracer.detach)
        tracer.attach()
        tracer.tainted.set(source, True)
        with torch.enable_grad(), tracer:
            model(source)
    return tracer.trace(), ruled


def audit_composite(model: nn.Module, composite: Composite, inputs: torch.Tensor) -> AuditReport:
    """Find the operations on the relevance path that ``composite``'s rules do not cover.

    The composite is registered on ``model``, one forward pass runs on a copy of ``inputs`` (in
    evaluation mode, with gradients enabled) and everything is removed again: the model keeps its
    parameters, values, hooks and training flags, also when the forward pass raises.

    Parameters
    ----------
    model : torch.nn.Module
        The model to audit.
    composite : Composite
        The rules (and canonizers) to audit; it must not be registered elsewhere.
    inputs : torch.Tensor
        An input batch the model accepts (values matter little; shapes do).

    Returns
    -------
    AuditReport
        The findings; ``ok`` where there are none.
    """
    trace, ruled = _traced(model, composite, inputs)
    return trace.report(ruled)


_TRACES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Trace]] = weakref.WeakKeyDictionary()


def audit_rulemap(model: nn.Module, rulemap: RuleMap, input_shape: tuple[int, ...]) -> AuditReport:
    """Audit a rule map on a seeded random input of ``input_shape``.

    The input (normal, ``torch.Generator`` seed 0) takes the dtype and device of the model's
    first floating parameter or buffer (float32 on the CPU if there is none). The forward pass
    depends on the canonizer set, not on the rules: it runs once per model object and (canonizer,
    shape, dtype, device), and the findings of each rule map follow from it. They equal those of
    :func:`audit_composite` with ``rulemap.to_composite()``.

    Parameters
    ----------
    model : torch.nn.Module
        The model to audit.
    rulemap : RuleMap
        The rules; a layer has one unless its rule is ``"none"``.
    input_shape : tuple of int
        The shape of an input batch, e.g. ``(1, 3, 224, 224)``.

    Returns
    -------
    AuditReport
        See :func:`audit_composite`.
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    reference = next((t for t in tensors if t.is_floating_point()), None)
    dtype = torch.float32 if reference is None else reference.dtype
    device = torch.device("cpu") if reference is None else reference.device
    key = (rulemap.canonizer, tuple(input_shape), dtype, device)
    traces = _TRACES.setdefault(model, {})
    if key not in traces:
        generator = torch.Generator(device=device).manual_seed(0)
        inputs = torch.randn(key[1], generator=generator, dtype=dtype, device=device)
        canonized = Composite(canonizers=get_canonizers(rulemap.canonizer))
        traces[key] = _traced(model, canonized, inputs)[0]
    trace = traces[key]
    ruled = {name for name in trace.modules if name in rulemap and rulemap[name].rule != NO_RULE}
    return trace.report(ruled)
