"""Which rule a composite gives each layer of a model, and why: a report for people.

:func:`rule_coverage` walks the model exactly as :meth:`~.core.Composite.register` does, but
registers nothing: it applies the composite's canonizers for the walk, asks the composite's
``module_map`` for every module, and reverts the canonizers before it returns.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .attention import AttentionCore
from .core import BasicHook, Composite, Hook, Stabilizer
from .layer import ChannelAffine, Prepend, Product, Scale, Sum
from .rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    LayerNormEpsilon,
    Norm,
    Pass,
    ReLUBetaSmooth,
    ReLUDeconvNet,
    ReLUGuidedBackprop,
    SignalTakesAll,
    UniformSplit,
    WSquare,
    ZBox,
    ZPlus,
)
from .torchvision_types import torchvision_types
from .types import Activation, AvgPool, BatchNorm, LayerNorm, MaxPool

__all__ = ["LayerRule", "rule_coverage"]


@dataclass(frozen=True)
class LayerRule:
    """The rule one layer gets from a composite.

    Attributes
    ----------
    name : str
        The layer's name in the (canonized) model, as in ``model.named_modules()``.
    module_type : str
        The layer's class name, e.g. ``"Conv2d"``.
    rule : str or None
        The rule's class name, or None where the layer gets no rule.
    params : dict
        The rule's parameters (numbers as plain floats), empty without a rule.
    reason : str
        A plain-language explanation of what happens to relevance at this layer.
    warn : bool
        True where relevance is likely handled wrongly (e.g. a layer with weights without rule).
    """

    name: str
    module_type: str
    rule: str | None
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    warn: bool = False


_RULE_EFFECTS: dict[type, str] = {
    Epsilon: "relevance is shared in proportion to each input's contribution",
    Norm: "relevance is shared in proportion to each input's share of the output",
    ZPlus: "relevance is shared by the positive contributions only",
    AlphaBeta: "positive contributions get alpha times, negative ones minus beta times relevance",
    Gamma: "relevance is shared by contributions, those agreeing with the output strengthened",
    ZBox: "relevance is shared using the bounds of the input range",
    Flat: "relevance is spread evenly over each output's receptive field",
    WSquare: "relevance is shared by squared weights, independent of the input",
    Pass: "relevance passes through unchanged",
    LayerNormEpsilon: "relevance is shared like Epsilon, with the standard deviation held constant",
    SignalTakesAll: "all relevance goes to the signal, none to the gate",
    UniformSplit: "the signal and the gate get half of the relevance each",
    ReLUDeconvNet: "only the positive part of the signal passes back",
    ReLUGuidedBackprop: "the gradient passes back only where it is positive",
    ReLUBetaSmooth: "the gradient of a smooth softplus passes back",
}

_SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity)
_INACTIVE_IN_EVAL = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def rule_coverage(model: nn.Module, composite: Composite) -> list[LayerRule]:
    """Report the rule that ``composite`` gives every leaf of ``model``, and the reason.

    The composite's canonizers are applied for the walk and removed afterwards, so names and
    layers are those the rules see, and the model is left exactly as it was. Containers are
    listed only where they get a rule themselves.

    Parameters
    ----------
    model : torch.nn.Module
        The model to inspect.
    composite : Composite
        The composite whose ``module_map`` and canonizers are used.

    Returns
    -------
    list of LayerRule
        One entry per leaf module (and per container with a rule), in ``named_modules()`` order.
    """
    applied: list = []
    try:
        for canonizer in composite.canonizers:
            applied.extend(canonizer.apply(model))
        ctx: dict = {}
        assigned = [
            (name, module, composite.module_map(ctx, name, module))
            for name, module in model.named_modules()
        ]
    finally:
        for canonizer in reversed(applied):
            canonizer.remove()
    lrp = any(isinstance(rule, BasicHook) for _, _, rule in assigned)
    return [
        _layer_rule(name, module, rule, lrp)
        for name, module, rule in assigned
        if rule is not None or not any(True for _ in module.children())
    ]


def _layer_rule(name: str, module: nn.Module, rule: Hook | None, lrp: bool) -> LayerRule:
    module_type = type(module).__name__
    if rule is not None:
        effect = _RULE_EFFECTS.get(type(rule), "relevance follows this rule")
        return LayerRule(
            name,
            module_type,
            type(rule).__name__,
            rule_params(rule),
            f"{_kind(module)}: {effect} ({type(rule).__name__})",
        )
    reason, warn = _reason_without_rule(module, lrp)
    return LayerRule(name, module_type, None, {}, reason, warn)


def _kind(module: nn.Module) -> str:
    """Name the module with what it is, e.g. ``'ReLU activation'``."""
    module_type = type(module).__name__
    for group, word in (
        (Activation, "activation"),
        ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "convolution"),
        ((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), "transposed convolution"),
        (nn.Linear, "dense layer"),
        (BatchNorm, "batch normalisation"),
        (AvgPool, "average pooling"),
        (Sum, "sum of branches"),
        (Product, "gated product"),
        (Scale, "layer scale"),
        (ChannelAffine, "input transform"),
        (LayerNorm, "layer normalisation"),
    ):
        if isinstance(module, group):
            return f"{module_type} {word}"
    return module_type


def _reason_without_rule(module: nn.Module, lrp: bool) -> tuple[str, bool]:
    """Explain what happens at a module without a rule, and whether that deserves a warning."""
    module_type = type(module).__name__
    plain = "the plain gradient flows through it"
    if isinstance(module, (*_INACTIVE_IN_EVAL, *torchvision_types("ops", "StochasticDepth"))):
        if module.training:
            return f"no rule: {module_type} is active in training mode; call model.eval()", True
        return f"no rule: {module_type} is inactive in eval mode", False
    if isinstance(module, _SHAPE_ONLY):
        return f"no rule: {module_type} only reshapes; relevance passes unchanged", False
    if any(True for _ in module.parameters(recurse=False)):
        if not lrp:
            return f"no rule: {plain}, as this method intends", False
        return (
            "no rule: a layer with parameters that gets no rule lets the plain gradient through: "
            "relevance is not conserved here — assign a rule",
            True,
        )
    if isinstance(module, MaxPool):
        return (
            f"no rule: {module_type} is not covered by this composite; {plain}, which for max "
            "pooling routes relevance to the maximum (usually fine)",
            False,
        )
    if not lrp:
        return f"no rule: {plain}, as this method intends", False
    if isinstance(module, nn.ReLU):
        return f"no rule: {plain}, which for a ReLU passes relevance unchanged", False
    if isinstance(module, AvgPool):
        return f"no rule: {plain}, which spreads relevance evenly over each window", False
    if isinstance(module, (Activation, Sum, Prepend, Product, Scale, ChannelAffine, AttentionCore)):
        return (
            f"no rule: {plain}, which changes the amount of relevance here — assign a rule "
            "(Pass for activations, layer scales and input transforms, Norm for sums and "
            "prepended tokens, SignalTakesAll for products, AttentionConservative for attention)",
            True,
        )
    return f"no rule: {module_type} is not covered by this composite; {plain}", False


def rule_params(rule: Hook) -> dict[str, Any]:
    """Return the parameters a rule was built with, by constructor argument name.

    Numbers, one-element tensors and plain stabilizers become floats; other values (tensors,
    names of zeroed parameters, callables) are returned as they are.

    Parameters
    ----------
    rule : Hook
        The rule.

    Returns
    -------
    dict
        Parameter name to value, for every constructor argument the rule keeps as an attribute.
    """
    names = list(inspect.signature(type(rule).__init__).parameters)[1:]
    return {name: _plain(getattr(rule, name)) for name in names if hasattr(rule, name)}


def _plain(value: Any) -> Any:
    if isinstance(value, Stabilizer) and not value.clip and not value.norm_scale:
        value = value.epsilon
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value
