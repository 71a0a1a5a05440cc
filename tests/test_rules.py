"""Test the LRP rules against independent references, fast paths and zennit 0.5.1.

The references are matrix forms of the layers; the fast paths are checked against the general
path; conservation is checked on small networks; zennit 0.5.1 is an oracle.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lrp_desktop_core import rules
from lrp_desktop_core.composites import LayerMapComposite
from lrp_desktop_core.core import Composite, Stabilizer
from lrp_desktop_core.layer import Sum
from lrp_desktop_core.rules import (
    RULE_DESCRIPTIONS,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    ReLUBetaSmooth,
    ReLUDeconvNet,
    ReLUGuidedBackprop,
    WSquare,
    ZBox,
    ZPlus,
)
from lrp_desktop_core.types import Activation, Convolution

LOW, HIGH = -3.0, 2.5

LAYERS = {
    "linear": (lambda bias: nn.Linear(5, 4, bias=bias), (2, 5)),
    "conv1d": (lambda bias: nn.Conv1d(2, 3, 3, padding=1, bias=bias), (2, 2, 5)),
    "conv2d": (lambda bias: nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=bias), (2, 2, 5, 5)),
    "conv3d": (lambda bias: nn.Conv3d(2, 2, 2, padding=1, bias=bias), (2, 2, 3, 3, 3)),
    "convtranspose2d": (
        lambda bias: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, bias=bias),
        (2, 2, 3, 3),
    ),
}
BIAS_CASES = {"bias": (True, None), "no-bias": (False, None), "zero-bias": (True, "bias")}


# ---------------------------------------------------------------- helpers


# Tiny tensors: one thread avoids thread start-up and waits that dominate on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def attribute(rule, module: nn.Module, *inputs: torch.Tensor, relevance: torch.Tensor):
    """Return the relevance of ``inputs`` when ``relevance`` arrives at ``module``'s output."""
    handles = rule.copy().register(module)
    try:
        leaves = [x.clone().requires_grad_() for x in inputs]
        result = torch.autograd.grad(module(*leaves), leaves, relevance)
    finally:
        handles.remove()
    return result if len(result) > 1 else result[0]


def make_layer(kind: str, bias: bool) -> tuple[nn.Module, torch.Tensor]:
    build, shape = LAYERS[kind]
    layer = build(bias).double()
    if bias:
        with torch.no_grad():
            layer.bias.normal_()
    return layer, torch.randn(shape, dtype=torch.float64)


def affine_form(layer: nn.Module, sample_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the matrix ``W`` (outputs x inputs) and vector ``b`` of ``layer(x) = W x + b``.

    ``W`` is the layer's Jacobian: column ``i`` is the response to the unit vector ``e_i``, all
    columns computed in one batched call.
    """
    numel = int(torch.tensor(sample_shape).prod())
    with torch.no_grad():
        bias = layer(torch.zeros(1, *sample_shape, dtype=torch.float64)).flatten()
        units = torch.eye(numel, dtype=torch.float64).view(numel, *sample_shape)
        weight = (layer(units).flatten(start_dim=1) - bias).T
    return weight, bias


def s(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Move z away from 0 by eps, 0 counting as positive (the default stabilizer)."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def pos(t):
    return t.clamp(min=0)


def neg(t):
    return t.clamp(max=0)


def ref_epsilon(W, b, x, R, eps=0.1):
    return x * (W.T @ (R / s(W @ x + b, eps)))


def ref_zplus(W, b, x, R):
    r = R / s(pos(W) @ pos(x) + neg(W) @ neg(x) + pos(b))
    return pos(x) * (pos(W).T @ r) + neg(x) * (neg(W).T @ r)


def ref_alphabeta(W, b, x, R, alpha=2.0, beta=1.0):
    r_neg = R / s(neg(W) @ pos(x) + pos(W) @ neg(x) + neg(b))
    negative = pos(x) * (neg(W).T @ r_neg) + neg(x) * (pos(W).T @ r_neg)
    return alpha * ref_zplus(W, b, x, R) - beta * negative


def ref_gamma(W, b, x, R, gamma=0.25, real_bias=None):
    z = W @ x + (b if real_bias is None else real_bias)
    relevance = torch.zeros_like(x)
    for sign, mask in ((1, z > 0), (-1, z < 0)):
        part = pos if sign > 0 else neg
        other = neg if sign > 0 else pos
        w_pos_in = W + gamma * part(W)  # for positive inputs
        w_neg_in = W + gamma * other(W)  # for negative inputs
        denominator = w_pos_in @ pos(x) + w_neg_in @ neg(x) + b + gamma * part(b)
        r = mask * R / s(denominator)
        relevance = relevance + pos(x) * (w_pos_in.T @ r) + neg(x) * (w_neg_in.T @ r)
    return relevance


def ref_zbox(W, b, x, R, low, high):
    r = R / s(W @ x - pos(W) @ low - neg(W) @ high)
    return x * (W.T @ r) - low * (pos(W).T @ r) - high * (neg(W).T @ r)


def ref_wsquare(W, b, x, R):
    squared = W * W
    return squared.T @ (R / s(squared.sum(dim=1) + b * b))


def ref_flat(W_ones, R):
    return W_ones.T @ (R / s(W_ones.sum(dim=1)))


RULES = {
    "Epsilon": lambda zp: Epsilon(epsilon=0.1, zero_params=zp),
    "ZPlus": lambda zp: ZPlus(zero_params=zp),
    "AlphaBeta": lambda zp: AlphaBeta(zero_params=zp),
    "AlphaBeta1-0": lambda zp: AlphaBeta(alpha=1.0, beta=0.0, zero_params=zp),
    "Gamma": lambda zp: Gamma(zero_params=zp),
    "ZBox": lambda zp: ZBox(low=LOW, high=HIGH, zero_params=zp),
    "Flat": lambda zp: Flat(zero_params=zp),
    "WSquare": lambda zp: WSquare(zero_params=zp),
}


def reference(name, layer, x, relevance, zero_params):
    """Compute the rule's relevance sample by sample from the layer's matrix form."""
    W, b_real = affine_form(layer, x.shape[1:])
    b = torch.zeros_like(b_real) if zero_params else b_real
    if name == "Flat":
        ones = copy.deepcopy(layer)
        with torch.no_grad():
            ones.weight.fill_(1.0)
            if ones.bias is not None:
                ones.bias.zero_()
        W_ones, _ = affine_form(ones, x.shape[1:])
    formulas = {
        "Epsilon": lambda xv, rv: ref_epsilon(W, b, xv, rv),
        "ZPlus": lambda xv, rv: ref_zplus(W, b, xv, rv),
        "AlphaBeta": lambda xv, rv: ref_alphabeta(W, b, xv, rv),
        "AlphaBeta1-0": lambda xv, rv: ref_alphabeta(W, b, xv, rv, alpha=1.0, beta=0.0),
        "Gamma": lambda xv, rv: ref_gamma(W, b, xv, rv, real_bias=b_real),
        "ZBox": lambda xv, rv: ref_zbox(
            W, b, xv, rv, torch.full_like(xv, LOW), torch.full_like(xv, HIGH)
        ),
        "Flat": lambda xv, rv: ref_flat(W_ones, rv),
        "WSquare": lambda xv, rv: ref_wsquare(W, b, xv, rv),
    }
    results = [
        formulas[name](xs.flatten(), rs.flatten()).view(xs.shape) for xs, rs in zip(x, relevance)
    ]
    return torch.stack(results)


def general_path(rule_class):
    """Return a subclass of ``rule_class`` that never takes its fast path."""
    return type(
        f"General{rule_class.__name__}",
        (rule_class,),
        {"_fast_path_applies": lambda self, module: False},
    )


# ---------------------------------------------------------------- matrix-form references


@pytest.mark.parametrize("bias_case", list(BIAS_CASES))
@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("name", list(RULES))
def test_rule_matches_matrix_reference(name, kind, bias_case):
    has_bias, zero_params = BIAS_CASES[bias_case]
    layer, x = make_layer(kind, has_bias)
    relevance = torch.randn_like(layer(x))
    for inputs in (x, x.clamp(min=0)):  # mixed signs, and nonnegative as after a ReLU
        expected = reference(name, layer, inputs, relevance, zero_params)
        result = attribute(RULES[name](zero_params), layer, inputs, relevance=relevance)
        torch.testing.assert_close(result, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["Epsilon", "ZPlus", "Gamma"])
def test_rule_on_layer_used_as_the_only_nonzero_contribution_stays_finite(name):
    layer = nn.Linear(3, 2, bias=False).double()
    x = torch.zeros(1, 3, dtype=torch.float64)
    result = attribute(RULES[name](None), layer, x, relevance=torch.ones(1, 2, dtype=torch.float64))
    assert torch.isfinite(result).all()
    assert (result == 0).all()


def test_epsilon_zero_is_lrp0_gradient_times_input():
    layer, x = make_layer("conv2d", bias=False)
    relevance = torch.randn_like(layer(x))
    z = layer(x)
    leaf = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(layer(leaf), leaf, relevance / z)
    result = attribute(Epsilon(epsilon=0), layer, x, relevance=relevance)
    torch.testing.assert_close(result, x * gradient)


def test_epsilon_accepts_a_stabilizer_callable():
    layer, x = make_layer("linear", bias=True)
    relevance = torch.randn_like(layer(x))
    clipped = Stabilizer(epsilon=0.5, clip=True)
    result = attribute(Epsilon(epsilon=clipped), layer, x, relevance=relevance)
    z = layer(x)
    leaf = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(layer(leaf), leaf, relevance / clipped(z))
    torch.testing.assert_close(result, x * gradient)
    assert not torch.allclose(result, attribute(Epsilon(0.5), layer, x, relevance=relevance))


def test_zbox_takes_tensor_bounds_and_cuts_a_larger_batch():
    layer, x = make_layer("conv2d", bias=True)
    relevance = torch.randn_like(layer(x))
    low = torch.full((4, *x.shape[1:]), LOW, dtype=torch.float64)
    high = torch.full((4, *x.shape[1:]), HIGH, dtype=torch.float64)
    low[:, 0] = -1.0
    result = attribute(ZBox(low=low, high=high), layer, x, relevance=relevance)
    W, _ = affine_form(layer, x.shape[1:])
    for sample in range(x.shape[0]):
        expected = ref_zbox(
            W,
            None,
            x[sample].flatten(),
            relevance[sample].flatten(),
            low[sample].flatten(),
            high[sample].flatten(),
        )
        torch.testing.assert_close(result[sample].flatten(), expected)


def test_norm_matches_reference_on_average_pooling_and_sum():
    pool = nn.AvgPool2d(2, padding=1, count_include_pad=False).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    relevance = torch.randn_like(pool(x))
    result = attribute(Norm(), pool, x, relevance=relevance)
    W, _ = affine_form(pool, x.shape[1:])
    for sample in range(2):
        xv, rv = x[sample].flatten(), relevance[sample].flatten()
        expected = xv * (W.T @ (rv / s(W @ xv)))
        torch.testing.assert_close(result[sample].flatten(), expected)

    stacked = torch.randn(2, 3, 2, dtype=torch.float64)
    relevance = torch.randn(2, 3, dtype=torch.float64)
    result = attribute(Norm(), Sum(), stacked, relevance=relevance)
    expected = stacked * (relevance / s(stacked.sum(-1))).unsqueeze(-1)
    torch.testing.assert_close(result, expected)


def test_pass_and_relu_rules():
    x = torch.randn(3, 6, dtype=torch.float64)
    relevance = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(attribute(Pass(), nn.Tanh(), x, relevance=relevance), relevance)
    torch.testing.assert_close(
        attribute(ReLUDeconvNet(), nn.ReLU(), x, relevance=relevance), relevance.clamp(min=0)
    )
    torch.testing.assert_close(
        attribute(ReLUGuidedBackprop(), nn.ReLU(), x, relevance=relevance),
        relevance * (x > 0) * (relevance > 0),
    )
    torch.testing.assert_close(
        attribute(ReLUBetaSmooth(beta_smooth=3.0), nn.ReLU(), x, relevance=relevance),
        relevance * torch.sigmoid(3.0 * x),
    )


@pytest.mark.parametrize(("alpha", "beta"), [(-1.0, -2.0), (2.0, 2.0), (3.0, 1.0), (0.5, -0.5)])
def test_alphabeta_rejects_parameters_that_break_conservation(alpha, beta):
    with pytest.raises(ValueError, match="alpha"):
        AlphaBeta(alpha=alpha, beta=beta)


def test_zero_bias_and_parameter_modifiers():
    assert rules.zero_bias() == ["bias"]
    assert rules.zero_bias("weight") == ["weight", "bias"]
    assert rules.zero_bias(("a", "b")) == ["a", "b", "bias"]
    layer = nn.Linear(3, 2).double()
    _, clamped = rules.ClampMod(min=0.0).state_dicts(layer)
    assert torch.equal(clamped["weight"], layer.weight.detach().clamp(min=0))
    _, gamma = rules.GammaMod(0.5, max=0.0, zero_params="bias").state_dicts(layer)
    weight = layer.weight.detach()
    assert torch.equal(gamma["weight"], weight + 0.5 * weight.clamp(max=0))
    assert torch.equal(gamma["bias"], torch.zeros(2, dtype=torch.float64))
    _, unchanged = rules.NoMod().state_dicts(layer)
    assert torch.equal(unchanged["weight"], weight)


def test_every_rule_has_a_description():
    names = {
        "Epsilon",
        "ZPlus",
        "AlphaBeta",
        "Gamma",
        "ZBox",
        "Flat",
        "WSquare",
        "Pass",
        "Norm",
        "LayerNormEpsilon",
        "SignalTakesAll",
        "UniformSplit",
        "AttentionConservative",
        "AttentionAttnLRP",
        "ReLUDeconvNet",
        "ReLUGuidedBackprop",
        "ReLUBetaSmooth",
    }
    assert set(RULE_DESCRIPTIONS) == names
    assert all(20 < len(text) < 400 for text in RULE_DESCRIPTIONS.values())


# ---------------------------------------------------------------- fast paths


FAST_RULES = {
    "Epsilon": (Epsilon, {"epsilon": 0.1}),
    "Norm": (Norm, {}),
    "ZPlus": (ZPlus, {}),
    "AlphaBeta": (AlphaBeta, {}),
    "AlphaBeta1-0": (AlphaBeta, {"alpha": 1.0, "beta": 0.0}),
    "AlphaBeta-zero-bias": (AlphaBeta, {"zero_params": "bias"}),
    "Gamma": (Gamma, {"gamma": 0.5}),
    "Gamma-zero-bias": (Gamma, {"gamma": 0.5, "zero_params": "bias"}),
    "Gamma-norm-scaled": (Gamma, {"stabilizer": Stabilizer(0.1, norm_scale=True)}),
}


def fast_path_spy(rule_class, taken: list):
    """Return a subclass of ``rule_class`` noting in ``taken`` each time its fast path runs."""

    def _fast_relevance(self, *args):
        taken.append(type(self).__name__)
        return rule_class._fast_relevance(self, *args)

    return type(f"Spied{rule_class.__name__}", (rule_class,), {"_fast_relevance": _fast_relevance})


@pytest.mark.parametrize("kind", ["linear", "conv2d", "convtranspose2d"])
@pytest.mark.parametrize("name", list(FAST_RULES))
def test_fast_path_equals_general_path(name, kind):
    layer, x = make_layer(kind, bias=True)
    relevance = torch.randn_like(layer(x))
    rule_class, kwargs = FAST_RULES[name]
    for inputs in (x, x.clamp(min=0), x.clamp(max=0), torch.zeros_like(x)):
        taken: list = []
        spied = fast_path_spy(rule_class, taken)(**kwargs)
        result = attribute(spied, layer, inputs, relevance=relevance)
        expected = attribute(general_path(rule_class)(**kwargs), layer, inputs, relevance=relevance)
        assert taken, "the fast path was not taken"
        torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("rule", "evaluations"),
    [(ZPlus(), 1), (AlphaBeta(), 2), (Gamma(), 1), (Epsilon(), 0), (Norm(), 0)],
    ids=lambda value: type(value).__name__ if not isinstance(value, int) else str(value),
)
def test_fast_paths_evaluate_the_layer_few_times_for_nonnegative_input(
    monkeypatch, rule, evaluations
):
    layer, x = make_layer("conv2d", bias=True)
    assert _evaluations(monkeypatch, rule, layer, x.clamp(min=0)) == evaluations


def test_gamma_evaluates_the_layer_once_also_for_inputs_of_both_signs(monkeypatch):
    layer, x = make_layer("conv2d", bias=True)
    assert bool((x < 0).any()) and bool((x > 0).any())
    assert _evaluations(monkeypatch, Gamma(), layer, x) == 1


def _evaluations(monkeypatch, rule, layer: nn.Module, x: torch.Tensor) -> int:
    """How often ``rule`` evaluates ``layer`` besides the model's own forward pass."""
    calls = []
    forward = type(layer).forward

    def counting_forward(self, *args):
        calls.append(1)
        return forward(self, *args)

    monkeypatch.setattr(type(layer), "forward", counting_forward)
    attribute(rule, layer, x, relevance=torch.randn(2, 3, 3, 3, dtype=torch.float64))
    return len(calls) - 1


def test_epsilon_fast_path_on_a_module_with_two_inputs_and_used_twice():
    class Blend(nn.Module):
        def forward(self, a, b):
            return a + 2 * b

    blend = Blend()
    a, b = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    relevance = torch.randn(2, 4, dtype=torch.float64)
    fast = attribute(Norm(), blend, a, b, relevance=relevance)
    general = attribute(general_path(Norm)(), blend, a, b, relevance=relevance)
    for result, expected in zip(fast, general):
        torch.testing.assert_close(result, expected)
    torch.testing.assert_close(fast[0] + fast[1], relevance * (a + 2 * b) / s(a + 2 * b))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 4, bias=False).double()

        def forward(self, x):
            return self.layer(torch.relu(self.layer(x)))

    net = Twice()
    composite = LayerMapComposite([(nn.Linear, Epsilon(epsilon=0.0))])
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    with composite.context(net):
        output = net(x)
        (result,) = torch.autograd.grad(output, x, output)
    W = net.layer.weight.detach()
    hidden = torch.relu(x.detach() @ W.T)
    r_hidden = hidden * ((output.detach() / (hidden @ W.T)) @ W)
    expected = x.detach() * ((r_hidden / (x.detach() @ W.T)) @ W)
    torch.testing.assert_close(result, expected)


# ---------------------------------------------------------------- conservation


def bias_free_relu_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 10, bias=False),
        nn.ReLU(),
        nn.Linear(10, 4, bias=False),
    ).double()


@pytest.mark.parametrize(
    "conv_rule",
    [
        Epsilon(1e-9),
        ZPlus(),
        AlphaBeta(),
        Gamma(),
        Flat(),
        WSquare(),
    ],
    ids=lambda rule: type(rule).__name__,
)
def test_relevance_is_conserved_on_bias_free_relu_networks(conv_rule):
    net = bias_free_relu_net()
    composite = LayerMapComposite(
        [(Activation, Pass()), (Convolution, conv_rule), (nn.Linear, Epsilon(1e-9))]
    )
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    with composite.context(net):
        output = net(x)
        target = output * torch.eye(4, dtype=torch.float64)[[1, 3]]
        (relevance,) = torch.autograd.grad(output, x, target)
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), target.sum(dim=1), rtol=0, atol=1e-5)


def test_hooks_leave_the_layer_and_its_parameters_untouched():
    layer, x = make_layer("conv2d", bias=True)
    before = {name: (param, param.detach().clone()) for name, param in layer.named_parameters()}
    for make in RULES.values():
        attribute(make(None), layer, x, relevance=torch.randn(2, 3, 3, 3, dtype=torch.float64))
    for name, param in layer.named_parameters():
        assert param is before[name][0]
        assert torch.equal(param, before[name][1])
    assert not layer._forward_hooks and not layer._forward_pre_hooks


# ---------------------------------------------------------------- zennit 0.5.1 as an oracle


ORACLE_RULES = {
    "Epsilon": {"epsilon": 0.01},
    "ZPlus": {},
    "AlphaBeta": {},
    "Gamma": {"gamma": 0.5},
    "ZBox": {"low": LOW, "high": HIGH},
    "Flat": {},
    "WSquare": {},
}


@pytest.mark.oracle
@pytest.mark.parametrize("zero_params", [None, "bias"])
@pytest.mark.parametrize("kind", ["linear", "conv2d", "convtranspose2d"])
@pytest.mark.parametrize("name", list(ORACLE_RULES))
def test_rule_matches_zennit(name, kind, zero_params):
    zennit_rules = pytest.importorskip("zennit.rules")
    layer, x = make_layer(kind, bias=True)
    relevance = torch.randn_like(layer(x))
    kwargs = dict(ORACLE_RULES[name], zero_params=zero_params)
    for inputs in (x, x.clamp(min=0)):
        ours = attribute(getattr(rules, name)(**kwargs), layer, inputs, relevance=relevance)
        theirs = attribute(
            getattr(zennit_rules, name)(**kwargs), layer, inputs, relevance=relevance
        )
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("name", "module", "kwargs"),
    [
        ("Norm", nn.AvgPool2d(2), {}),
        ("Pass", nn.Softplus(), {}),
        ("ReLUDeconvNet", nn.ReLU(), {}),
        ("ReLUGuidedBackprop", nn.ReLU(), {}),
        ("ReLUBetaSmooth", nn.ReLU(), {"beta_smooth": 2.0}),
    ],
)
def test_parameter_free_rule_matches_zennit(name, module, kwargs):
    zennit_rules = pytest.importorskip("zennit.rules")
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    relevance = torch.randn_like(module(x))
    ours = attribute(getattr(rules, name)(**kwargs), module, x, relevance=relevance)
    theirs = attribute(getattr(zennit_rules, name)(**kwargs), module, x, relevance=relevance)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(RULES))
def test_inactive_composite_gives_the_plain_gradient(name):
    net = bias_free_relu_net()
    composite = LayerMapComposite(
        [(Activation, Pass()), (Convolution, RULES[name](None)), (nn.Linear, Epsilon())]
    )
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    (plain,) = torch.autograd.grad(net(x).sum(), x)
    with composite.context(net):
        with composite.inactive():
            (inactive,) = torch.autograd.grad(net(x).sum(), x)
        (active,) = torch.autograd.grad(net(x).sum(), x)
    torch.testing.assert_close(inactive, plain)
    assert not torch.allclose(active, plain)


@pytest.mark.parametrize("dim", [-1, 0, 1, -3])
def test_norm_fast_path_on_a_sum_equals_general_path(dim):
    stacked = torch.randn(3, 4, 2, dtype=torch.float64)
    stacked[0, 0] = torch.tensor([1.0, -1.0], dtype=torch.float64)  # a zero sum
    module = Sum(dim=dim)
    relevance = torch.randn_like(module(stacked))
    taken: list = []
    fast = attribute(fast_path_spy(Norm, taken)(), module, stacked, relevance=relevance)
    general = attribute(general_path(Norm)(), module, stacked, relevance=relevance)
    assert taken, "the fast path was not taken"
    torch.testing.assert_close(fast, general, rtol=1e-12, atol=1e-12)
    expected = stacked * (relevance / s(stacked.sum(dim))).unsqueeze(dim)
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)


def test_pass_leaves_a_merged_batch_norm_unhooked():
    from lrp_desktop_core.canonizers import SequentialMergeBatchNorm

    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU()).double().eval()
    with torch.no_grad():
        model[1].running_mean.normal_()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    composite = LayerMapComposite(
        [(Activation, Pass()), (nn.BatchNorm2d, Pass()), (Convolution, Epsilon())],
        canonizers=[SequentialMergeBatchNorm()],
    )
    with composite.context(model) as hooked:
        leaf = x.clone().requires_grad_()
        output = hooked(leaf)
        (relevance,) = torch.autograd.grad(output, leaf, torch.ones_like(output))
    with composite.context(model) as hooked:  # the same numbers from a second registration
        leaf = x.clone().requires_grad_()
        output = hooked(leaf)
        (again,) = torch.autograd.grad(output, leaf, torch.ones_like(output))
    torch.testing.assert_close(relevance, again, rtol=0, atol=0)
    merged = (
        model[0].weight
        * (model[1].weight / (model[1].running_var + model[1].eps).sqrt())[:, None, None, None]
    )
    z = nn.functional.conv2d(
        x,
        merged,
        (model[0].bias - model[1].running_mean)
        * model[1].weight
        / (model[1].running_var + model[1].eps).sqrt()
        + model[1].bias,
    )
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(nn.functional.conv2d(leaf, merged), leaf, 1 / s(z))
    torch.testing.assert_close(relevance, (x * expected).detach())


@pytest.mark.parametrize("name", ["Epsilon", "Gamma"])
def test_fast_path_gives_way_when_a_later_in_place_op_changes_the_stored_output(name):
    """An unhooked ``ReLU(inplace=True)`` overwrites the layer's output: the general path runs."""
    rule_class, kwargs = FAST_RULES[name]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 3)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    assert (model[0](x) < 0).any()

    def relevance(rule):
        composite = Composite(lambda ctx, key, module: rule if key == "0" else None)
        with composite.context(model):
            leaf = x.clone().requires_grad_()
            output = model(leaf)
            return torch.autograd.grad(output, leaf, torch.ones_like(output))[0]

    taken: list = []
    result = relevance(fast_path_spy(rule_class, taken)(**kwargs))
    expected = relevance(general_path(rule_class)(**kwargs))
    assert not taken, "the fast path read an overwritten output"
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)
