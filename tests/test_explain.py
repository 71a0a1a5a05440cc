"""Tests of explain(): every method, targets, cancellation, progress and an untouched model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lrp_desktop_core.attribution import Gradient, IntegratedGradients
from lrp_desktop_core.explain import (
    ExplainCancelled,
    Method,
    explain,
    model_device,
    relevance_conservation,
)
from lrp_desktop_core.rulemap import RuleChoice, RuleMap


def small_net() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def linear_net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()


def snapshot(model: nn.Module) -> dict:
    return {
        "params": [(name, id(p), p.detach().clone()) for name, p in model.named_parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "hooks": [
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            for m in model.modules()
        ],
        "grads": [p.grad for p in model.parameters()],
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for (name, ident, value), (name2, ident2, value2) in zip(
        before["params"], after["params"], strict=True
    ):
        assert name == name2 and ident == ident2 and torch.equal(value, value2)
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    assert before["modes"] == after["modes"]
    assert before["hooks"] == after["hooks"]
    assert all(grad is None for grad in after["grads"])


def test_gradient_top1_and_result_fields():
    model = small_net()
    x = torch.randn(3, 3, 8, 8)
    result = explain(model, x, Method("gradient"))
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_array_equal(result.target, logits.argmax(1).numpy())
    np.testing.assert_allclose(result.logits, logits.numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.probabilities.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(result.explained_output, logits.max(1).values.numpy(), rtol=1e-6)
    expected = Gradient(model)(x, result.target.tolist())[1]
    np.testing.assert_allclose(result.relevance, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert result.relevance.dtype == np.float32 and result.relevance.shape == (3, 3, 8, 8)
    np.testing.assert_allclose(result.relevance_sum, result.relevance.sum((1, 2, 3)), rtol=1e-5)
    assert result.method == Method("gradient") and result.device == "cpu" and len(result) == 3


def test_targets_int_list_and_out_of_range():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    np.testing.assert_array_equal(explain(model, x, Method("gradient"), 4).target, [4, 4])
    np.testing.assert_array_equal(explain(model, x, Method("gradient"), [1, 3]).target, [1, 3])
    with pytest.raises(ValueError, match="out of range"):
        explain(model, x, Method("gradient"), 5)
    with pytest.raises(ValueError, match="one target per sample"):
        explain(model, x, Method("gradient"), [1, 2, 3])


def test_integrated_gradients_matches_attribution_and_completes_for_linear_models():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    result = explain(model, x, Method("integrated_gradients", params={"n_iter": 7}), [0, 2])
    expected = IntegratedGradients(model, n_iter=7)(x, [0, 2])[1]
    np.testing.assert_allclose(result.relevance, expected.numpy(), rtol=1e-5, atol=1e-6)

    linear = linear_net()
    x = torch.randn(2, 3, 4, 4)
    result = explain(linear, x, Method("integrated_gradients", params={"n_iter": 3}), 1)
    with torch.no_grad():
        gap = (linear(x) - linear(torch.zeros_like(x)))[:, 1]
    np.testing.assert_allclose(result.relevance_sum, gap.numpy(), rtol=1e-5)


def test_smoothgrad_is_seeded_and_reduces_to_the_gradient():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    method = Method("smoothgrad", params={"n_iter": 3, "noise_level": 0.2, "seed": 5})
    first, second = explain(model, x, method, 0), explain(model, x, method, 0)
    np.testing.assert_array_equal(first.relevance, second.relevance)
    noiseless = explain(model, x, Method("smoothgrad", params={"n_iter": 2, "noise_level": 0.0}), 0)
    plain = explain(model, x, Method("gradient"), 0)
    np.testing.assert_allclose(noiseless.relevance, plain.relevance, rtol=1e-5, atol=1e-7)
    assert not np.allclose(first.relevance, plain.relevance)


def test_occlusion_of_a_linear_model_gives_the_window_contributions():
    model = linear_net()
    x = torch.randn(1, 3, 4, 4)
    method = Method("occlusion", params={"window": 2, "stride": 2, "batch_size": 3})
    result = explain(model, x, method, 2)
    contribution = (model[1].weight[2].view(3, 4, 4) * x[0]).sum(0).detach()
    window_sums = contribution.view(2, 2, 2, 2).sum((1, 3))  # (window row, window column)
    expected = window_sums.repeat_interleave(2, 0).repeat_interleave(2, 1)
    # every element of the window, in each of the 3 channels, gets the window's drop
    per_channel = expected.expand(3, 4, 4).numpy()
    np.testing.assert_allclose(result.relevance[0], per_channel, rtol=1e-5, atol=1e-6)


def test_overlapping_occlusion_windows_add_up_and_wrap_around():
    model = linear_net()
    x = torch.ones(1, 3, 4, 4)
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    method = Method("occlusion", params={"window": 3, "stride": 2})
    relevance = explain(model, x, method, 0).relevance[0, 0]
    # every 3 x 3 window removes 27 ones; windows start at 0 and 2 and wrap around the border
    # (as zennit's), so rows and columns 0 and 2 lie in two windows, 1 and 3 in one
    per_axis = np.array([2.0, 1.0, 2.0, 1.0])
    np.testing.assert_allclose(relevance, 27.0 * np.outer(per_axis, per_axis), rtol=1e-6)


def test_progress_and_cancel_between_iterations():
    model = small_net()
    x = torch.randn(1, 3, 8, 8)
    reports = []
    explain(model, x, Method("smoothgrad", params={"n_iter": 4}), progress=reports.append)
    assert reports == pytest.approx([0.25, 0.5, 0.75, 1.0])
    before = snapshot(model)
    polls = []

    def cancel() -> bool:
        polls.append(None)
        return len(polls) > 2

    with pytest.raises(ExplainCancelled):
        explain(model, x, Method("integrated_gradients", params={"n_iter": 10}), cancel=cancel)
    assert len(polls) == 3
    assert_untouched(model, before)


def test_training_mode_model_is_explained_in_eval_mode_and_restored():
    model = small_net().train()
    model[2].eval()  # a mixed state must come back as it was
    before = snapshot(model)
    explain(model, torch.randn(2, 3, 8, 8), Method("gradient"))
    assert_untouched(model, before)


def test_method_validation_hash_and_labels():
    with pytest.raises(ValueError, match="unknown method"):
        Method("deeplift")
    with pytest.raises(ValueError, match="rule map"):
        Method("lrp")
    with pytest.raises(ValueError, match="n_steps"):
        Method("integrated_gradients", params={"n_steps": 3})
    a = Method("smoothgrad", params={"n_iter": 5, "noise_level": 0.1})
    b = Method("smoothgrad", params={"noise_level": 0.1, "n_iter": 5})
    assert a == b and hash(a) == hash(b) and len({a, b, Method("gradient")}) == 2
    assert a.label() == "SmoothGrad (5 x 0.1)"
    assert Method("occlusion").label() == "Occlusion (8 px, stride 8)"
    assert a.to_dict()["seed"] == 0


def test_conservation_ratio():
    result = explain(linear_net(), torch.randn(2, 3, 4, 4), Method("gradient"))
    ratio = relevance_conservation(result)
    np.testing.assert_allclose(ratio, result.relevance_sum / result.explained_output, rtol=1e-6)


@pytest.mark.cuda
def test_runs_on_the_models_cuda_device():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    on_cpu = explain(model, x, Method("gradient"))
    model.cuda()
    on_gpu = explain(model, x, Method("gradient"))
    assert on_gpu.device.startswith("cuda") and model_device(model).type == "cuda"
    np.testing.assert_allclose(on_gpu.relevance, on_cpu.relevance, rtol=1e-4, atol=1e-6)


def test_lrp_epsilon_on_a_linear_model_gives_the_contributions():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3, bias=False)).eval()
    rulemap = RuleMap({"1": RuleChoice("Epsilon", {"epsilon": 1e-9})}, preset="eps")
    x = torch.randn(2, 3, 4, 4)
    result = explain(model, x, Method("lrp", rulemap), [0, 2])
    weights = model[1].weight.detach().view(3, 3, 4, 4)
    expected = torch.stack([x[0] * weights[0], x[1] * weights[2]])
    np.testing.assert_allclose(result.relevance, expected.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(relevance_conservation(result), [1.0, 1.0], rtol=1e-4)
    assert Method("lrp", rulemap).label() == "LRP eps"


def test_lrp_leaves_the_model_untouched_also_when_failing_half_way():
    model = small_net()
    rulemap = RuleMap.from_preset(model, "epsilon_plus", "merge_batchnorm")
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    result = explain(model, x, Method("lrp", rulemap))
    assert_untouched(model, before)
    with torch.no_grad():
        np.testing.assert_allclose(result.logits, model(x).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        explain(model, x, Method("lrp", rulemap), 7)  # fails after the composite is registered
    assert_untouched(model, before)
    with pytest.raises(ExplainCancelled):
        explain(model, x, Method("lrp", rulemap), cancel=lambda: True)
    assert_untouched(model, before)


def test_lrp_warns_where_the_stabilizer_takes_the_relevance_of_a_tiny_output():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3, bias=False)).eval()
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        model[1].weight.abs_().mul_(1e-9)  # positive weights and inputs: outputs of about 1e-8
        x[1] *= 1e6  # the second image's output is large enough
    coarse = RuleMap({"1": RuleChoice("Epsilon", {"epsilon": 1e-6})}, preset="eps")
    result = explain(model, x, Method("lrp", coarse), 0)
    (warning,) = result.warnings
    tiny = abs(float(result.explained_output[0]))
    assert f"({tiny:.2g})" in warning and "(1e-06)" in warning
    assert "1 of the 2 images in the batch (1)" in warning
    ratio = relevance_conservation(result)
    assert ratio[0] < 0.05 and abs(ratio[1] - 1) < 1e-3  # what the warning is about
    fine = RuleMap({"1": RuleChoice("Epsilon", {"epsilon": 1e-20})}, preset="eps")
    result = explain(model, x, Method("lrp", fine), 0)
    assert result.warnings == ()
    np.testing.assert_allclose(relevance_conservation(result), [1.0, 1.0], rtol=1e-4)
    assert explain(model, x[:1], Method("gradient")).warnings == ()
