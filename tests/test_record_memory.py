"""What the hooks keep of a forward pass, and for how long.

Two savings with the same relevance as before:

* an in-place activation (``ReLU(inplace=True)``) under :class:`~lrp_desktop_core.rules.Pass`
  computes on its input without a copy where no record reads that input (after z+, alpha-beta
  or a residual Sum); where a rule reads the stored output (epsilon, gamma) it gets a copy;
* an attributor whose backward pass does not keep the graph lets every hook drop a layer's
  stored tensors once its relevance is computed, as a plain gradient frees saved tensors.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from lrp_desktop_core.attribution import Gradient, one_hot
from lrp_desktop_core.core import Composite
from lrp_desktop_core.rules import AlphaBeta, Epsilon, Gamma, Pass, ZPlus

ACTIVATIONS = {
    "ReLU": lambda inplace: nn.ReLU(inplace=inplace),
    "ReLU6": lambda inplace: nn.ReLU6(inplace=inplace),
    "LeakyReLU": lambda inplace: nn.LeakyReLU(0.1, inplace=inplace),
    "SiLU": lambda inplace: nn.SiLU(inplace=inplace),  # its gradient needs the input: copied
}


def _model(activation: str, inplace: bool) -> nn.Sequential:
    torch.manual_seed(0)
    make = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        make(inplace),
        nn.Conv2d(6, 5, 3, padding=1),
        make(inplace),
        nn.Flatten(),
        nn.Linear(5 * 6 * 6, 4),
    ).double()


def _composite(rule) -> Composite:
    def module_map(ctx, name, module):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return rule
        if isinstance(module, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU)):
            return Pass()
        return None

    return Composite(module_map)


def _inputs() -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)).double()


def _classes_0_and_2(output: torch.Tensor) -> torch.Tensor:
    return one_hot(output, torch.tensor([0, 2]))


def _relevance(model: nn.Module, rule, retain_graph: bool | None = None) -> torch.Tensor:
    inputs = _inputs()
    with Gradient(model, _composite(rule), retain_graph=retain_graph) as attributor:
        return attributor(inputs, attr_output=_classes_0_and_2)[1]


def _clones_in_forward(model: nn.Module, rule) -> int:
    """Count the copies the hooks make in a forward pass (the parameters require gradients)."""
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    with _composite(rule).context(model) as hooked, profiler as profile:
        hooked(_inputs().requires_grad_())
    return sum(event.count for event in profile.key_averages() if event.key == "aten::clone")


RULES = [ZPlus(), AlphaBeta(2.0, 1.0), Epsilon(1e-9), Gamma(0.25)]


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("rule", RULES, ids=lambda rule: type(rule).__name__)
def test_relevance_is_that_of_the_model_without_in_place_activations(rule, activation):
    in_place = _relevance(_model(activation, inplace=True), rule)
    separate = _relevance(_model(activation, inplace=False), rule)
    assert in_place.abs().sum() > 0
    torch.testing.assert_close(in_place, separate, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule", [ZPlus(), AlphaBeta(2.0, 1.0)], ids=["ZPlus", "AlphaBeta"])
def test_relu_after_a_rule_that_does_not_read_its_output_is_not_copied(rule):
    assert _clones_in_forward(_model("ReLU", inplace=True), rule) == 0


@pytest.mark.parametrize("rule", [Epsilon(1e-9), Gamma(0.25)], ids=["Epsilon", "Gamma"])
def test_relu_after_a_rule_that_reads_its_output_computes_on_a_copy(rule):
    assert _clones_in_forward(_model("ReLU", inplace=True), rule) == 2


def test_activation_whose_gradient_needs_its_input_computes_on_a_copy():
    assert _clones_in_forward(_model("SiLU", inplace=True), ZPlus()) == 2


def test_relu_on_a_callers_tensor_leaves_it_unchanged():
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 2)).double()
    composite = Composite(lambda ctx, name, module: Pass() if name == "0" else None)
    inputs = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    before = inputs.detach().clone()
    with composite.context(model) as hooked:
        output = hooked(inputs)
        torch.autograd.grad(output, inputs, torch.ones_like(output))
    torch.testing.assert_close(inputs.detach(), before, rtol=0, atol=0)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_plain_gradient_through_an_in_place_activation_while_inactive(activation):
    model = _model(activation, inplace=True)
    inputs = _inputs().requires_grad_()
    (plain,) = torch.autograd.grad(_model(activation, inplace=False)(inputs).sum(), inputs)
    composite = _composite(ZPlus())
    with composite.context(model) as hooked:
        output = hooked(inputs)
        with composite.inactive():
            (gradient,) = torch.autograd.grad(output.sum(), inputs)
    torch.testing.assert_close(gradient, plain, rtol=1e-12, atol=1e-14)


def _activation_kept_during_backward(retain_graph: bool | None) -> tuple[bool, bool]:
    """Whether the first ReLU's output still exists when the backward pass reaches the input.

    Also returns whether it exists after the attribution.
    """
    model = _model("ReLU", inplace=False)
    seen: dict[str, weakref.ref] = {}
    alive_at_input: list[bool] = []
    model[1].register_forward_hook(
        lambda module, args, output: seen.update(relu=weakref.ref(output))
    )

    def check_at_input(module, args):  # registered before the composite's hooks
        args[0].register_hook(lambda grad: alive_at_input.append(seen["relu"]() is not None))

    model[0].register_forward_pre_hook(check_at_input)
    inputs = _inputs().requires_grad_()
    with Gradient(model, _composite(ZPlus()), retain_graph=retain_graph) as attributor:
        result = attributor(inputs, attr_output=_classes_0_and_2)
        del result
        gc.collect()
        alive_after = seen["relu"]() is not None
    return alive_at_input[0], alive_after


def test_records_are_released_as_the_backward_pass_goes():
    assert _activation_kept_during_backward(retain_graph=None) == (False, False)


def test_a_kept_graph_keeps_the_records():
    assert _activation_kept_during_backward(retain_graph=True)[0]


def test_second_backward_pass_through_released_records_says_what_to_do():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    model.requires_grad_(False)
    inputs = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    with Gradient(model, _composite(ZPlus())) as attributor:
        output, _ = attributor(inputs, attr_output=torch.ones(3, 2, dtype=torch.float64))
        with pytest.raises(RuntimeError, match=r"released after the first backward.*retain_graph"):
            torch.autograd.grad(output, inputs, torch.ones_like(output))


def test_kept_graph_gives_the_same_relevance_twice():
    model = _model("ReLU", inplace=True)
    inputs = _inputs().requires_grad_()
    with Gradient(model, _composite(ZPlus()), retain_graph=True) as attributor:
        output, first = attributor(inputs, attr_output=_classes_0_and_2)
        (second,) = torch.autograd.grad(output, inputs, _classes_0_and_2(output))
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_parameter_gradients_flow_through_hooked_outputs_while_inactive():
    model = _model("ReLU", inplace=True)
    inputs = _inputs()
    reference = _model("ReLU", inplace=False)
    plain = torch.autograd.grad(reference(inputs).sum(), reference[0].weight)
    composite = _composite(ZPlus())
    with composite.context(model) as hooked:
        output = hooked(inputs.requires_grad_())
        with composite.inactive():
            hooked_gradient = torch.autograd.grad(output.sum(), model[0].weight)
    torch.testing.assert_close(hooked_gradient, plain, rtol=1e-12, atol=1e-14)


def test_plain_gradient_through_released_records_says_what_to_do():
    model = _model("ReLU", inplace=True)
    composite = _composite(ZPlus())
    inputs = _inputs().requires_grad_()
    with Gradient(model, composite) as attributor:
        output, _ = attributor(inputs, attr_output=_classes_0_and_2)
        with (
            composite.inactive(),
            pytest.raises(RuntimeError, match=r"of Linear were released.*retain_graph=True"),
        ):
            torch.autograd.grad(output.sum(), inputs)


@pytest.mark.parametrize("retain_graph", [None, True])
def test_modified_parameters_are_kept_only_for_a_kept_graph(retain_graph):
    composite = _composite(AlphaBeta(2.0, 1.0))
    with Gradient(_model("ReLU", inplace=True), composite, retain_graph=retain_graph) as attributor:
        attributor(_inputs(), attr_output=_classes_0_and_2)
        kept = [
            bool(hook._param_cache) for hook in composite.hooks if hasattr(hook, "_param_cache")
        ]
    assert kept == [bool(retain_graph)] * 3
