"""The rules for products and layer norms, and the helper modules canonizers insert for them.

:class:`SignalTakesAll` and :class:`UniformSplit` are checked on :class:`~.layer.Product` with a
gate of the signal's shape and with a broadcast (N, C, 1, 1) gate, :class:`LayerNormEpsilon`
against the epsilon rule on the explicit Jacobian of the layer norm with its standard deviation
held constant. Each rule conserves relevance on bias-free input, in the rule map catalogue and in
a small ConvNeXt- and squeeze-and-excitation-like network explained end to end.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.convnext import CNBlock, LayerNorm2d
from torchvision.ops import SqueezeExcitation

from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.composites import COMPOSITES, LayerMapComposite, layer_map_base
from lrp_desktop_core.coverage import rule_coverage
from lrp_desktop_core.layer import ChannelAffine, Product, Scale, Sum
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RULE_CHOICES, RuleChoice, RuleMap
from lrp_desktop_core.rules import Epsilon, LayerNormEpsilon, Pass, SignalTakesAll, UniformSplit
from lrp_desktop_core.types import Linear

TINY = 1e-30
"""A stabilizer that takes no relevance, for conservation checks."""


# Tiny tensors: one thread avoids thread start-up and waits that dominate on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def attribute(rule, module: nn.Module, *inputs, relevance: torch.Tensor) -> tuple:
    """Return the relevance of each tensor input when ``relevance`` arrives at ``module``'s output.

    Non-tensor arguments are passed on as they are.
    """
    handles = rule.copy().register(module)
    try:
        args = [x.clone().requires_grad_() if isinstance(x, torch.Tensor) else x for x in inputs]
        leaves = [x for x in args if isinstance(x, torch.Tensor)]
        return torch.autograd.grad(module(*args), leaves, relevance)
    finally:
        handles.remove()


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


# ---------------------------------------------------------------- helper modules


def test_product_multiplies_signal_and_gate_as_torch_broadcasts():
    signal, gate = randn(2, 3, 4, 4), randn(2, 3, 1, 1)
    assert torch.equal(Product()(signal, gate), signal * gate)
    assert torch.equal(Product()(gate, signal), gate * signal)
    assert list(Product().parameters()) == [] and Product().state_dict() == {}


def test_scale_shares_its_owners_parameter():
    weight = nn.Parameter(randn(3, 1, 1))
    scale = Scale(weight)
    x = randn(2, 3, 4, 4)
    assert scale.weight is weight and list(scale.parameters()) == [weight]
    assert torch.equal(scale(x), weight * x)


def test_scale_of_a_plain_tensor_keeps_it_out_of_the_state():
    factor = randn(3, 1, 1)
    scale = Scale(factor)
    assert scale.weight is factor
    assert list(scale.parameters()) == [] and scale.state_dict() == {}
    ones = torch.ones(1, 3, 2, 2, dtype=torch.float64)
    assert torch.equal(scale(ones), factor.expand(1, 3, 2, 2))


def test_channel_affine_maps_each_channel():
    scale, shift = [2.0, -0.5, 1.0], [0.25, 1.0, -3.0]
    affine = ChannelAffine(scale, shift)
    x = randn(2, 3, 4, 5)
    expected = torch.stack([x[:, c] * scale[c] + shift[c] for c in range(3)], dim=1)
    torch.testing.assert_close(affine(x), expected, rtol=0, atol=0)
    assert affine.state_dict() == {} and list(affine.parameters()) == []


def test_channel_affine_in_float64_uses_its_constants_in_float64():
    """A float64 model sees GoogLeNet's input-transform constants unrounded.

    Constants such as 0.229 / 0.5 are rounded by about 1e-8 in float32.
    """
    scale, shift = [0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5], [-0.03, -0.088, -0.188]
    x = randn(1, 3, 2, 2)
    expected = torch.stack([x[:, c] * scale[c] + shift[c] for c in range(3)], dim=1)
    difference = (ChannelAffine(scale, shift)(x) - expected).abs().max().item()
    assert difference <= 1e-15, f"{difference:.2e}"


def test_channel_affine_maps_bounds_and_swaps_them_under_a_negative_scale():
    affine = ChannelAffine([2.0, -0.5, 1.0], [0.25, 1.0, -3.0])
    low = torch.tensor([-1.0, -2.0, 0.0]).view(1, 3, 1, 1)
    high = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    new_low, new_high = affine.map_bounds(low, high)
    assert new_low.flatten().tolist() == [-1.75, 0.0, -3.0]
    assert new_high.flatten().tolist() == [2.25, 2.0, 1.0]
    # every transformed value of the box lies within the mapped bounds
    x = low + (high - low) * torch.rand(1, 3, 8, 8)
    assert (affine(x) >= new_low).all() and (affine(x) <= new_high).all()


def test_channel_affine_needs_one_shift_per_scale():
    with pytest.raises(ValueError, match="one shift per scale"):
        ChannelAffine([1.0, 2.0], [0.0])


# ---------------------------------------------------------------- product rules

GATE_SHAPES = {"same shape": (2, 3, 4, 4), "broadcast gate": (2, 3, 1, 1)}


@pytest.mark.parametrize("gate_shape", list(GATE_SHAPES.values()), ids=list(GATE_SHAPES))
def test_signal_takes_all(gate_shape):
    signal, gate = randn(2, 3, 4, 4), randn(*gate_shape)
    relevance = randn(2, 3, 4, 4)
    to_signal, to_gate = attribute(SignalTakesAll(), Product(), signal, gate, relevance=relevance)
    assert torch.equal(to_signal, relevance)
    assert to_gate.shape == gate.shape and not to_gate.any()


def test_signal_takes_all_sums_over_the_dimensions_a_signal_was_broadcast_along():
    signal, gate = randn(2, 3, 1, 1), randn(2, 3, 4, 4)
    relevance = randn(2, 3, 4, 4)
    to_signal, to_gate = attribute(SignalTakesAll(), Product(), signal, gate, relevance=relevance)
    torch.testing.assert_close(to_signal, relevance.sum(dim=(2, 3), keepdim=True))
    assert to_gate.shape == gate.shape and not to_gate.any()


@pytest.mark.parametrize("gate_shape", list(GATE_SHAPES.values()), ids=list(GATE_SHAPES))
def test_uniform_split(gate_shape):
    signal, gate = randn(2, 3, 4, 4), randn(*gate_shape)
    relevance = randn(2, 3, 4, 4)
    to_signal, to_gate = attribute(UniformSplit(), Product(), signal, gate, relevance=relevance)
    torch.testing.assert_close(to_signal, relevance / 2, rtol=0, atol=0)
    torch.testing.assert_close(to_gate, (relevance / 2).sum_to_size(gate_shape))


def test_uniform_split_counts_tensor_inputs_only():
    class Triple(nn.Module):
        def forward(self, a, b, factor, c):
            return a * b * c * factor

    inputs = (randn(2, 3), randn(2, 3), 2.0, randn(2, 1))
    relevance = randn(2, 3)
    shares = attribute(UniformSplit(), Triple(), *inputs, relevance=relevance)
    expected = (relevance / 3, relevance / 3, (relevance / 3).sum(dim=1, keepdim=True))
    for share, reference in zip(shares, expected):
        torch.testing.assert_close(share, reference)


@pytest.mark.parametrize("rule", [SignalTakesAll, UniformSplit])
@pytest.mark.parametrize("gate_shape", list(GATE_SHAPES.values()), ids=list(GATE_SHAPES))
def test_product_rules_conserve_relevance(rule, gate_shape):
    signal, gate = randn(2, 3, 4, 4), torch.rand(*gate_shape, dtype=torch.float64)
    relevance = Product()(signal, gate)
    shares = attribute(rule(), Product(), signal, gate, relevance=relevance)
    total = sum(share.sum() for share in shares)
    torch.testing.assert_close(total, relevance.sum(), rtol=1e-12, atol=0)


def test_product_rules_leave_the_forward_unchanged():
    signal, gate = randn(2, 3, 4, 4), randn(2, 3, 1, 1)
    module = Product()
    for rule in (SignalTakesAll(), UniformSplit()):
        handles = rule.register(module)
        try:
            output = module(signal.requires_grad_(), gate)
        finally:
            handles.remove()
        assert torch.equal(output, signal * gate)


# ---------------------------------------------------------------- layer norm rule


def _reference_layer_norm(
    module: nn.Module, x: torch.Tensor, relevance: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """Return the epsilon rule on the explicit Jacobian of the layer norm with sigma held constant.

    ``R_i = sum_k x_i J_ki R_k / s(y_k)``, where ``J`` is the Jacobian of the linear map
    ``t -> w (t - mean(t)) / sigma`` (sigma of ``x``, a constant), taken over the whole tensor
    with ``torch.autograd.functional.jacobian``, and ``y`` is the layer norm's output.
    """
    if isinstance(module, LayerNorm2d):
        dims, weight_shape = (1,), (1, -1, 1, 1)
    else:
        dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
        weight_shape = module.normalized_shape
    sigma = (x.var(dim=dims, unbiased=False, keepdim=True) + module.eps).sqrt()

    def held_sigma(t: torch.Tensor) -> torch.Tensor:
        y = (t - t.mean(dim=dims, keepdim=True)) / sigma
        return y if module.weight is None else y * module.weight.detach().view(weight_shape)

    jacobian = torch.autograd.functional.jacobian(held_sigma, x).reshape(x.numel(), x.numel())
    with torch.no_grad():
        y = module(x).reshape(-1)
    bias = 0.0 if module.bias is None else (y - held_sigma(x).reshape(-1))
    torch.testing.assert_close(held_sigma(x).reshape(-1) + bias, y, rtol=1e-12, atol=1e-12)
    stabilized = y + epsilon * torch.where(y >= 0, 1.0, -1.0).to(y)  # float64 signs
    contributions = jacobian * x.reshape(1, -1)  # z_ki = J_ki x_i
    ratios = (relevance.reshape(-1) / stabilized).reshape(-1, 1)  # R_k / s(y_k)
    return (contributions * ratios).sum(0).view_as(x)


def _layer_norm(kind: str, affine: bool) -> tuple[nn.Module, torch.Tensor]:
    norms = {
        "last dim": (lambda: nn.LayerNorm(5, elementwise_affine=affine), (2, 3, 5)),
        "last two dims": (lambda: nn.LayerNorm((3, 4), elementwise_affine=affine), (2, 3, 4)),
        "LayerNorm2d": (lambda: LayerNorm2d(4, elementwise_affine=affine), (2, 4, 3, 2)),
    }
    build, shape = norms[kind]
    module = build().double()
    if affine:
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_()
    return module, randn(*shape)


NORM_KINDS = ["last dim", "last two dims", "LayerNorm2d"]


@pytest.mark.parametrize("epsilon", [1e-6, 0.1])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("kind", NORM_KINDS)
def test_layer_norm_epsilon_matches_jacobian_reference(kind, affine, epsilon):
    module, x = _layer_norm(kind, affine)
    with torch.no_grad():
        relevance = module(x) * torch.rand_like(x)
    (ours,) = attribute(LayerNormEpsilon(epsilon=epsilon), module, x, relevance=relevance)
    reference = _reference_layer_norm(module, x, relevance, epsilon)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_layer_norm_epsilon_conserves_relevance_without_bias(kind):
    module, x = _layer_norm(kind, affine=True)
    with torch.no_grad():
        module.bias.zero_()
        output = module(x)
    relevance = output * torch.rand_like(x)
    (ours,) = attribute(LayerNormEpsilon(epsilon=TINY), module, x, relevance=relevance)
    torch.testing.assert_close(ours.sum(), relevance.sum(), rtol=1e-10, atol=0)
    # per sample, too: each sample's norm redistributes its own relevance
    torch.testing.assert_close(
        ours.flatten(1).sum(1), relevance.flatten(1).sum(1), rtol=1e-10, atol=0
    )


def test_layer_norm_epsilon_keeps_the_forward_and_the_weights():
    module, x = _layer_norm("LayerNorm2d", affine=True)
    weight = module.weight.detach().clone()
    with torch.no_grad():
        expected = module(x)
    handles = LayerNormEpsilon().register(module)
    try:
        output = module(x.clone().requires_grad_())
    finally:
        handles.remove()
    assert torch.equal(output, expected) and torch.equal(module.weight, weight)


# ---------------------------------------------------------------- catalogue


@pytest.mark.parametrize(
    ("name", "rule_class"),
    [
        ("LayerNormEpsilon", LayerNormEpsilon),
        ("SignalTakesAll", SignalTakesAll),
        ("UniformSplit", UniformSplit),
    ],
)
def test_rule_choices_build(name, rule_class):
    rule = RuleChoice(name).build()
    assert type(rule) is rule_class
    assert RULE_CHOICES[name].rule_class is rule_class


def test_layer_norm_epsilon_choice_takes_its_epsilon():
    choice = RuleChoice("LayerNormEpsilon", {"epsilon": 0.01})
    assert choice.build().epsilon == 0.01
    assert RULE_CHOICES["LayerNormEpsilon"].default_params() == {"epsilon": 1e-6}


def test_rule_choices_accept_the_right_modules():
    layer_norms = [nn.LayerNorm(4), LayerNorm2d(4)]
    products = [Product()]
    others = [nn.Linear(2, 2), nn.Conv2d(1, 1, 1), nn.BatchNorm2d(2), Sum(), nn.ReLU()]
    for module in layer_norms:
        assert RULE_CHOICES["LayerNormEpsilon"].handles(module)
        assert not RULE_CHOICES["SignalTakesAll"].handles(module)
    for name in ("SignalTakesAll", "UniformSplit"):
        assert all(RULE_CHOICES[name].handles(module) for module in products)
        assert not any(RULE_CHOICES[name].handles(module) for module in layer_norms + others)
    assert not any(RULE_CHOICES["LayerNormEpsilon"].handles(m) for m in products + others)
    assert RULE_CHOICES["Pass"].handles(Scale(torch.ones(1)))
    assert RULE_CHOICES["Pass"].handles(ChannelAffine([1.0], [0.0]))
    assert not RULE_CHOICES["Epsilon"].handles(Product())


# ---------------------------------------------------------------- end to end


class ToyNet(nn.Module):
    """A stem, a ConvNeXt block, a channels-first layer norm, an SE gate and a dense head.

    The ConvNeXt block has a layer norm, a layer scale and a residual sum.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = CNBlock(8, layer_scale=0.5, stochastic_depth_prob=0.0)
        self.norm = LayerNorm2d(8)
        self.relu = nn.ReLU()
        self.excitation = SqueezeExcitation(8, 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm(self.block(self.stem(x))))
        return self.head(self.flatten(self.pool(self.excitation(x))))


@pytest.fixture
def toy() -> ToyNet:
    """Return a bias-free ToyNet in float64 with a lively layer scale and norms."""
    model = ToyNet().double().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif name.endswith("layer_scale") or parameter.dim() == 1:
                parameter.uniform_(0.5, 1.5)
    return model


def _relevance(model: nn.Module, composite, x: torch.Tensor, target: int):
    with composite.context(model):
        inputs = x.clone().requires_grad_()
        output = model(inputs)
        seed = torch.zeros_like(output)
        seed[:, target] = output[:, target]
        (relevance,) = torch.autograd.grad(output, inputs, seed)
    return relevance, output[:, target].sum()


def test_toy_network_gets_the_rules_and_conserves_relevance(toy):
    recommendation = recommend(toy)
    assert recommendation.canonizer == "torchvision"
    assert recommendation.family == "custom model"
    composite = COMPOSITES["epsilon_gamma_box"](
        low=-3.0,
        high=3.0,
        epsilon=TINY,
        stabilizer=TINY,
        canonizers=get_canonizers(recommendation.canonizer),
    )
    rules = {layer.name: layer.rule for layer in rule_coverage(toy, composite)}
    assert rules["block.block.2"] == rules["norm"] == "LayerNormEpsilon"
    assert rules["excitation.canonizer_product"] == "SignalTakesAll"
    assert rules["block.canonizer_scale"] == "Pass"
    assert rules["block.canonizer_sum"] == "Norm"
    x = randn(2, 3, 6, 6)
    with torch.no_grad():
        expected = toy(x)
    target = int(expected[0].argmax())
    relevance, logit = _relevance(toy, composite, x, target)
    torch.testing.assert_close(relevance.sum(), logit, rtol=1e-9, atol=0)
    with torch.no_grad():
        assert torch.equal(toy(x), expected)


def test_toy_network_through_a_rule_map_with_uniform_split(toy):
    rulemap = RuleMap.from_preset(
        toy, "epsilon_plus", canonizer="torchvision", epsilon=TINY, stabilizer=TINY
    )
    assert rulemap["excitation.canonizer_product"] == RuleChoice("SignalTakesAll")
    assert rulemap["norm"].rule == "LayerNormEpsilon"
    assert rulemap.mismatches(toy) == []
    split = rulemap.with_rule("excitation.canonizer_product", RuleChoice("UniformSplit"))
    assert RuleMap.from_json(split.to_json()) == split
    x = randn(1, 3, 6, 6)
    results = [_relevance(toy, m.to_composite(), x, 1) for m in (rulemap, split)]
    assert all(torch.isfinite(relevance).all() for relevance, _ in results)
    # with UniformSplit half of the product's relevance takes the gate's branch to the input
    assert not torch.allclose(results[0][0], results[1][0])


def test_layer_norm_network_conserves_relevance():
    """A dense network with a layer norm over the last dimension, Epsilon everywhere else."""
    model = nn.Sequential(
        nn.Linear(6, 8, bias=False),
        nn.LayerNorm(8, bias=False),
        nn.ReLU(),
        nn.Linear(8, 3, bias=False),
    ).double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    composite = LayerMapComposite([(Linear, Epsilon(epsilon=TINY)), *layer_map_base(TINY)])
    x = randn(4, 6)
    relevance, logit = _relevance(model, composite, x, 0)
    torch.testing.assert_close(relevance.sum(), logit, rtol=1e-9, atol=0)


def test_pass_on_scale_and_channel_affine_hands_relevance_through():
    relevance = randn(1, 3, 2, 2)
    for module in (Scale(randn(3, 1, 1)), ChannelAffine([2.0, -1.0, 0.5], [1.0, 0.0, -1.0])):
        module = module.double()
        (passed,) = attribute(Pass(), module, randn(1, 3, 2, 2), relevance=relevance)
        assert torch.equal(passed, relevance)
