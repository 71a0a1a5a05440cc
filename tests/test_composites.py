"""Test the composites.

Covered: the layer assignment of every preset, first-layer maps, name maps, mixing, the registry,
and zennit 0.5.1's presets as an oracle.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_desktop_core import composites
from lrp_desktop_core.attention import AttentionCore
from lrp_desktop_core.composites import (
    COMPOSITES,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    MixedComposite,
    NameLayerMapComposite,
    NameMapComposite,
    SpecialFirstLayerMapComposite,
    layer_map_base,
    register_composite,
)
from lrp_desktop_core.layer import ChannelAffine, Prepend, Product, Scale, Sum
from lrp_desktop_core.names import PRESETS
from lrp_desktop_core.rules import (
    AlphaBeta,
    AttentionConservative,
    Epsilon,
    Flat,
    Gamma,
    LayerNormEpsilon,
    Norm,
    Pass,
    ReLUGuidedBackprop,
    SignalTakesAll,
    WSquare,
    ZBox,
    ZPlus,
)

# Tiny tensors: one thread avoids thread start-up and waits that dominate on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


class Residual(nn.Module):
    """A block with a residual sum through :class:`Sum`."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.sum = Sum()

    def forward(self, x):
        return self.sum(torch.stack([self.conv(x), x], dim=-1))


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 0
        nn.BatchNorm2d(4),  # 1
        nn.ReLU(),  # 2
        Residual(),  # 3 (3.conv, 3.sum)
        nn.ReLU(),  # 4
        nn.AvgPool2d(2),  # 5
        nn.MaxPool2d(2),  # 6
        nn.Flatten(),  # 7
        nn.Linear(4 * 2 * 2, 6),  # 8
        nn.ReLU(),  # 9
        nn.Dropout(),  # 10
        nn.Linear(6, 3),  # 11
    ).eval()


def assignment(composite, model: nn.Module) -> dict:
    """Return the rule template the composite gives each module, walked as ``register`` does."""
    ctx: dict = {}
    return {name: composite.module_map(ctx, name, module) for name, module in model.named_modules()}


def rule_names(composite, model: nn.Module) -> dict[str, str]:
    return {
        name: type(rule).__name__
        for name, rule in assignment(composite, model).items()
        if rule is not None
    }


BASE = {"1": "Pass", "2": "Pass", "3.sum": "Norm", "4": "Pass", "5": "Norm", "9": "Pass"}
EXPECTED = {
    "epsilon_gamma_box": {
        **BASE, "0": "ZBox", "3.conv": "Gamma", "8": "Epsilon", "11": "Epsilon",
    },
    "vit_cp": {  # a CNN without attention or MLP blocks: the same as epsilon_gamma_box
        **BASE, "0": "ZBox", "3.conv": "Gamma", "8": "Epsilon", "11": "Epsilon",
    },
    "vit_attnlrp": {  # without attention: Epsilon on every layer with weights
        **BASE, "0": "Epsilon", "3.conv": "Epsilon", "8": "Epsilon", "11": "Epsilon",
    },
    "epsilon_plus": {**BASE, "0": "ZPlus", "3.conv": "ZPlus", "8": "Epsilon", "11": "Epsilon"},
    "epsilon_alpha2_beta1": {
        **BASE, "0": "AlphaBeta", "3.conv": "AlphaBeta", "8": "Epsilon", "11": "Epsilon",
    },
    "epsilon_plus_flat": {
        **BASE, "0": "Flat", "3.conv": "ZPlus", "8": "Epsilon", "11": "Epsilon",
    },
    "epsilon_alpha2_beta1_flat": {
        **BASE, "0": "Flat", "3.conv": "AlphaBeta", "8": "Epsilon", "11": "Epsilon",
    },
    "deconvnet": {"2": "ReLUDeconvNet", "4": "ReLUDeconvNet", "9": "ReLUDeconvNet"},
    "guided_backprop": {
        "2": "ReLUGuidedBackprop", "4": "ReLUGuidedBackprop", "9": "ReLUGuidedBackprop",
    },
    "excitation_backprop": {
        "0": "ZPlus", "3.conv": "ZPlus", "3.sum": "Norm", "5": "Norm", "8": "ZPlus", "11": "ZPlus",
    },
    "beta_smooth": {"2": "ReLUBetaSmooth", "4": "ReLUBetaSmooth", "9": "ReLUBetaSmooth"},
}  # fmt: skip


def build(name: str, **kwargs):
    if name in ("epsilon_gamma_box", "vit_cp"):
        kwargs = {"low": -3.0, "high": 3.0, **kwargs}
    return COMPOSITES[name](**kwargs)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_assigns_the_expected_rule_to_each_layer(name):
    assert rule_names(build(name), small_net()) == EXPECTED[name]


def test_registry_holds_the_presets_with_descriptions():
    assert set(COMPOSITES) == set(EXPECTED)
    assert set(PRESETS) == set(COMPOSITES)
    assert all(40 < len(PRESETS.description(name)) < 400 for name in COMPOSITES)
    assert COMPOSITES["epsilon_plus"] is EpsilonPlus


def test_register_composite_adds_a_name_and_refuses_a_taken_one(monkeypatch):
    monkeypatch.setattr(composites, "COMPOSITES", dict(COMPOSITES))

    @register_composite("my_preset")
    class MyPreset(LayerMapComposite):
        pass

    assert composites.COMPOSITES["my_preset"] is MyPreset
    assert register_composite("my_preset")(MyPreset) is MyPreset  # same class again: fine
    with pytest.raises(ValueError, match="epsilon_plus"):
        register_composite("epsilon_plus")(MyPreset)


def test_preset_parameters_reach_the_rules():
    low, high = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    rules = assignment(
        EpsilonGammaBox(
            low=low, high=high, epsilon=0.5, gamma=2.0, stabilizer=1e-3, zero_params="bias"
        ),
        small_net(),
    )
    assert rules["0"].low is low and rules["0"].high is high
    assert rules["0"].zero_params == "bias"
    assert rules["3.conv"].gamma == 2.0 and rules["3.conv"].stabilizer.epsilon == 1e-3
    assert rules["8"].epsilon == 0.5 and rules["8"].zero_params == "bias"
    assert rules["5"].stabilizer.epsilon == 1e-3
    flat_rules = assignment(EpsilonPlusFlat(stabilizer=1e-2, zero_params="weight"), small_net())
    assert flat_rules["0"].stabilizer.epsilon == 1e-2 and flat_rules["0"].zero_params == "weight"
    alpha_beta = assignment(COMPOSITES["epsilon_alpha2_beta1"](), small_net())["3.conv"]
    assert (alpha_beta.alpha, alpha_beta.beta) == (2.0, 1.0)
    smooth = assignment(COMPOSITES["beta_smooth"](beta_smooth=3.0), small_net())["2"]
    assert smooth.beta_smooth == 3.0


def test_presets_keep_their_canonizers():
    canonizers = [object()]
    for name in EXPECTED:
        assert build(name, canonizers=canonizers).canonizers == canonizers


def test_user_layer_map_and_first_map_come_before_the_defaults():
    composite = EpsilonPlusFlat(
        layer_map=[(nn.ReLU, ReLUGuidedBackprop()), (nn.Linear, WSquare())],
        first_map=[(nn.Conv2d, ZBox(-1.0, 1.0))],
    )
    names = rule_names(composite, small_net())
    assert names["0"] == "ZBox"
    assert names["2"] == names["9"] == "ReLUGuidedBackprop"
    assert names["8"] == names["11"] == "WSquare"
    assert names["1"] == "Pass"


def test_first_map_applies_to_the_first_matching_layer_only():
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Conv1d(1, 1, 1))
    names = rule_names(EpsilonPlusFlat(), mlp)
    assert names == {"0": "Flat", "1": "Pass", "2": "Epsilon", "3": "ZPlus"}
    # the box rule is for convolutions: a leading dense layer does not take it
    names = rule_names(EpsilonGammaBox(low=-1.0, high=1.0), mlp)
    assert names == {"0": "Epsilon", "1": "Pass", "2": "Epsilon", "3": "ZBox"}


def test_special_first_layer_map_composite_with_its_own_maps():
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(nn.Linear, Epsilon())], first_map=[(nn.Linear, Flat())]
    )
    mlp = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    assert rule_names(composite, mlp) == {"0": "Flat", "1": "Epsilon", "2": "Epsilon"}
    assert rule_names(composite, mlp) == {"0": "Flat", "1": "Epsilon", "2": "Epsilon"}


def test_name_map_composite_chooses_by_name_first_entry_winning():
    composite = NameMapComposite(
        [(["0", "8"], Epsilon()), (["8", "3.conv"], ZPlus()), (("3",), Gamma())]
    )
    names = rule_names(composite, small_net())
    assert names == {"0": "Epsilon", "8": "Epsilon", "3.conv": "ZPlus", "3": "Gamma"}


def test_mixed_composite_asks_in_order_with_separate_contexts():
    first = SpecialFirstLayerMapComposite(layer_map=[], first_map=[(nn.Linear, Flat())])
    second = SpecialFirstLayerMapComposite(
        layer_map=[(nn.Linear, Epsilon())], first_map=[(nn.Conv1d, WSquare())]
    )
    net = nn.Sequential(
        nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2), nn.Conv1d(1, 1, 1), nn.Conv1d(1, 1, 1)
    )
    names = rule_names(MixedComposite([first, second]), net)
    assert names == {"0": "Flat", "2": "Epsilon", "3": "WSquare"}
    names = rule_names(MixedComposite([second, first]), net)
    assert names == {"0": "Epsilon", "2": "Epsilon", "3": "WSquare"}


def test_mixed_composite_joins_canonizers_in_order():
    a, b, c = object(), object(), object()
    mixed = MixedComposite(
        [LayerMapComposite([], canonizers=[a]), LayerMapComposite([], canonizers=[b])],
        canonizers=[c],
    )
    assert mixed.canonizers == [c, a, b]


def test_name_layer_map_composite_prefers_names():
    composite = NameLayerMapComposite(
        name_map=[(["8"], ZPlus())], layer_map=[(nn.Linear, Epsilon()), (nn.ReLU, Pass())]
    )
    names = rule_names(composite, small_net())
    assert names == {"8": "ZPlus", "11": "Epsilon", "2": "Pass", "4": "Pass", "9": "Pass"}
    assert rule_names(NameLayerMapComposite(), small_net()) == {}


def test_layer_map_base_and_its_stabilizer():
    base = layer_map_base(stabilizer=0.25)
    assert [type(rule) for _, rule in base] == [
        Pass,
        Norm,
        Norm,
        Pass,
        LayerNormEpsilon,
        SignalTakesAll,
        Pass,
        AttentionConservative,
    ]
    assert base[1][0] == (Sum, Prepend) and base[5][0] is Product
    assert base[6][0] == (Scale, ChannelAffine)
    assert base[1][1].stabilizer.epsilon == 0.25 and base[4][1].stabilizer.epsilon == 0.25
    assert base[7][0] is AttentionCore and base[7][1].stabilizer.epsilon == 0.25


def test_preset_attribution_runs_and_leaves_the_model_untouched():
    net = small_net().double()
    state = {key: value.clone() for key, value in net.state_dict().items()}
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    for name in EXPECTED:
        with build(name).context(net) as hooked:
            output = hooked(x)
            (relevance,) = torch.autograd.grad(output, x, torch.eye(3, dtype=torch.float64)[:2])
        assert relevance.shape == x.shape and torch.isfinite(relevance).all()
    assert all(torch.equal(net.state_dict()[key], value) for key, value in state.items())
    assert not any(module._forward_hooks for module in net.modules())


def test_alpha_beta_conv_rules_conserve_on_a_bias_free_net():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 3, bias=False)
    ).double()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    composite = LayerMapComposite([(nn.ReLU, Pass()), (nn.Conv2d, AlphaBeta(alpha=1.0, beta=0.0))])
    with composite.context(net):
        output = net(x)
        (relevance,) = torch.autograd.grad(output, x, output.clamp(min=0))
    torch.testing.assert_close(relevance.sum(), output.clamp(min=0).sum())


# ---------------------------------------------------------------- zennit 0.5.1 as an oracle


def plain_net() -> nn.Sequential:
    """Build a net of layers zennit and this project both know (no Sum: its class differs)."""
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    )
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
    return net.double().eval()


@pytest.mark.oracle
@pytest.mark.parametrize(
    "name", [name for name in EXPECTED if not name.startswith("vit_")]
)  # the ViT presets: not in zennit
def test_preset_matches_zennit(name):
    zennit_composites = pytest.importorskip("zennit.composites")
    net = plain_net()
    kwargs = {"low": -3.0, "high": 3.0} if name == "epsilon_gamma_box" else {}
    theirs_composite = zennit_composites.COMPOSITES[name](**kwargs)
    ours_composite = COMPOSITES[name](**kwargs)
    assert rule_names(ours_composite, net) == rule_names(theirs_composite, net)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    target = torch.eye(3, dtype=torch.float64)[[0, 2]]
    results = []
    for composite in (ours_composite, theirs_composite):
        leaf = x.clone().requires_grad_()
        with composite.context(net) as hooked:
            (relevance,) = torch.autograd.grad(hooked(leaf), leaf, target)
        results.append(relevance)
    torch.testing.assert_close(results[0], results[1], rtol=1e-9, atol=1e-12)
