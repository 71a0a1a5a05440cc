"""Hooks: how a module's forward calls are recorded and its backward pass is replaced by a rule.

All public names here are part of the reference API and are imported from
:mod:`lrp_desktop_core.core`. Every forward call of a hooked module keeps its own record, so a
module used twice in one forward pass gets the relevance of each call; every tensor argument gets
relevance, and non-tensor arguments pass untouched.
"""

from __future__ import annotations

import functools
import inspect
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .primitives import ParamMod, Stabilizer, plus, substituted_parameters

__all__ = [
    "BasicHook",
    "Hook",
    "Identity",
    "RemovableHandle",
    "RemovableHandleList",
    "records_released_after_use",
]


class Identity(torch.autograd.Function):
    """Identity to add a grad_fn to a tensor, so a backward hook can be applied.

    The outputs are fresh tensors (copies), so an in-place operation on them, such as a following
    ``ReLU(inplace=True)``, is allowed.
    """

    @staticmethod
    def forward(ctx, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Forward identity: return (copies of) the inputs."""
        return tuple(input.clone() for input in inputs)

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backward identity: return the output gradients unmodified."""
        return grad_outputs


class _InputIdentity(torch.autograd.Function):
    """Identity on a hooked module's inputs: aliases instead of copies.

    Only the hooked module reads these outputs, and an in-place module is fed a copy of them (see
    :meth:`Hook.pre_forward`), so nothing writes to them and copying would only cost time.
    """

    @staticmethod
    def forward(ctx, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(input.view_as(input) for input in inputs)

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return grad_outputs


def _through_identity(
    tensors: Sequence[torch.Tensor], identity: type[torch.autograd.Function] = Identity
) -> tuple[torch.Tensor, ...]:
    outputs = identity.apply(*tensors)
    return outputs if isinstance(outputs, tuple) else (outputs,)


class _CallRecord(dict):
    """What a hook keeps of one forward call of its module (a dict that weakrefs can refer to)."""


def _storage_of(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


_claimed_storages: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
"""The storages of tensors that a hook reads in its backward pass, each with a tensor on it.

An in-place module computes on its input without a copy only where no record claims that
input's storage (see :meth:`Hook._may_feed_in_place`). An entry lasts as long as the tensor
named (the record's own reference to it), so a freed storage is never claimed.
"""


def claim(tensor: torch.Tensor) -> None:
    """Mark the storage of ``tensor`` (which a record keeps) as read in the backward pass."""
    _claimed_storages[_storage_of(tensor)] = tensor


def keep_output(record: dict[str, Any], output: Any) -> None:
    """Store a call's output in its record for the backward pass, claiming its storage."""
    record["output"] = output
    if isinstance(output, torch.Tensor):
        claim(output)


def _held_storages(record: dict[str, Any], inputs: Sequence[torch.Tensor]) -> set[int]:
    """Return the storages of the tensors that a call's inputs, record and module refer to.

    The inputs do not count where the module was fed them to compute on in place: its output
    is then on their storage by design, and nothing reads their former values.
    """
    module = record["module"]
    fed_in_place = record.get("fed_in_place", False)
    held = [*module._parameters.values(), *module._buffers.values(), *vars(module).values()]
    for key, value in record.items():
        if not (fed_in_place and key == "input"):
            held.extend(value if isinstance(value, tuple) else (value,))
    if not fed_in_place:
        held.extend(inputs)
    return {_storage_of(value) for value in held if isinstance(value, torch.Tensor)}


def _is_private_result(tensor: torch.Tensor, foreign_storages: set[int]) -> bool:
    """Whether a module's output is a fresh result that nothing else refers to or records.

    Such an output (no gradient history, no view, no storage shared with the module's inputs or
    state) can be joined to the graph as it is; any other output is copied first.
    """
    return (
        not tensor.requires_grad
        and tensor._base is None
        and _storage_of(tensor) not in foreign_storages
    )


class _Rejoin(torch.autograd.Function):
    """Join outputs computed from detached inputs back to those inputs in the graph.

    The arguments are the hook, the call's record, the outputs' count, the positions of the
    outputs that have a history, then the outputs (with no gradient history: :func:`_join`), the
    hooked inputs, and those outputs' histories.

    A fresh output is joined as it is (marked as modified in place), also one that an in-place
    module computed on the storage of its inputs where the hook let it (see
    :meth:`Hook._may_feed_in_place`); others are copied. Backward sends zeros to the inputs, to
    be replaced by the hook's relevance, or, while the hook is inactive, the plain gradient
    recomputed through the module; the output's gradient goes on into each history (the
    module's parameters, where they require a gradient).
    """

    @staticmethod
    def forward(ctx, hook, record, count, with_history, *tensors):
        ctx.hook, ctx.record, ctx.count, ctx.with_history = hook, record, count, with_history
        inputs = tensors[count : count + len(record["positions"])]
        ctx.input_shapes = [(t.shape, t.dtype, t.device) for t in inputs]
        held = _held_storages(record, inputs)
        outputs, adopted = [], []
        for tensor in tensors[:count]:
            if _is_private_result(tensor, held):
                adopted.append(tensor)
                outputs.append(tensor)
            else:
                outputs.append(tensor.clone())
        ctx.mark_dirty(*adopted)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        if ctx.hook.active:
            # placeholders, replaced by the hook's relevance: expanded scalars cost no memory
            input_grads = tuple(
                torch.zeros((), dtype=dtype, device=device).expand(shape)
                for shape, dtype, device in ctx.input_shapes
            )
        else:
            input_grads = ctx.hook.plain_input_gradients(ctx.record, grad_outputs)
        histories = (grad_outputs[index] for index in ctx.with_history)
        return (None, None, None, None, *grad_outputs, *input_grads, *histories)


def _join(hook: Hook, record: dict[str, Any], outputs: list[torch.Tensor]) -> tuple:
    """Join a call's ``outputs``, computed from detached inputs, to its hooked inputs.

    An output with a gradient history (through the module's parameters) joins as a detached
    alias, with the history as a further argument, so that it needs no copy.
    """
    inputs = [record["input"][index] for index in record["positions"]]
    with_history = [
        index
        for index, tensor in enumerate(outputs)
        if tensor.requires_grad and tensor._base is None
    ]
    joined = [
        tensor.detach() if index in with_history else tensor for index, tensor in enumerate(outputs)
    ]
    histories = [outputs[index] for index in with_history]
    wrapped = _Rejoin.apply(hook, record, len(outputs), with_history, *joined, *inputs, *histories)
    return wrapped if isinstance(wrapped, tuple) else (wrapped,)


def _note_output_version(record: dict[str, Any]) -> None:
    """Note the version of the stored output, so that a later in-place change can be told."""
    output = record.get("output")
    if isinstance(output, torch.Tensor):
        record["output_version"] = output._version


def intact_output(record: dict[str, Any]) -> torch.Tensor | None:
    """Return the stored output of a call, or None if it is missing or was changed in place since.

    A module after the hooked one may compute in place on the output (e.g. an unhooked
    ``ReLU(inplace=True)``); a fast path that reads the output then gives way to the general
    path, which evaluates the layer again.
    """
    output = record.get("output")
    if not isinstance(output, torch.Tensor) or output._version != record.get("output_version"):
        return None
    return output


def _gradient_kept_by_output(module: nn.Module) -> bool:
    """Whether ``module``'s gradient at its output ``f(x)`` equals that at its input ``x``.

    True for clamps and sign-keeping slopes: ReLU (``f(x) > 0`` where ``x > 0``), ReLU6 and
    hardtanh (``f(x)`` is strictly inside the bounds where ``x`` is), LeakyReLU with a
    nonnegative slope (``f(x)`` has the sign of ``x``).
    """
    if type(module) in (nn.ReLU, nn.ReLU6, nn.Hardtanh):
        return True
    return type(module) is nn.LeakyReLU and module.negative_slope >= 0


_NO_OUTPUT: Any = object()
"""Marks a :meth:`Hook.post_forward` called zennit 0.5's way, ``(module, input, output)``."""


@functools.cache
def _positional_count(function: Callable) -> int:
    """Return how many positional parameters ``function`` takes (``self`` included)."""
    parameters = inspect.signature(function).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_POSITIONAL for parameter in parameters):
        return 1_000
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(parameter.kind in positional for parameter in parameters)


def _takes_kwargs(hook: Hook, name: str, with_kwargs: int) -> bool:
    """Whether the hook's method ``name`` takes the keyword arguments of the call.

    Subclasses written for zennit 0.5 override ``pre_forward(module, input)``,
    ``post_forward(module, input, output)`` and ``forward(module, input, output)``, without the
    ``kwargs`` the reference API passes; ``with_kwargs`` is the count of positional parameters
    (``self`` included) of the reference's form.
    """
    return _positional_count(getattr(type(hook), name)) >= with_kwargs


class _HookMeta(type):
    """Record each hook's constructor arguments so that ``copy()`` works for every subclass."""

    def __call__(cls, *args, **kwargs):
        instance = super().__call__(*args, **kwargs)
        instance._init_arguments = (args, kwargs)
        return instance


_RELEASED = "released"
"""The key that marks a record whose tensors were released after its backward pass.

Its value is the name of the module's class, for the error a second pass raises.
"""


def _refuse_if_released(record: dict[str, Any]) -> None:
    """Raise if ``record``'s tensors were released (a second pass through a released graph)."""
    if _RELEASED in record:
        raise RuntimeError(
            f"The stored tensors of this call of {record[_RELEASED]} were released after the "
            "first backward pass through its graph. To run several backward passes through one "
            "forward pass, keep the graph (retain_graph=True)."
        )


@contextmanager
def records_released_after_use(hooks: Iterable[Hook]) -> Iterator[None]:
    """Let ``hooks`` drop each call's stored tensors once they have computed its relevance.

    For a backward pass that does not keep its graph, as a plain gradient frees each node's
    saved tensors once it has run: a layer's inputs and output are then freed as soon as the
    pass has gone below it, not when the pass ends. A second pass through the same graph
    raises instead of reading released tensors.

    Parameters
    ----------
    hooks : iterable of Hook
        The hooks whose records the backward pass inside the block may release.
    """
    hooks = list(hooks)
    for hook in hooks:
        hook._release_records = True
    try:
        yield
    finally:
        for hook in hooks:
            hook._release_records = False


class Hook(metaclass=_HookMeta):
    """Base class for hooks to be used to compute layer-wise attributions.

    A hook sees every forward call of its module. For each call it routes the tensor arguments and
    the tensor outputs through :class:`Identity`, whose gradient nodes call :meth:`pre_backward`
    with the gradient arriving at the outputs and :meth:`backward` with the gradient arriving at
    the inputs. Each call keeps its own record (``stored_tensors`` while the call's methods run),
    so a module used several times in one forward pass is handled call by call.

    Attributes
    ----------
    active : bool
        While False (see :meth:`Composite.inactive`), the plain gradient flows.
    stored_tensors : dict
        The record of the call whose forward or backward is being handled.
    uses_module_backward : bool
        Class attribute. True (the default) lets the gradient flow through the module's own
        backward to the inputs, where :meth:`backward` receives it as ``grad_input``. A hook whose
        :meth:`backward` never reads ``grad_input`` sets it to False: the module then computes on
        detached inputs and its own backward is skipped, which saves the time of a plain backward
        pass through the layer.
    reads_input : bool
        Class attribute. False where :meth:`backward` reads no stored input value (at most its
        shape): an in-place activation whose plain gradient its own output determines may then
        compute on its input without a copy (see :meth:`_may_feed_in_place`).
    """

    uses_module_backward = True
    reads_input = True

    def __init__(self) -> None:
        self.active = True
        self.stored_tensors: dict[str, Any] = {}
        self._open_calls: list[dict[str, Any] | None] = []
        self._release_records = False

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict | None = None):
        """Apply an Identity to the tensor inputs so that a backward hook sees their gradient.

        Called as ``pre_forward(module, input)`` (zennit 0.5's form, e.g. by a subclass's
        override), it takes and returns the inputs alone, as zennit does.

        Returns
        -------
        tuple or None
            The new ``(args, kwargs)``; None (nothing changes) when no tensor input requires a
            gradient or gradients are disabled.
        """
        if kwargs is None:
            given = args if isinstance(args, tuple) else (args,)
            changed = self._pre_forward(module, given, {})
            new_args = given if changed is None else changed[0]
            return new_args[0] if len(new_args) == 1 else new_args
        return self._pre_forward(module, args, kwargs)

    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict):
        positions = [
            index
            for index, arg in enumerate(args)
            if isinstance(arg, torch.Tensor) and arg.requires_grad
        ]
        if not positions or not torch.is_grad_enabled():
            self._open_calls.append(None)
            return None
        originals = [args[index] for index in positions]
        in_place = getattr(module, "inplace", False) is True
        fed_in_place = in_place and self._may_feed_in_place(module, originals)
        connected, fed = list(args), list(args)
        if fed_in_place:
            # The module computes on the inputs themselves; its output joins them in the graph
            # directly (post_forward), with no identity in between.
            for index, original in zip(positions, originals):
                fed[index] = original.detach()
        else:
            wrapped = _through_identity(originals, _InputIdentity)
            for index, tensor in zip(positions, wrapped):
                connected[index] = tensor
                fed_tensor = tensor if self.uses_module_backward else tensor.detach()
                # an in-place module would overwrite the stored input: it gets a copy
                fed[index] = fed_tensor.clone() if in_place else fed_tensor
                if self.reads_input:
                    claim(tensor)
        record = _CallRecord(
            positions=positions, input=tuple(connected), kwargs=kwargs, module=module
        )
        self._open_calls.append(record)
        if fed_in_place:
            record["fed_in_place"] = True
            return tuple(fed), kwargs
        # The input node only refers to the record weakly: the record holds the node's outputs,
        # and a strong reference would make a cycle through the graph that is never freed. The
        # output side, downstream, keeps the record alive as long as the graph lives.
        wrapped[0].grad_fn.register_hook(
            functools.partial(self._input_hook, module, weakref.ref(record))
        )
        return tuple(fed), kwargs

    def _may_feed_in_place(self, module: nn.Module, inputs: Sequence[torch.Tensor]) -> bool:
        """Whether an in-place ``module`` may compute on ``inputs`` themselves, without a copy.

        It may where its gradient flows through the hook's own backward alone, the hook reads
        no stored input value, nothing else claims the inputs' storage, and the module's plain
        gradient is the same at its output as at its input (:func:`_gradient_kept_by_output`),
        so that the plain gradient (:meth:`plain_input_gradients`, while the hook is inactive)
        is exact on the overwritten input. The inputs must be results of
        the graph, not leaves (a caller's tensor) or views (of a tensor the module does not
        see whole).
        """
        return (
            not self.uses_module_backward
            and not self.reads_input
            and _gradient_kept_by_output(module)
            and all(tensor.grad_fn is not None and tensor._base is None for tensor in inputs)
            and not any(_storage_of(tensor) in _claimed_storages for tensor in inputs)
        )

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output=_NO_OUTPUT):
        """Route the tensor outputs through an Identity and call :meth:`forward`.

        May also be called as ``post_forward(module, input, output)``, zennit 0.5's form.

        Returns
        -------
        torch.Tensor or tuple or None
            The new output, or None if this call is not hooked.
        """
        if output is _NO_OUTPUT:
            kwargs, output = {}, kwargs
        record = self._open_calls.pop() if self._open_calls else None
        if record is None:
            return None
        outputs = output if isinstance(output, tuple) else (output,)
        out_positions = [
            index
            for index, value in enumerate(outputs)
            if isinstance(value, torch.Tensor)
            and (
                value.requires_grad or (not self.uses_module_backward and value.is_floating_point())
            )
        ]
        if not out_positions:
            return None
        self.stored_tensors = record
        if _takes_kwargs(self, "forward", 5):
            self.forward(module, record["input"], record["kwargs"], output)
        else:  # a subclass's forward(module, input, output), as zennit 0.5 calls it
            self.forward(module, record["input"], output)
        self.stored_tensors = {}
        hooked = [outputs[index] for index in out_positions]
        if (
            self.uses_module_backward
            and len(hooked) == 1
            and hooked[0].grad_fn is not None
            and not any(hooked[0] is value for value in record["input"])
        ):
            # A pre-hook on the node that made the output sees the gradient arriving there and
            # may replace it, without an Identity and its copy of the output. Node pre-hooks run
            # after every tensor hook on the output, also those registered later (a user's mask
            # of the output's gradient, as in concept relevance), so they see what those leave.
            # The record keeps a detached alias, so that it does not refer to the node that holds
            # the hook (a cycle through the graph that would never be freed).
            if record.get("output") is hooked[0]:
                record["output"] = hooked[0].detach()
            _note_output_version(record)
            hooked[0].grad_fn.register_prehook(
                functools.partial(self._output_node_hook, module, record, hooked[0].output_nr)
            )
            return None
        if self.uses_module_backward:
            wrapped = _through_identity(hooked)
        else:
            wrapped = _join(self, record, hooked)
        _note_output_version(record)
        if record.get("fed_in_place"):
            counts = (len(hooked), len(record["positions"]))
            hook = functools.partial(self._in_place_hook, module, record, counts)
        else:
            hook = functools.partial(self._output_hook, module, record)
        wrapped[0].grad_fn.register_hook(hook)
        new_outputs = list(outputs)
        for index, tensor in zip(out_positions, wrapped):
            new_outputs[index] = tensor
        return tuple(new_outputs) if isinstance(output, tuple) else new_outputs[0]

    def plain_input_gradients(self, record: dict[str, Any], grad_outputs) -> tuple:
        """Return the plain gradient of a call's outputs with respect to its hooked inputs.

        Used where the module's own backward was skipped (``uses_module_backward = False``) but
        the plain gradient is asked for, i.e. while the hook is inactive.
        """
        _refuse_if_released(record)
        module, args = record["module"], list(record["input"])
        positions = record["positions"]
        in_place = getattr(module, "inplace", False) is True
        with torch.enable_grad():
            inputs = [args[index].detach().requires_grad_() for index in positions]
            for index, tensor in zip(positions, inputs):
                args[index] = tensor.clone() if in_place else tensor
            output = module.forward(*args, **record["kwargs"])
            outputs = output if isinstance(output, tuple) else (output,)
            hooked = [value for value in outputs if isinstance(value, torch.Tensor)]
            pairs = [(out, grad) for out, grad in zip(hooked, grad_outputs) if grad is not None]
            return torch.autograd.grad(
                [out for out, _ in pairs],
                inputs,
                [grad for _, grad in pairs],
                allow_unused=True,
                create_graph=torch.is_grad_enabled(),
            )

    def _output_hook(self, module, record, grad_inputs, grad_outputs):
        if not self.active:
            return None
        _refuse_if_released(record)
        if not torch.is_grad_enabled():
            # a gradient seed that is part of the graph (e.g. ``output * mask``) would otherwise
            # tie the record to the graph in a cycle that is never freed
            grad_outputs = tuple(None if g is None else g.detach() for g in grad_outputs)
        record["grad_output"] = grad_outputs
        self.stored_tensors = record
        try:
            replacement = self.pre_backward(module, grad_inputs, grad_outputs)
        finally:
            self.stored_tensors = {}
        return replacement if self.uses_module_backward else None

    def _output_node_hook(self, module, record, position: int, grad_outputs: tuple):
        grad = grad_outputs[position]
        if grad is None:
            return None
        replacement = self._output_hook(module, record, (grad,), (grad,))
        if replacement is None:
            return None
        return (*grad_outputs[:position], replacement[0], *grad_outputs[position + 1 :])

    def _input_hook(self, module, record_ref, grad_inputs, grad_outputs):
        return self._input_relevance(module, record_ref(), grad_outputs)

    def _in_place_hook(self, module, record, counts: tuple[int, int], grad_inputs, grad_outputs):
        """Run the output and input hooks in one, for a module fed its inputs to compute in place.

        ``counts`` are the join's outputs and inputs: its ``grad_inputs`` are those of its
        outputs, its inputs and its outputs' histories (see :class:`_Rejoin`).
        """
        count, end = counts[0], sum(counts)
        self._output_hook(module, record, grad_inputs, grad_outputs)
        relevance = self._input_relevance(module, record, grad_inputs[count:end])
        if relevance is None:
            return None
        return (*grad_inputs[:count], *relevance, *grad_inputs[end:])

    def _input_relevance(self, module, record, grad_at_inputs) -> tuple | None:
        """Return the relevance of a call's inputs, or None to keep the gradient arriving there."""
        if not self.active or record is None or "grad_output" not in record:
            return None
        self.stored_tensors = record
        try:
            relevance = self.backward(module, grad_at_inputs, record["grad_output"])
        finally:
            self.stored_tensors = {}
            if self._release_records:
                record.clear()
                record[_RELEASED] = type(module).__name__
                self._release_derived()
        return tuple(relevance) if relevance is not None else None

    def _release_derived(self) -> None:
        """Drop what was derived from the module for a backward pass (see ``BasicHook``)."""

    def pre_backward(self, module: nn.Module, grad_input, grad_output):
        """Handle the gradient arriving at the module's outputs.

        The gradient is stored in ``stored_tensors['grad_output']`` before this is called.
        Returning a tuple of tensors (one per hooked output) replaces the gradient that flows into
        the module's own backward; None (the default) leaves it. Where the module's backward is
        skipped (``uses_module_backward = False``) the return value is not used.
        """
        return

    def forward(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        """Handle the forward pass, once per call (nothing by default)."""

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Handle the backward pass: return the relevance of the hooked inputs.

        Parameters
        ----------
        module : torch.nn.Module
            The module to which this hook is attached.
        grad_input : tuple of torch.Tensor
            The gradient arriving at each hooked tensor input.
        grad_output : tuple of torch.Tensor
            The gradient that arrived at each hooked output.

        Returns
        -------
        tuple of torch.Tensor or None
            New gradients for the hooked inputs, or None to keep them (the default).
        """
        return

    def copy(self) -> Hook:
        """Return an independent hook built with the same constructor arguments."""
        args, kwargs = getattr(self, "_init_arguments", ((), {}))
        return type(self)(*args, **kwargs)

    def _reset(self) -> None:
        """Give a copy its own, empty per-registration state."""
        Hook.__init__(self)

    def remove(self) -> None:
        """Switch the hook off for good and drop every reference to stored tensors.

        Gradient nodes of a graph built while the hook was registered keep calling it; once
        removed, it lets the plain gradient through there.
        """
        self.active = False
        self.stored_tensors = {}
        self._open_calls.clear()

    def register(self, module: nn.Module) -> RemovableHandleList:
        """Register this hook's forward hooks to ``module``.

        Returns
        -------
        RemovableHandleList
            Handles that remove the hooks and the stored tensors.
        """
        pre_kwargs = _takes_kwargs(self, "pre_forward", 4)
        post_kwargs = _takes_kwargs(self, "post_forward", 5)
        if not pre_kwargs:
            pre_handle = module.register_forward_pre_hook(self.pre_forward)
        else:
            pre_handle = module.register_forward_pre_hook(self.pre_forward, with_kwargs=True)
        post_handle = module.register_forward_hook(self.post_forward, with_kwargs=post_kwargs)
        return RemovableHandleList([RemovableHandle(self), pre_handle, post_handle])


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _unmodified(tensor: torch.Tensor, name: str) -> torch.Tensor:
    return tensor


def _differentiable(tensor: torch.Tensor) -> torch.Tensor:
    """Make a modified input that does not depend on the input (e.g. a bound) differentiable."""
    return tensor if tensor.requires_grad else tensor.detach().requires_grad_()


def _sum_of_products(inputs: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    return functools.reduce(plus, (x * g for x, g in zip(inputs, gradients)))


class BasicHook(Hook):
    """A hook computing the layer-wise relevance of its module from modified forward passes.

    For every branch ``k`` (one per input modifier), the module is evaluated on the modified input
    ``x_k = input_modifiers[k](x)`` with parameters modified by ``param_modifiers[k]`` and output
    modified by ``output_modifiers[k]``, giving ``z_k``. The gradient mapper turns the relevance
    arriving at the output into one output gradient per branch, the gradient of each ``z_k`` with
    respect to ``x_k`` is taken, and the reducer combines inputs and gradients into the relevance of
    the input. Modules with several tensor inputs get the relevance of each of them.

    Parameters
    ----------
    input_modifiers : list[callable], optional
        ``(input) -> tensor``, one per branch; default one identity branch.
    param_modifiers : list[ParamMod or callable], optional
        ``ParamMod`` or ``(tensor, name) -> tensor``, one per branch; default unmodified.
    output_modifiers : list[callable], optional
        ``(output) -> tensor``, one per branch; default the identity.
    gradient_mapper : callable, optional
        ``(out_grad, outputs) -> list`` of one gradient per branch; default
        ``out_grad / stabilizer(output)`` for each output.
    reducer : callable, optional
        ``(inputs, gradients) -> tensor``; default ``sum(input * gradient)``.
    stabilizer : callable or float, optional
        The stabilizer of the default gradient mapper (see :meth:`Stabilizer.ensure`).
    """

    uses_module_backward = False
    reads_output = False
    """Class attribute: whether the backward pass reads the call's stored output."""

    def __init__(
        self,
        input_modifiers: Sequence[Callable] | None = None,
        param_modifiers: Sequence[ParamMod | Callable] | None = None,
        output_modifiers: Sequence[Callable] | None = None,
        gradient_mapper: Callable | None = None,
        reducer: Callable | None = None,
        stabilizer: float | Callable = 1e-6,
    ) -> None:
        super().__init__()
        given = [mods for mods in (input_modifiers, param_modifiers, output_modifiers) if mods]
        branches = len(given[0]) if given else 1
        if any(len(mods) != branches for mods in given):
            raise ValueError(
                "input_modifiers, param_modifiers and output_modifiers must have the same length "
                f"(one entry per branch); got {[len(mods) for mods in given]}."
            )
        self.input_modifiers = list(input_modifiers or [_identity] * branches)
        self.param_modifiers = [
            ParamMod.ensure(mod) for mod in (param_modifiers or [_unmodified] * branches)
        ]
        self.output_modifiers = list(output_modifiers or [_identity] * branches)
        self.stabilizer = Stabilizer.ensure(stabilizer)
        self.gradient_mapper = gradient_mapper or self._stabilized_ratio
        self.reducer = reducer or _sum_of_products
        self._param_cache: dict[int, tuple[dict[str, torch.Tensor], tuple, dict]] = {}

    def copy(self) -> BasicHook:
        """Return a hook of the same class that shares this one's modifier objects.

        As zennit's copies do, the copy refers to the very same input, parameter and output
        modifiers, gradient mapper and reducer (and any other setting of a subclass); it has its
        own per-registration state (stored tensors, cached parameters, ``active``).
        """
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy._reset()
        for name, value in self.__dict__.items():  # methods bound to this hook: to the copy
            if inspect.ismethod(value) and value.__self__ is self:
                setattr(copy, name, types.MethodType(value.__func__, copy))
        return copy

    def _reset(self) -> None:
        super()._reset()
        self._param_cache = {}

    def _release_derived(self) -> None:
        """Drop the modified parameters once a released call has used them.

        They are kept between the passes of a kept graph (and SmoothGrad's samples); in a pass
        that releases its records, only the layer whose relevance is being computed holds them
        (a second copy of a VGG-16's convolution weights per branch otherwise).
        """
        self._param_cache.clear()

    def _stabilized_ratio(self, out_grad: torch.Tensor, outputs: list[torch.Tensor]) -> list:
        return [out_grad / self.stabilizer(output) for output in outputs]

    def forward(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        """Store the call's output where a fast path reads it (see ``reads_output``)."""
        if self.reads_output:
            keep_output(self.stored_tensors, output)

    def modified_parameters(self, branch: int, module: nn.Module) -> dict[str, torch.Tensor]:
        """Return the parameters of ``branch``, computed once while the parameters are unchanged."""
        param_mod = self.param_modifiers[branch]
        names = param_mod._keys(module)
        current = {name: getattr(module, name, None) for name in names}
        versions = tuple(
            (name, value._version) for name, value in current.items() if value is not None
        )
        cached = self._param_cache.get(branch)
        if (
            cached is not None
            and cached[1] == versions
            and all(cached[0].get(name) is value for name, value in current.items())
        ):
            return cached[2]
        original, modified = param_mod.state_dicts(module)
        self._param_cache[branch] = (original, versions, modified)
        return modified

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Compute the relevance of every hooked input of the call."""
        record = self.stored_tensors
        if grad_output[0] is None:
            return None
        args, kwargs = record["input"], record["kwargs"]
        positions = record["positions"]
        create_graph = torch.is_grad_enabled()

        def prepared(tensor: torch.Tensor) -> torch.Tensor:
            return tensor if create_graph else tensor.detach().requires_grad_()

        originals = [prepared(args[index]) for index in positions]
        branch_inputs, outputs = [], []
        with torch.enable_grad():
            for branch, (in_mod, out_mod) in enumerate(
                zip(self.input_modifiers, self.output_modifiers)
            ):
                inputs = [_differentiable(in_mod(tensor)) for tensor in originals]
                call_args = list(args)
                for index, tensor in zip(positions, inputs):
                    call_args[index] = tensor
                with substituted_parameters(module, self.modified_parameters(branch, module)):
                    outputs.append(out_mod(module.forward(*call_args, **kwargs)))
                branch_inputs.append(inputs)
            gradients = self.gradient_mapper(grad_output[0], outputs)
            flat_inputs = [tensor for inputs in branch_inputs for tensor in inputs]
            flat_gradients = torch.autograd.grad(
                outputs,
                flat_inputs,
                grad_outputs=list(gradients),
                create_graph=create_graph,
                allow_unused=True,
            )
        count = len(positions)
        relevance = []
        for position in range(count):
            inputs = [branch[position] for branch in branch_inputs]
            grads = [
                torch.zeros_like(tensor) if grad is None else grad
                for tensor, grad in zip(inputs, flat_gradients[position::count])
            ]
            relevance.append(self.reducer(inputs, grads))
        return tuple(relevance)

    def remove(self) -> None:
        """Drop stored tensors and cached parameters."""
        super().remove()
        self._param_cache.clear()


class RemovableHandle:
    """Create a weak reference to call ``.remove`` on some instance.

    Parameters
    ----------
    instance : object
        The object whose ``remove`` is called by :meth:`remove`, if it still exists.
    """

    def __init__(self, instance: Any) -> None:
        self.instance_ref = weakref.ref(instance)

    def remove(self) -> None:
        """Call remove on the weakly referenced instance if it still exists."""
        instance = self.instance_ref()
        if instance is not None:
            instance.remove()


class RemovableHandleList(list):
    """A list of handles with the ability to call remove on all of its members."""

    def remove(self) -> None:  # type: ignore[override] - deliberately shadows list.remove
        """Call remove on every member, last first, and empty the list."""
        for handle in reversed(self):
            handle.remove()
        self.clear()
