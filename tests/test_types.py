"""Layer type groups: isinstance and issubclass membership."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_desktop_core import types
from lrp_desktop_core.types import (
    Activation,
    AvgPool,
    BatchNorm,
    Convolution,
    ConvolutionStandard,
    ConvolutionTranspose,
    Linear,
    MaxPool,
)

STANDARD = [nn.Conv1d(2, 2, 1), nn.Conv2d(2, 2, 1), nn.Conv3d(2, 2, 1)]
TRANSPOSE = [nn.ConvTranspose1d(2, 2, 1), nn.ConvTranspose2d(2, 2, 1), nn.ConvTranspose3d(2, 2, 1)]


@pytest.mark.parametrize("module", STANDARD, ids=lambda m: type(m).__name__)
def test_standard_convolutions(module):
    assert isinstance(module, ConvolutionStandard)
    assert not isinstance(module, ConvolutionTranspose)
    assert isinstance(module, Convolution) and isinstance(module, Linear)


@pytest.mark.parametrize("module", TRANSPOSE, ids=lambda m: type(m).__name__)
def test_transposed_convolutions(module):
    assert isinstance(module, ConvolutionTranspose)
    assert not isinstance(module, ConvolutionStandard)
    assert isinstance(module, Convolution) and isinstance(module, Linear)


def test_dense_layer_is_linear_but_not_a_convolution():
    dense = nn.Linear(3, 2)
    assert isinstance(dense, Linear)
    assert not isinstance(dense, Convolution)


def test_subclasses_of_members_belong_to_the_group():
    class MyConv(nn.Conv2d):
        pass

    assert isinstance(MyConv(1, 1, 1), Convolution)
    assert issubclass(MyConv, Linear)


def test_batch_norm_includes_torchvisions_frozen_batch_norm():
    from torchvision.ops.misc import FrozenBatchNorm2d

    for module in (nn.BatchNorm1d(2), nn.BatchNorm2d(2), nn.BatchNorm3d(2), FrozenBatchNorm2d(2)):
        assert isinstance(module, BatchNorm)
    assert not isinstance(nn.LayerNorm(2), BatchNorm)


def test_pooling_groups_include_adaptive_variants_and_stay_apart():
    average = [nn.AvgPool1d(2), nn.AvgPool2d(2), nn.AvgPool3d(2), nn.AdaptiveAvgPool2d(1)]
    maximum = [nn.MaxPool1d(2), nn.MaxPool2d(2), nn.MaxPool3d(2), nn.AdaptiveMaxPool3d(1)]
    assert all(isinstance(m, AvgPool) and not isinstance(m, MaxPool) for m in average)
    assert all(isinstance(m, MaxPool) and not isinstance(m, AvgPool) for m in maximum)


def test_activation_holds_the_element_wise_activations_only():
    element_wise = [nn.ReLU(), nn.LeakyReLU(), nn.GELU(), nn.SiLU(), nn.Tanh(), nn.Sigmoid()]
    element_wise += [nn.Softplus(), nn.ELU(), nn.Mish(), nn.Hardswish(), nn.PReLU()]
    assert all(isinstance(m, Activation) for m in element_wise)
    for module in (nn.Softmax(dim=1), nn.MultiheadAttention(4, 1), nn.GLU(), nn.Linear(2, 2)):
        assert not isinstance(module, Activation)
    for member in Activation.members:
        module = (member() if member is not nn.Threshold else member(0.0, 0.0)).eval()
        x = torch.randn(2, 3)
        one_by_one = module(x.reshape(-1, 1)).reshape(x.shape)  # each element on its own
        torch.testing.assert_close(module(x), one_by_one)


def test_groups_compose_and_cannot_be_instantiated():
    assert issubclass(Convolution, Linear)
    assert issubclass(ConvolutionTranspose, Convolution)
    assert not issubclass(Linear, Convolution)
    assert not issubclass(nn.ReLU, Linear)
    with pytest.raises(TypeError, match="isinstance"):
        Linear()


def test_all_groups_are_exported():
    assert set(types.__all__) >= {
        "Activation", "AvgPool", "BatchNorm", "Convolution", "ConvolutionStandard",
        "ConvolutionTranspose", "Linear", "MaxPool",
    }  # fmt: skip
