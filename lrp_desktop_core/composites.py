"""Composites: which rule each layer of a model gets, and the named presets.

A composite maps every module of a model to a rule (or to none) through its ``module_map`` and
applies canonizers before the rules are attached. The general composites choose by layer type
(:class:`LayerMapComposite`), by layer type with a special rule for the first matching layer
(:class:`SpecialFirstLayerMapComposite`), by module name (:class:`NameMapComposite`), or by
trying several composites in order (:class:`MixedComposite`). The presets are the rule
combinations recommended in the LRP literature; they are listed in :data:`COMPOSITES`, and their
titles and descriptions in the catalogue (:data:`~.names.PRESETS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .attention import AttentionCore
from .core import Composite, Hook
from .layer import ChannelAffine, Prepend, Product, Scale, Sum
from .rules import (
    AlphaBeta,
    AttentionAttnLRP,
    AttentionConservative,
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
    ZBox,
    ZPlus,
)
from .torchvision_types import torchvision_types
from .types import Activation, AvgPool, BatchNorm, Convolution, LayerNorm, Linear

__all__ = [
    "COMPOSITES",
    "AttentionConservativeGammaBox",
    "BetaSmooth",
    "DeconvNet",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "ExcitationBackprop",
    "GuidedBackprop",
    "LayerMapComposite",
    "MixedComposite",
    "NameLayerMapComposite",
    "NameMapComposite",
    "SpecialFirstLayerMapComposite",
    "layer_map_base",
    "register_composite",
]

LayerMap = list[tuple[Any, Hook]]
"""A list of ``(layer type or tuple of types, rule)`` pairs; the first matching pair wins."""

NameMap = list[tuple[Sequence[str], Hook]]
"""A list of ``(module names, rule)`` pairs; the first pair naming the module wins."""

COMPOSITES: dict[str, type[Composite]] = {}
"""The named preset composites, by registry name."""


def register_composite(name: str) -> Callable[[type[Composite]], type[Composite]]:
    """Return a class decorator that adds a composite class to :data:`COMPOSITES` as ``name``.

    Parameters
    ----------
    name : str
        The registry name, e.g. ``"epsilon_plus"``.

    Returns
    -------
    callable
        The decorator; it returns the class unchanged.

    Raises
    ------
    ValueError
        If ``name`` is already registered for a different class.
    """

    def register(cls: type[Composite]) -> type[Composite]:
        if COMPOSITES.get(name, cls) is not cls:
            raise ValueError(
                f"a composite is already registered as {name!r} ({COMPOSITES[name].__name__}); "
                "choose another name"
            )
        COMPOSITES[name] = cls
        return cls

    return register


def layer_map_base(stabilizer: float | Callable = 1e-6) -> LayerMap:
    """Return the layer map shared by the LRP presets for layers without weights.

    Activations, batch normalisation, layer scales and input transforms pass relevance unchanged,
    sums (residual additions, added constants), prepended tokens and average pooling distribute
    it in proportion to their inputs (:class:`~.rules.Norm`), gated products give it to the signal
    (:class:`~.rules.SignalTakesAll`), layer norms are explained as the linear maps they are
    with their standard deviation held constant (:class:`~.rules.LayerNormEpsilon`) and attention
    cores with their attention weights held constant (:class:`~.rules.AttentionConservative`).

    Parameters
    ----------
    stabilizer : float or callable, optional
        The stabilizer of the :class:`~.rules.Norm`, :class:`~.rules.LayerNormEpsilon` and
        :class:`~.rules.AttentionConservative` rules.

    Returns
    -------
    list of (type, Hook)
        The layer map.
    """
    return [
        (Activation, Pass()),
        ((Sum, Prepend), Norm(stabilizer=stabilizer)),
        (AvgPool, Norm(stabilizer=stabilizer)),
        (BatchNorm, Pass()),
        (LayerNorm, LayerNormEpsilon(epsilon=stabilizer)),
        (Product, SignalTakesAll()),
        ((Scale, ChannelAffine), Pass()),
        (AttentionCore, AttentionConservative(epsilon=stabilizer)),
    ]


def _first_match(layer_map: LayerMap, module: nn.Module) -> Hook | None:
    """Return the rule of the first pair in ``layer_map`` whose types ``module`` matches."""
    for types, hook in layer_map:
        if isinstance(module, types):
            return hook
    return None


class LayerMapComposite(Composite):
    """A composite that chooses each module's rule by its type.

    Parameters
    ----------
    layer_map : list of (type or tuple of type, Hook)
        Pairs of layer types and rules; a module gets the rule of the first pair it matches.
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(self, layer_map: LayerMap, canonizers: list | None = None) -> None:
        self.layer_map = list(layer_map)
        super().__init__(module_map=self.mapping, canonizers=canonizers)

    def mapping(self, ctx: dict, name: str, module: nn.Module) -> Hook | None:
        """Return the rule of the first layer-map entry that ``module`` matches, or None."""
        return _first_match(self.layer_map, module)


class SpecialFirstLayerMapComposite(LayerMapComposite):
    """A layer-type composite with a separate map for the first matching layer.

    Modules are visited in the order of ``model.named_modules()``; the first module that matches
    an entry of ``first_map`` gets that entry's rule, every other module is looked up in
    ``layer_map``.

    Parameters
    ----------
    layer_map : list of (type or tuple of type, Hook)
        Pairs of layer types and rules for all but the first layer.
    first_map : list of (type or tuple of type, Hook)
        Pairs of layer types and rules for the first layer that matches one of them.
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self, layer_map: LayerMap, first_map: LayerMap, canonizers: list | None = None
    ) -> None:
        self.first_map = list(first_map)
        super().__init__(layer_map=layer_map, canonizers=canonizers)

    def mapping(self, ctx: dict, name: str, module: nn.Module) -> Hook | None:
        """Return the first-layer rule for the first match of ``first_map``, else a layer rule."""
        if not ctx.get("first_layer_visited", False):
            hook = _first_match(self.first_map, module)
            if hook is not None:
                ctx["first_layer_visited"] = True
                return hook
        return super().mapping(ctx, name, module)


class NameMapComposite(Composite):
    """A composite that chooses each module's rule by its name in the model.

    Parameters
    ----------
    name_map : list of (sequence of str, Hook)
        Pairs of module names (as in ``model.named_modules()``) and rules; a module gets the rule
        of the first pair that lists its name.
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached. Names refer to the canonized model.
    """

    def __init__(self, name_map: NameMap, canonizers: list | None = None) -> None:
        self.name_map = [(tuple(names), hook) for names, hook in name_map]
        super().__init__(module_map=self.mapping, canonizers=canonizers)

    def mapping(self, ctx: dict, name: str, module: nn.Module) -> Hook | None:
        """Return the rule of the first name-map entry that lists ``name``, or None."""
        for names, hook in self.name_map:
            if name in names:
                return hook
        return None


class MixedComposite(Composite):
    """A composite that asks several composites in turn; the first rule returned wins.

    Each composite keeps its own context (e.g. whether its first layer has been seen) and is asked
    about every module. The canonizers are ``canonizers`` followed by those of each composite, in
    order.

    Parameters
    ----------
    composites : list of Composite
        The composites to ask, in order of priority.
    canonizers : list of Canonizer, optional
        Further canonizers, applied before those of the composites.
    """

    def __init__(self, composites: list[Composite], canonizers: list | None = None) -> None:
        self.composites = list(composites)
        combined = list(canonizers or []) + [
            canonizer for composite in self.composites for canonizer in composite.canonizers
        ]
        super().__init__(module_map=self.mapping, canonizers=combined)

    def mapping(self, ctx: dict, name: str, module: nn.Module) -> Hook | None:
        """Return the rule of the first composite that gives ``module`` one, or None.

        Every composite sees every module, also one an earlier composite gives a rule (as in
        zennit): a special-first-layer composite after a name map so counts a first layer the
        name map took, and gives its first-layer rule to no later layer.
        """
        hooks = [
            composite.module_map(ctx.setdefault(composite, {}), name, module)
            for composite in self.composites
        ]
        return next((hook for hook in hooks if hook is not None), None)


class NameLayerMapComposite(MixedComposite):
    """A composite that chooses by module name first and by layer type for the rest.

    Parameters
    ----------
    name_map : list of (sequence of str, Hook), optional
        Pairs of module names and rules, which take priority.
    layer_map : list of (type or tuple of type, Hook), optional
        Pairs of layer types and rules for modules not named in ``name_map``.
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        name_map: NameMap | None = None,
        layer_map: LayerMap | None = None,
        canonizers: list | None = None,
    ) -> None:
        super().__init__(
            composites=[NameMapComposite(name_map or []), LayerMapComposite(layer_map or [])],
            canonizers=canonizers,
        )


def _epsilon_conv_map(
    conv_rule: Hook, epsilon: float | Callable, stabilizer: float | Callable, zero_params
) -> LayerMap:
    """Return the base map plus ``conv_rule`` for convolutions and Epsilon for dense layers."""
    return [
        *layer_map_base(stabilizer),
        (Convolution, conv_rule),
        (nn.Linear, Epsilon(epsilon=epsilon, zero_params=zero_params)),
    ]


@register_composite("epsilon_gamma_box")
class EpsilonGammaBox(SpecialFirstLayerMapComposite):
    """Gamma for convolutions, Epsilon for dense layers and ZBox for the first convolution.

    Parameters
    ----------
    low, high : float or torch.Tensor
        The lowest and highest possible input values (after preprocessing), for ZBox.
    epsilon : float or callable, optional
        The epsilon of the dense layers' Epsilon rule.
    gamma : float, optional
        The gamma of the convolutions' Gamma rule.
    stabilizer : float or callable, optional
        The stabilizer of all other rules.
    layer_map, first_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    zero_params : str or list of str, optional
        Parameter names treated as zero by the rules with weights (e.g. ``"bias"``).
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        low,
        high,
        epsilon: float | Callable = 1e-6,
        gamma: float = 0.25,
        stabilizer: float | Callable = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        conv_rule = Gamma(gamma=gamma, stabilizer=stabilizer, zero_params=zero_params)
        layer_map = (layer_map or []) + _epsilon_conv_map(
            conv_rule, epsilon, stabilizer, zero_params
        )
        first_map = (first_map or []) + [
            (Convolution, ZBox(low=low, high=high, stabilizer=stabilizer, zero_params=zero_params))
        ]
        super().__init__(layer_map=layer_map, first_map=first_map, canonizers=canonizers)


@register_composite("vit_cp")
class AttentionConservativeGammaBox(EpsilonGammaBox):
    """For transformers: CP-LRP on attention, Gamma on MLPs and convolutions, ZBox on the first.

    :class:`EpsilonGammaBox` with two changes: attention cores get
    :class:`~.rules.AttentionConservative` (the attention weights held constant) with
    ``epsilon``, and the linear layers inside an MLP block (torchvision's ``MLP`` of Vision and Swin
    Transformers, MaxViT's ``mlp_layer``) get Gamma like the convolutions. The other linear layers
    (query, key, value and output projections, the head) keep Epsilon, layer norms get
    :class:`~.rules.LayerNormEpsilon`, activations pass relevance on, and the first convolution
    (the patch embedding) gets ZBox. The parameters are :class:`EpsilonGammaBox`'s.
    """

    def __init__(
        self,
        low,
        high,
        epsilon: float | Callable = 1e-6,
        gamma: float = 0.25,
        stabilizer: float | Callable = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        self.mlp_rule = Gamma(gamma=gamma, stabilizer=stabilizer, zero_params=zero_params)
        attention = [(AttentionCore, AttentionConservative(epsilon=epsilon))]
        super().__init__(
            low,
            high,
            epsilon,
            gamma,
            stabilizer,
            (layer_map or []) + attention,
            first_map,
            zero_params,
            canonizers,
        )

    def mapping(self, ctx: dict, name: str, module: nn.Module) -> Hook | None:
        """Return Gamma for the linear layers of an MLP block, else the layer-map rule.

        Modules are visited in pre-order, so an MLP block is seen before its layers.
        """
        block = _mlp_block(module)
        if block is not None:
            layers = ctx.setdefault("mlp_linears", set())
            layers.update(id(layer) for layer in block.modules() if isinstance(layer, nn.Linear))
        if id(module) in ctx.get("mlp_linears", ()):
            return self.mlp_rule
        return super().mapping(ctx, name, module)


def _mlp_block(module: nn.Module) -> nn.Module | None:
    """Return the MLP block ``module`` is or holds as its MLP, else None.

    That is torchvision's ``MLP`` (ViT, Swin) or the ``mlp_layer`` of MaxViT's attention layers.
    """
    if isinstance(module, torchvision_types("ops", "MLP")):
        return module
    if isinstance(module, torchvision_types("models.maxvit", "PartitionAttentionLayer")):
        return module.mlp_layer
    return None


@register_composite("vit_attnlrp")
class AttentionEpsilon(LayerMapComposite):
    """For transformers, as AttnLRP: its attention rule and Epsilon on every layer with weights.

    Attention cores get :class:`~.rules.AttentionAttnLRP` (relevance to queries, keys and values;
    the softmax absorbs some, so relevance is not conserved), convolutions and linear layers
    Epsilon, layer norms :class:`~.rules.LayerNormEpsilon`, and activations pass relevance on.

    Parameters
    ----------
    epsilon : float or callable, optional
        The epsilon of the Epsilon and attention rules.
    stabilizer : float or callable, optional
        The stabilizer of all other rules.
    layer_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    zero_params : str or list of str, optional
        Parameter names treated as zero by the rules with weights (e.g. ``"bias"``).
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        epsilon: float | Callable = 1e-6,
        stabilizer: float | Callable = 1e-6,
        layer_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        weighted = Epsilon(epsilon=epsilon, zero_params=zero_params)
        layer_map = (
            (layer_map or [])
            + [(AttentionCore, AttentionAttnLRP(epsilon=epsilon))]
            + _epsilon_conv_map(weighted, epsilon, stabilizer, zero_params)
        )
        super().__init__(layer_map=layer_map, canonizers=canonizers)


@register_composite("epsilon_plus")
class EpsilonPlus(LayerMapComposite):
    """ZPlus for convolutions and Epsilon for dense layers.

    Parameters
    ----------
    epsilon : float or callable, optional
        The epsilon of the dense layers' Epsilon rule.
    stabilizer : float or callable, optional
        The stabilizer of all other rules.
    layer_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    zero_params : str or list of str, optional
        Parameter names treated as zero by the rules with weights (e.g. ``"bias"``).
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        epsilon: float | Callable = 1e-6,
        stabilizer: float | Callable = 1e-6,
        layer_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        conv_rule = ZPlus(stabilizer=stabilizer, zero_params=zero_params)
        layer_map = (layer_map or []) + _epsilon_conv_map(
            conv_rule, epsilon, stabilizer, zero_params
        )
        super().__init__(layer_map=layer_map, canonizers=canonizers)


@register_composite("epsilon_alpha2_beta1")
class EpsilonAlpha2Beta1(LayerMapComposite):
    """AlphaBeta (alpha 2, beta 1) for convolutions and Epsilon for dense layers.

    Parameters
    ----------
    epsilon : float or callable, optional
        The epsilon of the dense layers' Epsilon rule.
    stabilizer : float or callable, optional
        The stabilizer of all other rules.
    layer_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    zero_params : str or list of str, optional
        Parameter names treated as zero by the rules with weights (e.g. ``"bias"``).
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        epsilon: float | Callable = 1e-6,
        stabilizer: float | Callable = 1e-6,
        layer_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        conv_rule = AlphaBeta(alpha=2.0, beta=1.0, stabilizer=stabilizer, zero_params=zero_params)
        layer_map = (layer_map or []) + _epsilon_conv_map(
            conv_rule, epsilon, stabilizer, zero_params
        )
        super().__init__(layer_map=layer_map, canonizers=canonizers)


@register_composite("epsilon_plus_flat")
class EpsilonPlusFlat(SpecialFirstLayerMapComposite):
    """Like :class:`EpsilonPlus`, with Flat for the first convolution or dense layer.

    Parameters
    ----------
    epsilon : float or callable, optional
        The epsilon of the dense layers' Epsilon rule.
    stabilizer : float or callable, optional
        The stabilizer of all other rules.
    layer_map, first_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    zero_params : str or list of str, optional
        Parameter names treated as zero by the rules with weights (e.g. ``"bias"``).
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        epsilon: float | Callable = 1e-6,
        stabilizer: float | Callable = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        conv_rule = ZPlus(stabilizer=stabilizer, zero_params=zero_params)
        layer_map = (layer_map or []) + _epsilon_conv_map(
            conv_rule, epsilon, stabilizer, zero_params
        )
        first_map = (first_map or []) + [
            (Linear, Flat(stabilizer=stabilizer, zero_params=zero_params))
        ]
        super().__init__(layer_map=layer_map, first_map=first_map, canonizers=canonizers)


@register_composite("epsilon_alpha2_beta1_flat")
class EpsilonAlpha2Beta1Flat(SpecialFirstLayerMapComposite):
    """Like :class:`EpsilonAlpha2Beta1`, with Flat for the first convolution or dense layer.

    Parameters
    ----------
    epsilon : float or callable, optional
        The epsilon of the dense layers' Epsilon rule.
    stabilizer : float or callable, optional
        The stabilizer of all other rules.
    layer_map, first_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    zero_params : str or list of str, optional
        Parameter names treated as zero by the rules with weights (e.g. ``"bias"``).
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        epsilon: float | Callable = 1e-6,
        stabilizer: float | Callable = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        conv_rule = AlphaBeta(alpha=2.0, beta=1.0, stabilizer=stabilizer, zero_params=zero_params)
        layer_map = (layer_map or []) + _epsilon_conv_map(
            conv_rule, epsilon, stabilizer, zero_params
        )
        first_map = (first_map or []) + [
            (Linear, Flat(stabilizer=stabilizer, zero_params=zero_params))
        ]
        super().__init__(layer_map=layer_map, first_map=first_map, canonizers=canonizers)


@register_composite("deconvnet")
class DeconvNet(LayerMapComposite):
    """DeconvNet: ReLUs pass on only the positive part of the incoming gradient.

    Parameters
    ----------
    layer_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(self, layer_map: LayerMap | None = None, canonizers: list | None = None) -> None:
        layer_map = (layer_map or []) + [(nn.ReLU, ReLUDeconvNet())]
        super().__init__(layer_map=layer_map, canonizers=canonizers)


@register_composite("guided_backprop")
class GuidedBackprop(LayerMapComposite):
    """Guided backpropagation: ReLUs pass on the gradient only where it and the input are positive.

    Parameters
    ----------
    layer_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(self, layer_map: LayerMap | None = None, canonizers: list | None = None) -> None:
        layer_map = (layer_map or []) + [(nn.ReLU, ReLUGuidedBackprop())]
        super().__init__(layer_map=layer_map, canonizers=canonizers)


@register_composite("excitation_backprop")
class ExcitationBackprop(LayerMapComposite):
    """Excitation backprop: ZPlus for every layer with weights, Norm for sums and average pooling.

    Parameters
    ----------
    stabilizer : float or callable, optional
        The stabilizer of all rules.
    layer_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    zero_params : str or list of str, optional
        Parameter names treated as zero by the rules with weights (e.g. ``"bias"``).
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        stabilizer: float | Callable = 1e-6,
        layer_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        layer_map = (layer_map or []) + [
            (Sum, Norm(stabilizer=stabilizer)),
            (AvgPool, Norm(stabilizer=stabilizer)),
            (Linear, ZPlus(stabilizer=stabilizer, zero_params=zero_params)),
        ]
        super().__init__(layer_map=layer_map, canonizers=canonizers)


@register_composite("beta_smooth")
class BetaSmooth(LayerMapComposite):
    """ReLUs propagate the gradient of a softplus with sharpness ``beta_smooth`` instead.

    Parameters
    ----------
    beta_smooth : float, optional
        The softplus sharpness; larger values are closer to the plain ReLU gradient.
    layer_map : list of (type, Hook), optional
        Entries placed before the preset's own, so they take priority.
    zero_params : str or list of str, optional
        Accepted for a uniform signature; no rule of this preset has parameters.
    canonizers : list of Canonizer, optional
        Canonizers applied before the rules are attached.
    """

    def __init__(
        self,
        beta_smooth: float = 10.0,
        layer_map: LayerMap | None = None,
        zero_params: str | list[str] | None = None,
        canonizers: list | None = None,
    ) -> None:
        layer_map = (layer_map or []) + [(nn.ReLU, ReLUBetaSmooth(beta_smooth=beta_smooth))]
        super().__init__(layer_map=layer_map, canonizers=canonizers)
