"""NaN and inf, inputs that do not fit the model, and running out of memory: clear errors."""

from __future__ import annotations

import re

import pytest
import torch
from test_explain import assert_untouched, small_net, snapshot
from torch import nn

from lrp_desktop_core.attribution import Gradient, IntegratedGradients, Occlusion, check_input
from lrp_desktop_core.explain import (
    DeviceOutOfMemoryError,
    Method,
    NonFiniteError,
    explain,
)
from lrp_desktop_core.rulemap import RuleChoice, RuleMap


def epsilon(*layers: str, value: float = 1e-6) -> Method:
    """LRP with the epsilon rule on ``layers`` (the others pass relevance on as the gradient)."""
    rule = RuleChoice("Epsilon", {"epsilon": value})
    return Method("lrp", RuleMap(dict.fromkeys(layers, rule), preset="eps"))


EPSILON = epsilon("0", "5")  # small_net's convolution and linear layer


def test_nan_in_the_input_names_the_images_and_the_count():
    model = small_net()
    x = torch.randn(3, 3, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    x[2, :, 0, 0] = float("inf")
    before = snapshot(model)
    with pytest.raises(NonFiniteError) as caught:
        explain(model, x, Method("gradient"))
    assert caught.value.what == "input"
    assert caught.value.samples == (1, 2)
    message = str(caught.value)
    assert "4 NaN or inf values" in message and "images 2, 3 of 3" in message
    assert "preprocessed" in message
    assert_untouched(model, before)


def test_nan_weights_give_an_error_about_the_logits():
    model = small_net()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    before = snapshot(model)
    for method in (Method("gradient"), EPSILON):
        with pytest.raises(NonFiniteError) as caught:
            explain(model, torch.randn(2, 3, 8, 8), method)
        assert caught.value.what == "logits" and caught.value.samples == (0, 1)
        assert "logits" in str(caught.value) and "weights file" in str(caught.value)
        after = snapshot(model)
        assert (before["hooks"], before["modes"]) == (after["hooks"], after["modes"])
        for (_, ident, value), (_, ident_after, value_after) in zip(
            before["params"], after["params"], strict=True
        ):
            assert ident == ident_after
            assert torch.allclose(value, value_after, rtol=0, atol=0, equal_nan=True)


def test_logits_of_only_some_images_are_named():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    with torch.no_grad():
        model[1].weight.fill_(1.0)
        model[1].bias.zero_()
    x = torch.ones(3, 3, 2, 2)
    x[1] *= 1e38  # finite, but its logits overflow float32
    with pytest.raises(NonFiniteError) as caught:
        explain(model, x, Method("gradient"))
    assert caught.value.samples == (1,)
    assert "image 2 of 3" in str(caught.value) and "float32" in str(caught.value)


def test_nan_relevance_suggests_a_larger_epsilon():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]))
        model[1].bias.zero_()
    x = torch.tensor([[1.0, 1.0, 0.5, 0.5]]).view(1, 1, 2, 2)  # the output of class 0 is 0
    assert explain(model, x, epsilon("1")).relevance.sum() == pytest.approx(1.0)
    with pytest.raises(NonFiniteError) as caught:
        explain(model, x, epsilon("1", value=0.0))  # 0 / 0 at class 0
    assert caught.value.what == "relevance" and caught.value.samples == (0,)
    assert "larger epsilon" in str(caught.value)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (
            torch.randn(2, 1, 8, 8),
            "Inputs have 1 channel, but the model's first layer (`0`, "
            "Conv2d) takes 3: give (N, 3, H, W)",
        ),
        (torch.randn(3, 8, 8), "add a batch dimension with x[None]"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), "convert them with x.float()"),
    ],
)
def test_inputs_that_do_not_fit_are_explained(inputs, expected):
    model = small_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match=re.escape(expected)):
        explain(model, inputs, Method("gradient"))
    assert_untouched(model, before)
    for attributor in (Gradient(model), IntegratedGradients(model, n_iter=2), Occlusion(model)):
        with pytest.raises(ValueError, match=re.escape(expected)):
            attributor(inputs, attr_output=0)


def test_check_input_knows_linear_layers_and_leaves_other_models_alone():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    check_input(flat, torch.zeros(2, 3, 4, 4))
    check_input(flat, torch.zeros(2, 48))
    with pytest.raises(ValueError, match=r"takes 48 features: give \(N, 48\)"):
        check_input(flat, torch.zeros(2, 1, 4, 4))
    embedding = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    check_input(embedding, torch.zeros(2, 5, dtype=torch.long))  # token ids are right here
    lazy = nn.Sequential(nn.LazyConv2d(4, 3))
    check_input(lazy, torch.zeros(1, 7, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(7, 8\), but \(N, C, H, W\) is needed\.$"):
        check_input(lazy, torch.zeros(7, 8), ndim=4)


class _RunsOutOfMemory(nn.Module):
    """Passes its input on, or raises CUDA's out-of-memory error while ``armed``."""

    armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise torch.cuda.OutOfMemoryError("simulated")
        return x


@pytest.mark.parametrize(
    "method", [EPSILON, Method("occlusion", params={"window": 4, "stride": 4})]
)
def test_out_of_memory_is_a_clear_error_and_the_next_run_works(method):
    model = small_net()
    trap = _RunsOutOfMemory()
    model.append(trap)
    model.train()
    before = snapshot(model)
    x = torch.randn(2, 3, 8, 8)
    expected = explain(model, x, method).relevance
    trap.armed = True
    with pytest.raises(DeviceOutOfMemoryError) as caught:
        explain(model, x, method)
    error = caught.value
    assert (error.batch_size, error.image_size, error.device) == (2, (8, 8), "cpu")
    assert "a batch of 2 images of 8 x 8 pixels" in str(error)
    assert "fewer images" in str(error) and "CPU" in str(error)
    assert ("occlusion batch size" in str(error)) == (method.kind == "occlusion")
    assert error.__context__ is None  # the failed computation's tensors are not kept alive
    assert_untouched(model, before)
    trap.armed = False
    assert (explain(model, x, method).relevance == expected).all()
    assert_untouched(model, before)
