"""Tests of the attributors on models whose attributions are known in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_desktop_core.attribution import (
    Gradient,
    IntegratedGradients,
    Occlusion,
    SmoothGrad,
    occlude_independent,
)
from lrp_desktop_core.core import Composite, Hook


def _linear_model(classes: int = 3) -> nn.Module:
    """Return a linear model on (N, 2, 4, 4) inputs, whose gradient is its weight."""
    return nn.Sequential(nn.Flatten(), nn.Linear(32, classes, bias=True)).double()


def _inputs(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 2, 4, 4, dtype=torch.float64)


def _weight_of(model: nn.Module, classes: list[int]) -> torch.Tensor:
    return model[1].weight.detach()[classes].reshape(len(classes), 2, 4, 4)


def test_gradient_of_a_class_index_is_that_class_weight():
    model, inputs = _linear_model(), _inputs()
    output, gradient = Gradient(model)(inputs, attr_output=2)
    torch.testing.assert_close(output, model(inputs))
    torch.testing.assert_close(gradient, _weight_of(model, [2, 2]))
    _, per_sample = Gradient(model, attr_output=[0, 1])(inputs)
    torch.testing.assert_close(per_sample, _weight_of(model, [0, 1]))


def test_output_attribution_forms_agree():
    model, inputs = _linear_model(), _inputs()
    seed = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    expected = Gradient(model)(inputs, attr_output=[1, 2])[1]
    for attr_output in (seed, lambda output: seed, [1, 2]):
        torch.testing.assert_close(Gradient(model)(inputs, attr_output)[1], expected)
    broadcast = Gradient(model)(inputs, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))[1]
    torch.testing.assert_close(broadcast, _weight_of(model, [1, 1]))


def test_default_output_attribution_is_the_output_itself():
    model, inputs = _linear_model(), _inputs()
    output, gradient = Gradient(model)(inputs)
    expected = torch.einsum("nk,kchw->nchw", output.detach(), _weight_of(model, [0, 1, 2]))
    torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize(
    ("attr_output", "error", "message"),
    [
        (5, ValueError, "out of range"),
        ([0], ValueError, "one index per sample"),
        (torch.ones(4), ValueError, "does not fit"),
        (lambda output: 1.0, TypeError, "must return a tensor"),
        ("cat", TypeError, "attr_output must be"),
    ],
)
def test_bad_output_attribution_gives_a_clear_error(attr_output, error, message):
    with pytest.raises(error, match=message):
        Gradient(_linear_model())(_inputs(), attr_output)


class _CountingHook(Hook):
    calls = 0

    def backward(self, module, grad_input, grad_output):
        type(self).calls += 1
        return


def test_composite_is_registered_only_while_attributing():
    model, inputs = _linear_model(), _inputs()

    def module_map(ctx, name, module):
        return _CountingHook() if isinstance(module, nn.Linear) else None

    composite = Composite(module_map=module_map)
    _CountingHook.calls = 0
    Gradient(model, composite)(inputs, 0)
    assert _CountingHook.calls == 1
    assert not model[1]._forward_hooks and not model[1]._forward_pre_hooks
    with Gradient(model, composite) as attributor:
        assert model[1]._forward_hooks
        attributor(inputs, 0)
        attributor(inputs, 1)
    assert _CountingHook.calls == 3
    assert not model[1]._forward_hooks and not model[1]._forward_pre_hooks


def test_gradient_works_under_no_grad_and_returns_detached_attribution():
    model, inputs = _linear_model(), _inputs()
    with torch.no_grad():
        _, gradient = Gradient(model)(inputs, 0)
    assert not gradient.requires_grad
    torch.testing.assert_close(gradient, _weight_of(model, [0, 0]))


def test_smoothgrad_with_one_iteration_or_no_noise_is_the_gradient():
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    inputs = _inputs()
    expected = Gradient(model)(inputs, 1)[1]
    torch.testing.assert_close(SmoothGrad(model, n_iter=1)(inputs, 1)[1], expected)
    torch.testing.assert_close(SmoothGrad(model, noise_level=0.0, n_iter=3)(inputs, 1)[1], expected)
    noisy = SmoothGrad(model, noise_level=0.5, n_iter=4)(inputs, 1)[1]
    assert not torch.allclose(noisy, expected)


def test_smoothgrad_noise_scales_with_each_sample_range():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.flatten(1)[:, :3] * 1.0

    inputs = _inputs(batch=2)
    inputs[1] *= 1000.0
    SmoothGrad(Recorder(), noise_level=0.1, n_iter=3)(inputs, 0)
    noise = torch.stack(seen[:-1]) - inputs
    spread = inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)
    ratio = noise.flatten(2).std(dim=(0, 2)) / spread
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.1), rtol=0.25, atol=0.0)
    assert torch.equal(seen[-1], inputs)


def test_integrated_gradients_of_a_quadratic_on_the_path_points():
    class Square(nn.Module):
        def forward(self, x):
            return (x**2).flatten(1).sum(1, keepdim=True)

    inputs, baseline = _inputs(), torch.full((2, 2, 4, 4), 0.5, dtype=torch.float64)
    n_iter = 4
    output, attribution = IntegratedGradients(
        Square(), baseline_fn=lambda x: baseline, n_iter=n_iter
    )(inputs, torch.ones(2, 1, dtype=torch.float64))
    alphas = torch.arange(1, n_iter + 1, dtype=torch.float64) / n_iter
    mean_gradient = sum(2 * (baseline + a * (inputs - baseline)) for a in alphas) / n_iter
    torch.testing.assert_close(attribution, mean_gradient * (inputs - baseline))
    torch.testing.assert_close(output, Square()(inputs))


def test_integrated_gradients_is_complete_for_a_linear_model():
    model, inputs = _linear_model(), _inputs()
    output, attribution = IntegratedGradients(model, n_iter=2)(inputs, [0, 2])
    zero_output = model(torch.zeros_like(inputs))
    difference = output.detach()[[0, 1], [0, 2]] - zero_output.detach()[[0, 1], [0, 2]]
    torch.testing.assert_close(attribution.flatten(1).sum(1), difference)


def test_occlusion_scores_windows_of_a_sum_model():
    class Total(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1, keepdim=True)

    inputs = torch.arange(1.0, 17.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    output, scores = Occlusion(Total(), window=2, stride=2)(inputs, lambda out: out)
    assert output.item() == inputs.sum()
    expected = torch.tensor([[14.0, 22.0], [46.0, 54.0]], dtype=torch.float64)
    torch.testing.assert_close(
        scores[0, 0], expected.repeat_interleave(2, 0).repeat_interleave(2, 1)
    )


def test_occlusion_windows_wrap_around_and_overlap():
    class Total(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1, keepdim=True)

    inputs = torch.ones(1, 1, 1, 6, dtype=torch.float64)
    _, scores = Occlusion(Total(), window=(1, 3), stride=(1, 2))(inputs, lambda out: out)
    assert scores.flatten().tolist() == [6.0, 3.0, 6.0, 3.0, 6.0, 3.0]


def test_occlusion_with_a_class_index_scores_that_class_output():
    model, inputs = _linear_model(), _inputs()
    window = (4, 4)
    _, by_index = Occlusion(model, window=window, stride=window)(inputs, attr_output=[0, 2])
    selected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    _, by_callable = Occlusion(model, window=window, stride=window)(
        inputs, lambda out: out * selected
    )
    torch.testing.assert_close(by_index, by_callable)
    torch.testing.assert_close(by_index[:, 0, 0, 0], model(inputs).detach()[[0, 1], [0, 2]])


def test_occlude_independent_keeps_or_fills_the_window():
    inputs = torch.arange(4.0).reshape(1, 4)
    mask = torch.tensor([[True, True, False, False]])
    assert occlude_independent(inputs, mask).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    filled = occlude_independent(inputs, mask, fill_fn=torch.ones_like, invert=True)
    assert filled.tolist() == [[1.0, 1.0, 2.0, 3.0]]


@pytest.mark.parametrize(("window", "stride"), [(0, 1), ((1, 1, 1, 1, 1), 1), (2, (1, 0))])
def test_occlusion_rejects_bad_windows(window, stride):
    with pytest.raises(ValueError, match="occlusion"):
        Occlusion(_linear_model(), window=window, stride=stride)(_inputs(), 0)


@pytest.mark.parametrize("attributor", [SmoothGrad, IntegratedGradients])
def test_iterations_must_be_positive(attributor):
    with pytest.raises(ValueError, match="n_iter"):
        attributor(_linear_model(), n_iter=0)
