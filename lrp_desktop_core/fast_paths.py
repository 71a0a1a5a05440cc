"""The machinery under the LRP rules: input helpers and the rule base classes with fast paths.

A rule is a :class:`~.core.BasicHook` declared by its modifiers; the base classes here add fast
paths that compute the same relevance with less work (see :mod:`.rules`).
"""

from __future__ import annotations

import torch
from torch import nn

from .core import BasicHook, Stabilizer, substituted_parameters
from .hooks import intact_output
from .types import Linear

__all__ = [
    "AbsoluteSplitRule",
    "FastPathRule",
    "ProportionalRule",
    "SignSplitRule",
    "elementwise_stabilizer",
    "gradient_only",
    "negative_part",
    "ones_input",
    "positive_part",
    "unchanged_input",
]


def positive_part(input: torch.Tensor) -> torch.Tensor:
    """Return ``max(input, 0)``."""
    return input.clamp(min=0)


def negative_part(input: torch.Tensor) -> torch.Tensor:
    """Return ``min(input, 0)``."""
    return input.clamp(max=0)


def unchanged_input(input: torch.Tensor) -> torch.Tensor:
    """Return the input as it is."""
    return input


def ones_input(input: torch.Tensor) -> torch.Tensor:
    """Return all ones (BasicHook makes such a constant input differentiable)."""
    return torch.ones_like(input)


def gradient_only(inputs: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """Reduce to the gradient alone (for rules whose relevance does not scale with the input)."""
    return gradients[0]


class FastPathRule(BasicHook):
    """A BasicHook rule with an optional fast path that computes the same relevance faster.

    Subclasses say when their fast path applies (``_fast_path_applies``) and compute it
    (``_fast_relevance``); otherwise the general :meth:`BasicHook.backward` runs.
    """

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the relevance of the call's inputs, through the fast path where it applies."""
        if grad_output[0] is not None and self._fast_path_applies(module):
            return self._fast_relevance(module, grad_input, grad_output)
        return super().backward(module, grad_input, grad_output)

    def _fast_path_applies(self, module: nn.Module) -> bool:
        return False

    def _fast_relevance(self, module: nn.Module, grad_input, grad_output) -> tuple:
        raise NotImplementedError


class ProportionalRule(FastPathRule):
    """A rule ``R_i = x_i sum_j (dz_j / dx_i) R_j / s(z_j)`` with unmodified parameters.

    The fast path divides the arriving relevance by the stabilized stored output before the
    module's own backward pass and multiplies its result by the input: no second evaluation.
    """

    reads_output = True

    def _fast_path_applies(self, module: nn.Module) -> bool:
        # the stored output is detached: while gradients are recorded (to differentiate the
        # relevance), the general path evaluates the layer again
        return (
            self.uses_module_backward
            and not torch.is_grad_enabled()
            and intact_output(self.stored_tensors) is not None
        )

    def pre_backward(self, module: nn.Module, grad_input, grad_output):
        """Scale the arriving relevance by ``1 / s(z)`` for the module's own backward pass."""
        if (
            grad_output[0] is None
            or not self.uses_module_backward
            or not self._fast_path_applies(module)
        ):
            return None
        return (grad_output[0] / self.stabilizer(self.stored_tensors["output"]),)

    def _fast_relevance(self, module: nn.Module, grad_input, grad_output) -> tuple:
        args = self.stored_tensors["input"]
        return tuple(
            None if gradient is None else args[index] * gradient
            for index, gradient in zip(self.stored_tensors["positions"], grad_input)
        )


class SignSplitRule(FastPathRule):
    """A rule whose branches split the input by sign, with the reducer a sum of products.

    On linear layers (:data:`~.types.Linear`) a branch whose modified input is zero everywhere and
    whose modified bias is zero has output zero and contributes no relevance: the fast path leaves
    it out, which halves the work for the nonnegative input that follows a ReLU. Branches listed
    in ``output_only_branches`` evaluate the layer as it is, only for their output: the fast path
    takes the stored output for them.
    """

    uses_module_backward = False
    output_only_branches: tuple[int, ...] = ()

    def _fast_path_applies(self, module: nn.Module) -> bool:
        record = self.stored_tensors
        return (
            isinstance(module, Linear)
            and len(record["positions"]) == 1
            and (not self.output_only_branches or intact_output(record) is not None)
            and not torch.is_grad_enabled()
        )

    def _branch_inputs(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """Each branch's modified input, None where it is zero everywhere."""
        low, high = torch.stack(torch.aminmax(x)).tolist()  # one read-back from the device
        one_sign = low >= 0 or high <= 0  # then a sign's part is x itself or zero
        nonzero = {
            unchanged_input: low < 0 or high > 0,
            positive_part: high > 0,
            negative_part: low < 0,
        }
        known: dict = {}
        for modifier in self.input_modifiers:
            if modifier in known:
                continue
            if modifier in nonzero:
                part = x if one_sign else modifier(x)
                known[modifier] = part if nonzero[modifier] else None
            else:
                modified = modifier(x)
                known[modifier] = modified if bool(modified.any()) else None
        return [known[modifier] for modifier in self.input_modifiers]

    def _has_bias(self, branch: int, module: nn.Module) -> bool:
        zeroed = self.param_modifiers[branch].zero_params
        if zeroed == "bias" or (not isinstance(zeroed, str) and "bias" in (zeroed or ())):
            return False  # known without modifying (and copying) the weights
        bias = self.modified_parameters(branch, module).get("bias", getattr(module, "bias", None))
        return bias is not None and bool(bias.any())

    def _fast_relevance(self, module: nn.Module, grad_input, grad_output) -> tuple:
        record = self.stored_tensors
        index = record["positions"][0]
        args = list(record["input"])
        x = args[index].detach()
        zero = x.new_zeros(())
        inputs = self._branch_inputs(x)
        outputs = [
            record["output"] if k in self.output_only_branches else zero for k in range(len(inputs))
        ]
        live = [
            k
            for k, branch_input in enumerate(inputs)
            if k not in self.output_only_branches
            and (branch_input is not None or self._has_bias(k, module))
        ]
        leaves = {}
        with torch.enable_grad():
            for branch in live:
                branch_input = inputs[branch]
                leaf = torch.zeros_like(x) if branch_input is None else branch_input.detach()
                leaves[branch] = args[index] = leaf.requires_grad_()
                with substituted_parameters(module, self.modified_parameters(branch, module)):
                    outputs[branch] = module.forward(*args, **record["kwargs"])
        mapped = self.gradient_mapper(grad_output[0], outputs)
        gradients = [mapped[branch] if branch in live else None for branch in range(len(mapped))]
        del mapped
        input_gradients = [zero] * len(inputs)
        for branch in live:  # one branch at a time, its output and gradient freed after it
            (input_gradients[branch],) = torch.autograd.grad(
                outputs[branch], leaves[branch], gradients[branch]
            )
            outputs[branch] = gradients[branch] = None
        relevance = self.reducer([zero if t is None else t for t in inputs], input_gradients)
        return (relevance.expand_as(x) if relevance.shape != x.shape else relevance,)


def elementwise_stabilizer(stabilizer) -> bool:
    """Whether ``stabilizer`` treats every entry on its own (then it commutes with a selection)."""
    return isinstance(stabilizer, Stabilizer) and not stabilizer.norm_scale


class AbsoluteSplitRule(SignSplitRule):
    """A sign-splitting rule computed in closed form from the output and one absolute evaluation.

    On a linear layer ``y = W x + b`` the sign-matched products ``W+ x+ + W- x-`` and
    ``W- x+ + W+ x-`` are ``(y0 + A) / 2`` and ``(y0 - A) / 2``, with ``y0 = W x`` and
    ``A = |W| |x|``, and ``b+ = (b + |b|) / 2``, ``b- = (b - |b|) / 2``: a rule whose branch
    outputs are combinations of ``y`` and ``A' = |W| |x| + |b|`` has relevance
    ``x W^T a + |x| |W|^T c`` for two output gradients ``a`` and ``c``. The module's own backward
    pass computes the first term; one evaluation of the layer with ``|W|``, ``|b|`` on ``|x|``
    gives ``A'`` and, through its gradient, the second. Subclasses give ``a`` and ``c``
    (:meth:`_closed_form_shares`); where the closed form does not apply (parameters zeroed,
    gradients recorded, several inputs), the :class:`SignSplitRule` paths run and the module's own
    gradient is not used.

    The two terms cancel where a branch's contributions do, so the closed form suits only rules
    whose denominators are bounded away from zero by the output (:class:`~.rules.Gamma`:
    ``|z| >= |y|``); for :class:`~.rules.AlphaBeta`, whose ``z+`` vanishes where every
    contribution is negative, the cancellation would amplify rounding by ``1 / epsilon``.
    """

    uses_module_backward = True
    reads_output = True

    def _closed_form_shares(
        self, output: torch.Tensor, absolute: torch.Tensor, out_grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the gradients ``a`` (for ``W^T``) and ``c`` (for ``|W|^T``) of the relevance."""
        raise NotImplementedError

    def pre_backward(self, module: nn.Module, grad_input, grad_output):
        """Evaluate the layer on absolute values and give its own backward pass its share."""
        if grad_output[0] is None or self.zero_params or not self._fast_path_applies(module):
            return tuple(None for _ in grad_output)  # the module's own gradient is not used
        record = self.stored_tensors
        index = record["positions"][0]
        args = list(record["input"])
        x = args[index].detach()
        magnitude = x if bool(x.min() >= 0) else x.abs()
        bias = getattr(module, "bias", None)
        absolute_parameters = {
            "weight": module.weight.detach().abs(),
            "bias": None if bias is None else bias.detach().abs(),
        }
        with torch.enable_grad():
            leaf = args[index] = magnitude.requires_grad_()
            with substituted_parameters(module, absolute_parameters):
                absolute = module.forward(*args, **record["kwargs"])
        own, through_absolute = self._closed_form_shares(
            record["output"].detach(), absolute.detach(), grad_output[0]
        )
        record["absolute_part"] = (leaf, absolute, through_absolute)
        return (own,)

    def _fast_relevance(self, module: nn.Module, grad_input, grad_output) -> tuple:
        part = self.stored_tensors.pop("absolute_part", None)
        if part is None:
            return super()._fast_relevance(module, grad_input, grad_output)
        leaf, absolute, share = part
        (through_absolute,) = torch.autograd.grad(absolute, leaf, share)
        relevance = leaf.detach() * through_absolute
        own = grad_input[0]
        if own is None:
            return (relevance,)
        x = self.stored_tensors["input"][self.stored_tensors["positions"][0]].detach()
        return (relevance.addcmul_(x, own),)
