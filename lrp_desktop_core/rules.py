"""The LRP rules: how each layer passes the relevance of its outputs on to its inputs.

Notation: a layer computes ``z_j = sum_i x_i w_ij + b_j``; ``R_j`` is the relevance arriving at
output ``j``; ``x+ = max(x, 0)`` and ``x- = min(x, 0)``, likewise for ``w`` and ``b``; ``s()`` is
:func:`~.core.stabilize`, which moves a denominator away from zero.

Every rule with parameters is a :class:`~.core.BasicHook` declared by its input modifiers,
parameter modifiers, gradient mapper and reducer. On top of that declaration, two fast paths
compute the same numbers with less work:

* proportional rules (:class:`Epsilon`, :class:`Norm`) divide the arriving relevance by the
  layer's stored output and let the layer's own backward pass do the rest, so the layer is never
  evaluated again; on a :class:`~.layer.Sum` (residual additions), :class:`Norm` skips the sum's
  backward pass too and multiplies the stacked terms by that ratio directly;
* sign-splitting rules (:class:`ZPlus`, :class:`AlphaBeta`, :class:`Gamma`) on linear layers
  leave out the branches that cannot contribute (e.g. the negative part of an input that is
  nonnegative after a ReLU); :class:`Gamma` goes further: its branch outputs and relevance are
  combinations of the layer's output, one evaluation of the layer with absolute weights and bias
  on the absolute input, and the layer's own backward pass, so it evaluates the layer only once
  more for inputs of any sign.

Tests prove each fast path equal to the general :class:`~.core.BasicHook` computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .attention import AttentionAttnLRP, AttentionConservative
from .canonizers import returns_its_input
from .core import Hook, ParamMod, expand
from .fast_paths import (
    AbsoluteSplitRule,
    FastPathRule,
    ProportionalRule,
    SignSplitRule,
    elementwise_stabilizer,
    gradient_only,
    negative_part,
    ones_input,
    positive_part,
    unchanged_input,
)
from .layer import Sum
from .layer_rules import LayerNormEpsilon, SignalTakesAll, UniformSplit
from .modifiers import (
    ClampMod,
    GammaMod,
    NoMod,
    ZeroParams,
    ones_param,
    squared_param,
    zero_bias,
)
from .primitives import plus

__all__ = [
    "RULE_DESCRIPTIONS",
    "AlphaBeta",
    "AttentionAttnLRP",
    "AttentionConservative",
    "ClampMod",
    "Epsilon",
    "Flat",
    "Gamma",
    "GammaMod",
    "LayerNormEpsilon",
    "NoMod",
    "Norm",
    "Pass",
    "ReLUBetaSmooth",
    "ReLUDeconvNet",
    "ReLUGuidedBackprop",
    "SignalTakesAll",
    "UniformSplit",
    "WSquare",
    "ZBox",
    "ZPlus",
    "zero_bias",
]


class Epsilon(ProportionalRule):
    """The epsilon rule: ``R_i = sum_j x_i w_ij R_j / s(z_j)``.

    Parameters
    ----------
    epsilon : float or callable, optional
        The stabilizer of the denominator, a number or a callable (see
        :meth:`~.core.Stabilizer.ensure`); 0 gives the basic rule LRP-0.
    zero_params : str or list of str, optional
        Parameter names treated as zero, e.g. ``'bias'``.
    """

    def __init__(self, epsilon: float | Callable = 1e-6, zero_params: ZeroParams = None) -> None:
        self.epsilon = epsilon
        self.zero_params = zero_params
        super().__init__(param_modifiers=[NoMod(zero_params=zero_params)], stabilizer=epsilon)
        self.uses_module_backward = not zero_params


class Norm(ProportionalRule):
    """Distribute relevance in proportion to each input's share of the output.

    The epsilon rule with unmodified parameters, for layers without weights such as average
    pooling and :class:`~.layer.Sum`.

    Parameters
    ----------
    stabilizer : float or callable, optional
        The stabilizer of the denominator.
    """

    uses_module_backward = True

    def __init__(self, stabilizer: float | Callable = 1e-6) -> None:
        super().__init__(param_modifiers=[NoMod(param_keys=[])], stabilizer=stabilizer)

    # On a Sum of stacked terms, dz / dx_k = 1 for every term, so the relevance of the stacked
    # input is x * (R / s(z)) broadcast along the summed dimension: one multiplication, no
    # backward pass through the sum (and no copy of its output for an Identity). The sum z is
    # added again from the stacked terms (bit-identical to the output, see Sum.forward) instead
    # of being kept: a ReLU(inplace=True) after a residual sum then needs no copy of it.

    def register(self, module: nn.Module):
        """Register to ``module``; on a :class:`~.layer.Sum` skip the module's own backward."""
        if isinstance(module, Sum) and type(module).forward is Sum.forward:
            self.uses_module_backward = False
            self.reads_output = False
        return super().register(module)

    def _fast_path_applies(self, module: nn.Module) -> bool:
        if self.uses_module_backward:
            return super()._fast_path_applies(module)
        record = self.stored_tensors
        return (
            isinstance(module, Sum)
            and len(record["positions"]) == 1
            and not torch.is_grad_enabled()
        )

    def _fast_relevance(self, module: nn.Module, grad_input, grad_output) -> tuple:
        if self.uses_module_backward:
            return super()._fast_relevance(module, grad_input, grad_output)
        record = self.stored_tensors
        stacked = record["input"][record["positions"][0]].detach()
        ratio = grad_output[0] / self.stabilizer(Sum.forward(module, stacked))
        return (stacked * ratio.unsqueeze(module.dim),)


class ZPlus(SignSplitRule):
    """The z+ rule: only positive contributions count.

    ``z+_j = sum_i (x+_i w+_ij + x-_i w-_ij) + b+_j`` and
    ``R_i = sum_j (x+_i w+_ij + x-_i w-_ij) R_j / s(z+_j)``.

    Parameters
    ----------
    stabilizer : float or callable, optional
        The stabilizer of the denominator.
    zero_params : str or list of str, optional
        Parameter names treated as zero, e.g. ``'bias'``.
    """

    def __init__(self, stabilizer: float | Callable = 1e-6, zero_params: ZeroParams = None) -> None:
        self.zero_params = zero_params
        super().__init__(
            input_modifiers=[positive_part, negative_part],
            param_modifiers=[
                ClampMod(min=0.0, zero_params=zero_params),
                ClampMod(max=0.0, zero_params=zero_bias(zero_params)),
            ],
            gradient_mapper=self._share_of_total,
            stabilizer=stabilizer,
        )

    def _share_of_total(self, out_grad: torch.Tensor, outputs: list[torch.Tensor]) -> list:
        ratio = out_grad / self.stabilizer(plus(outputs[0], outputs[1]))
        return [ratio, ratio]


class AlphaBeta(SignSplitRule):
    """The alpha-beta rule: positive contributions weighted by alpha minus negative ones by beta.

    The positive part is the z+ rule's; the negative part mirrors it (``x+ w-`` and ``x- w+``,
    with ``b-``), each normalised by its own sum.

    Parameters
    ----------
    alpha : float, optional
        The weight of the positive part.
    beta : float, optional
        The weight of the negative part.
    stabilizer : float or callable, optional
        The stabilizer of the denominators.
    zero_params : str or list of str, optional
        Parameter names treated as zero, e.g. ``'bias'``.

    Raises
    ------
    ValueError
        Unless ``alpha >= 0``, ``beta >= 0`` and ``alpha - beta == 1`` (relevance is conserved only
        then).
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 1.0,
        stabilizer: float | Callable = 1e-6,
        zero_params: ZeroParams = None,
    ) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(
                f"AlphaBeta needs alpha >= 0 and beta >= 0, got alpha={alpha}, beta={beta}; "
                "e.g. alpha=2, beta=1 or alpha=1, beta=0."
            )
        if not math.isclose(alpha - beta, 1.0):
            raise ValueError(
                f"AlphaBeta needs alpha - beta == 1, got alpha={alpha}, beta={beta} "
                f"(difference {alpha - beta}); e.g. alpha=2, beta=1 or alpha=1, beta=0."
            )
        self.alpha = alpha
        self.beta = beta
        self.zero_params = zero_params
        super().__init__(
            input_modifiers=[positive_part, negative_part, positive_part, negative_part],
            param_modifiers=[
                ClampMod(min=0.0, zero_params=zero_params),
                ClampMod(max=0.0, zero_params=zero_bias(zero_params)),
                ClampMod(max=0.0, zero_params=zero_params),
                ClampMod(min=0.0, zero_params=zero_bias(zero_params)),
            ],
            gradient_mapper=self._shares_of_parts,
            reducer=self._weighted_parts,
            stabilizer=stabilizer,
        )

    def _shares_of_parts(self, out_grad: torch.Tensor, outputs: list[torch.Tensor]) -> list:
        positive = out_grad / self.stabilizer(plus(outputs[0], outputs[1]))
        negative = out_grad / self.stabilizer(plus(outputs[2], outputs[3]))
        return [positive, positive, negative, negative]

    def _weighted_part(
        self, input: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        """Return ``input * (alpha positive - beta negative)`` for one part of the input.

        In place on the fast path's gradients (fresh, whole tensors of their own), which saves
        two temporaries of the input's size; the same operations in the same order otherwise.
        """
        if positive.shape == negative.shape == input.shape and positive is not negative:
            return positive.mul_(self.alpha).sub_(negative, alpha=self.beta).mul_(input)
        return input * torch.sub(positive * self.alpha, negative, alpha=self.beta)

    def _weighted_parts(self, inputs: list, gradients: list) -> torch.Tensor:
        alpha, beta = self.alpha, self.beta
        if inputs[0] is inputs[2] and inputs[1] is inputs[3]:  # the fast path: one tensor a part
            return plus(
                self._weighted_part(inputs[0], gradients[0], gradients[2]),
                self._weighted_part(inputs[1], gradients[1], gradients[3]),
            )
        positive = inputs[0] * gradients[0] + inputs[1] * gradients[1]
        negative = inputs[2] * gradients[2] + inputs[3] * gradients[3]
        return alpha * positive - beta * negative


class Gamma(AbsoluteSplitRule):
    """The gamma rule: contributions of the output's sign are strengthened by a factor gamma.

    Where the unmodified output ``z_j > 0``, positive inputs use ``w + gamma w+`` and negative
    inputs ``w + gamma w-``, with bias ``b + gamma b+``; where ``z_j < 0`` the choice is mirrored
    (bias ``b + gamma b-``); where ``z_j = 0`` no relevance flows. The sign is always that of the
    layer's real output, also when ``zero_params`` zeroes parameters of the other branches.

    Parameters
    ----------
    gamma : float, optional
        The strengthening factor; 0 gives the epsilon rule, large values approach z+.
    stabilizer : float or callable, optional
        The stabilizer of the denominators.
    zero_params : str or list of str, optional
        Parameter names treated as zero, e.g. ``'bias'``.
    """

    uses_module_backward = True
    output_only_branches = (4,)

    def __init__(
        self,
        gamma: float = 0.25,
        stabilizer: float | Callable = 1e-6,
        zero_params: ZeroParams = None,
    ) -> None:
        self.gamma = gamma
        self.zero_params = zero_params
        super().__init__(
            input_modifiers=[
                positive_part,
                negative_part,
                positive_part,
                negative_part,
                unchanged_input,
            ],
            param_modifiers=[
                GammaMod(gamma, min=0.0, zero_params=zero_params),
                GammaMod(gamma, max=0.0, zero_params=zero_bias(zero_params)),
                GammaMod(gamma, max=0.0, zero_params=zero_params),
                GammaMod(gamma, min=0.0, zero_params=zero_bias(zero_params)),
                NoMod(),
            ],
            gradient_mapper=self._shares_by_output_sign,
            reducer=self._modified_parts,
            stabilizer=stabilizer,
        )

    def _shares_by_output_sign(self, out_grad: torch.Tensor, outputs: list[torch.Tensor]) -> list:
        output = outputs[4]
        positive = (output > 0) * out_grad / self.stabilizer(outputs[0] + outputs[1])
        negative = (output < 0) * out_grad / self.stabilizer(outputs[2] + outputs[3])
        return [positive, positive, negative, negative, torch.zeros_like(out_grad)]

    def _modified_parts(self, inputs: list, gradients: list) -> torch.Tensor:
        return sum(x * gradient for x, gradient in zip(inputs[:4], gradients[:4]))

    def _closed_form_shares(
        self, output: torch.Tensor, absolute: torch.Tensor, out_grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # With h = gamma / 2, the output of the branches of y's sign is (1 + h) y + h sign(y) A'
        # (z+ where y > 0, z- where y < 0); with r = R / s(that), the relevance is
        # (1 + h) x W^T (r |sign(y)|) + h |x| |W|^T (r sign(y)).
        half = self.gamma / 2
        sign = output.sign()
        scaled = output * (1 + half)
        if elementwise_stabilizer(self.stabilizer):
            denominator = self.stabilizer(scaled.addcmul_(sign, absolute, value=half))
        else:  # the stabilizer sees each branch's output whole, as in the general path
            positive = self.stabilizer(scaled + half * absolute)
            negative = self.stabilizer(scaled - half * absolute)
            denominator = torch.where(output > 0, positive, negative)
        ratio = out_grad / denominator
        through_absolute = ratio * sign
        return ratio.mul_(sign.abs_()).mul_(1 + half), through_absolute.mul_(half)


class ZBox(FastPathRule):
    """The z-box rule for the first layer, using the bounds of the input domain.

    ``D_j = sum_i (x_i w_ij - l_i w+_ij - h_i w-_ij)`` and
    ``R_i = sum_j (x_i w_ij - l_i w+_ij - h_i w-_ij) R_j / s(D_j)``.

    Parameters
    ----------
    low, high : float or torch.Tensor
        The lowest and highest possible input values, numbers or tensors broadcast to the input
        (a larger batch dimension is cut to the input's).
    stabilizer : float or callable, optional
        The stabilizer of the denominator.
    zero_params : str or list of str, optional
        Parameter names treated as zero, e.g. ``'bias'``.
    """

    uses_module_backward = False

    def __init__(
        self,
        low: float | torch.Tensor,
        high: float | torch.Tensor,
        stabilizer: float | Callable = 1e-6,
        zero_params: ZeroParams = None,
    ) -> None:
        self.low = low
        self.high = high
        self.zero_params = zero_params
        super().__init__(
            input_modifiers=[unchanged_input, self._low_like, self._high_like],
            param_modifiers=[
                NoMod(zero_params=zero_params),
                ClampMod(min=0.0, zero_params=zero_params),
                ClampMod(max=0.0, zero_params=zero_params),
            ],
            gradient_mapper=self._share_of_box_difference,
            reducer=self._box_difference,
            stabilizer=stabilizer,
        )

    def _low_like(self, input: torch.Tensor) -> torch.Tensor:
        return expand(self.low, input.shape, cut_batch_dim=True).to(input)

    def _high_like(self, input: torch.Tensor) -> torch.Tensor:
        return expand(self.high, input.shape, cut_batch_dim=True).to(input)

    def _share_of_box_difference(self, out_grad: torch.Tensor, outputs: list) -> list:
        ratio = out_grad / self.stabilizer(outputs[0] - outputs[1] - outputs[2])
        return [ratio, ratio, ratio]

    @staticmethod
    def _box_difference(inputs: list, gradients: list) -> torch.Tensor:
        return inputs[0] * gradients[0] - inputs[1] * gradients[1] - inputs[2] * gradients[2]


class Flat(FastPathRule):
    """The flat rule: every weight 1 and bias 0.

    Relevance spreads evenly over each output's receptive field (border positions of padded
    convolutions have fewer inputs).

    Parameters
    ----------
    stabilizer : float or callable, optional
        The stabilizer of the denominator.
    zero_params : str or list of str, optional
        Parameter names treated as zero (the bias always is).
    """

    uses_module_backward = False

    def __init__(self, stabilizer: float | Callable = 1e-6, zero_params: ZeroParams = None) -> None:
        self.zero_params = zero_params
        super().__init__(
            input_modifiers=[ones_input],
            param_modifiers=[ParamMod(ones_param, zero_params=zero_bias(zero_params))],
            reducer=gradient_only,
            stabilizer=stabilizer,
        )


class WSquare(FastPathRule):
    """The w-square rule: ``R_i = sum_j w_ij^2 R_j / s(sum_i w_ij^2 + b_j^2)``.

    The relevance does not depend on the input.

    Parameters
    ----------
    stabilizer : float or callable, optional
        The stabilizer of the denominator.
    zero_params : str or list of str, optional
        Parameter names treated as zero, e.g. ``'bias'``.
    """

    uses_module_backward = False

    def __init__(self, stabilizer: float | Callable = 1e-6, zero_params: ZeroParams = None) -> None:
        self.zero_params = zero_params
        super().__init__(
            input_modifiers=[ones_input],
            param_modifiers=[ParamMod(squared_param, zero_params=zero_params)],
            reducer=gradient_only,
            stabilizer=stabilizer,
        )


class Pass(Hook):
    """Pass the relevance of the output unchanged to the input (activations, batch norm).

    A module that returns its input as it is (a batch norm merged by a canonizer) is not hooked
    at all: its gradient is the identity already, and hooking it would only copy its output.
    """

    uses_module_backward = False
    reads_input = False

    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict):
        if returns_its_input(module):
            self._open_calls.append(None)  # post_forward leaves this call alone
            return None
        return super()._pre_forward(module, args, kwargs)

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the arriving relevance as the input's."""
        return grad_output


class ReLUDeconvNet(Hook):
    """DeconvNet's ReLU: pass on the positive part of the arriving gradient."""

    uses_module_backward = False
    reads_input = False

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the arriving gradient clamped at zero."""
        return (grad_output[0].clamp(min=0),)


class ReLUGuidedBackprop(Hook):
    """Guided backpropagation's ReLU: the gradient, where the arriving gradient is positive."""

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the plain gradient masked by the sign of the arriving gradient."""
        return (grad_input[0] * (grad_output[0] > 0),)


class ReLUBetaSmooth(Hook):
    """A ReLU that propagates the gradient of a softplus of sharpness ``beta_smooth``.

    Parameters
    ----------
    beta_smooth : float, optional
        The sharpness; the gradient becomes ``sigmoid(beta_smooth * x)`` times the arriving one.
    """

    uses_module_backward = False

    def __init__(self, beta_smooth: float = 10.0) -> None:
        super().__init__()
        self.beta_smooth = beta_smooth

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the arriving gradient times the softplus derivative at the input."""
        input = self.stored_tensors["input"][self.stored_tensors["positions"][0]]
        return (grad_output[0] * torch.sigmoid(self.beta_smooth * input),)


RULE_DESCRIPTIONS: dict[str, str] = {
    "Epsilon": (
        "Distributes each output's relevance in proportion to the inputs' contributions, with a "
        "small epsilon against division by zero; larger epsilon absorbs weak, noisy evidence. "
        "Use it for dense layers near the output."
    ),
    "ZPlus": (
        "Counts only contributions that increase the output, so relevance stays positive and "
        "heatmaps are robust. A good default for convolutions after a ReLU."
    ),
    "AlphaBeta": (
        "Weighs positive contributions by alpha and subtracts negative ones weighted by beta "
        "(alpha - beta = 1). Shows evidence for and against; alpha 2, beta 1 is common."
    ),
    "Gamma": (
        "Like Epsilon, but strengthens contributions that agree with the output's sign by "
        "gamma. Gives stable heatmaps for convolutions in the lower and middle layers."
    ),
    "ZBox": (
        "For the first layer only: uses the lowest and highest possible input values to "
        "decide how much each pixel contributes. Use it on the input layer of image models."
    ),
    "Flat": (
        "Spreads each output's relevance evenly over all inputs it sees, ignoring weights and "
        "input values. Use it on the first layer for smooth heatmaps not driven by texture."
    ),
    "WSquare": (
        "Distributes relevance by squared weights, ignoring the input values. Use it on the "
        "first layer when the input values themselves carry no meaning of their own."
    ),
    "Pass": (
        "Passes relevance through unchanged. Used for activations and batch normalisation, "
        "which do not redistribute relevance."
    ),
    "Norm": (
        "Distributes relevance in proportion to each input's share of the output. Used for "
        "layers without weights, such as average pooling and residual sums."
    ),
    "LayerNormEpsilon": (
        "For layer norms: holds the standard deviation constant, so the layer is the linear map "
        "it then is, and shares relevance like Epsilon. Used in ConvNeXt and transformers."
    ),
    "SignalTakesAll": (
        "For a product of a signal and a gate (squeeze-and-excitation): all relevance goes to "
        "the signal, the gate is treated as a constant weight and gets none."
    ),
    "UniformSplit": (
        "For a product of a signal and a gate: each factor gets half of the relevance."
    ),
    "AttentionConservative": (
        "For the attention of a transformer (CP-LRP): the attention weights are held constant, "
        "so all relevance flows to the values, shared like Epsilon; queries and keys get none. "
        "Conserves relevance."
    ),
    "AttentionAttnLRP": (
        "For the attention of a transformer (AttnLRP): half of the relevance goes to the values, "
        "the rest through the softmax to queries and keys. The softmax absorbs part of it, so "
        "relevance is not conserved."
    ),
    "ReLUDeconvNet": (
        "DeconvNet's ReLU: passes back only the positive part of the signal. Not an LRP rule; "
        "gives pictures of features rather than evidence for a class."
    ),
    "ReLUGuidedBackprop": (
        "Guided backpropagation's ReLU: passes back the gradient only where it is positive. "
        "Not an LRP rule; gives crisp but little class-specific pictures."
    ),
    "ReLUBetaSmooth": (
        "Treats the ReLU as a smooth softplus when passing back the gradient, which reduces "
        "noise. Not an LRP rule; larger beta is closer to the plain gradient."
    ),
}
"""Plain-language descriptions of the rules, by class name."""
