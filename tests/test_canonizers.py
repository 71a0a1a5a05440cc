"""Tests of the canonizers: exact merging, exact removal, clear errors, atomic application."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from lrp_desktop_core.canonizers import (
    CANONIZERS,
    AttributeCanonizer,
    Canonizer,
    CompositeCanonizer,
    MergeBatchNorm,
    NamedMergeBatchNorm,
    SequentialMergeBatchNorm,
    get_canonizers,
)
from lrp_desktop_core.layer import Sum
from lrp_desktop_core.torchvision import (
    ResNetBasicBlockCanonizer,
    ResNetBottleneckCanonizer,
    ResNetCanonizer,
    VGGCanonizer,
)


def _randomize_batch_norm(batch_norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        channels = batch_norm.running_mean.numel()
        batch_norm.running_mean.copy_(torch.randn(channels))
        batch_norm.running_var.copy_(torch.rand(channels) + 0.5)
        if batch_norm.weight is not None:
            batch_norm.weight.copy_(torch.rand(channels) + 0.5)
            batch_norm.bias.copy_(torch.randn(channels))
    return batch_norm


def _state(module: nn.Module) -> dict[str, object]:
    """Every object a canonizer could touch, by identity, plus copies of the values."""
    return {
        name: (dict(vars(sub)), {key: list(vars(sub)[key].items()) for key in _STORES})
        for name, sub in module.named_modules()
    } | {"values": {key: value.clone() for key, value in module.state_dict().items()}}


_STORES = ("_parameters", "_buffers", "_modules")


def _assert_restored(module: nn.Module, before: dict[str, object]) -> None:
    after = _state(module)
    values = after.pop("values")
    expected_values = before["values"]
    assert list(values) == list(expected_values)
    assert all(torch.equal(values[key], expected_values[key]) for key in values)
    assert after.keys() == before.keys() - {"values"}
    for name, (attributes, stores) in after.items():
        old_attributes, old_stores = before[name]
        assert attributes.keys() == old_attributes.keys(), name
        assert all(attributes[key] is old_attributes[key] for key in attributes), name
        for key in _STORES:
            assert [k for k, _ in stores[key]] == [k for k, _ in old_stores[key]], (name, key)
            assert all(a is b for (_, a), (_, b) in zip(stores[key], old_stores[key])), name


def _conv_bn(bias: bool, batch_norm: nn.Module | None = None) -> nn.Sequential:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=bias), batch_norm or nn.BatchNorm2d(4), nn.ReLU()
    ).double()
    _randomize_batch_norm(model[1])
    return model.eval()


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(_conv_bn(bias=True), id="conv-bias"),
        pytest.param(_conv_bn(bias=False), id="conv-no-bias"),
        pytest.param(_conv_bn(True, nn.BatchNorm2d(4, affine=False)), id="not-affine"),
        pytest.param(_conv_bn(True, FrozenBatchNorm2d(4)), id="frozen"),
        pytest.param(
            nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)).double().eval(), id="linear"
        ),
        pytest.param(
            nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2), nn.BatchNorm2d(6)).double().eval(),
            id="transposed-grouped",
        ),
    ],
)
def test_merged_model_computes_the_same_and_removal_is_exact(model):
    _randomize_batch_norm(model[1])
    in_features = model[0].in_features if isinstance(model[0], nn.Linear) else None
    shape = (2, in_features) if in_features else (2, model[0].in_channels, 6, 6)
    inputs = torch.randn(shape, dtype=torch.float64)
    expected = model(inputs)
    before = _state(model)
    original_weight = model[0].weight
    (instance,) = SequentialMergeBatchNorm().apply(model)
    assert model[0].weight is not original_weight
    assert model[0].bias is not None
    assert torch.equal(model[1](inputs), inputs)
    torch.testing.assert_close(model(inputs), expected, rtol=1e-12, atol=1e-12)
    instance.remove()
    _assert_restored(model, before)
    assert torch.equal(model(inputs), expected)


def test_merge_keeps_a_positive_epsilon_and_needs_no_special_torch():
    model = _conv_bn(bias=True)
    eps = model[1].eps
    applied = SequentialMergeBatchNorm().apply(model)
    assert model[1].eps == eps > 0
    for instance in applied:
        instance.remove()


def test_sequential_merge_ignores_layers_that_are_only_registered_next_to_each_other():
    class SideBySide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.norm = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.conv(x) + self.norm(x[:, :1].expand(-1, 4, -1, -1))

    assert SequentialMergeBatchNorm().apply(SideBySide()) == []


def test_merge_errors_name_the_problem():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(TypeError, match="only batch norms"):
        MergeBatchNorm().register([conv], nn.ReLU())
    with pytest.raises(ValueError, match="running statistics"):
        MergeBatchNorm().register([conv], nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="4 output channels"):
        MergeBatchNorm().register([conv], nn.BatchNorm2d(5))
    with pytest.raises(TypeError, match="Linear"):
        MergeBatchNorm().register([nn.ReLU()], nn.BatchNorm2d(4))
    with pytest.raises(NotImplementedError, match="SequentialMergeBatchNorm"):
        MergeBatchNorm().apply(conv)
    merge = MergeBatchNorm()
    merge.register([conv], nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="already registered"):
        merge.register([conv], nn.BatchNorm2d(4))
    merge.remove()


def test_named_merge_uses_names_and_rejects_unknown_ones():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).double().eval()
    _randomize_batch_norm(model[2])
    inputs = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    expected = model[2](model[0](inputs))
    applied = NamedMergeBatchNorm([(["0"], "2")]).apply(model)
    torch.testing.assert_close(model[0](inputs), expected)
    for instance in applied:
        instance.remove()
    with pytest.raises(ValueError, match=r"no module.*nope"):
        NamedMergeBatchNorm([(["0"], "nope")]).apply(model)


def test_failed_apply_leaves_nothing_applied():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, affine=False)
    ).eval()
    model[3].running_mean = None  # a batch norm without running statistics cannot be merged
    before = _state(model)
    with pytest.raises(ValueError, match="running statistics"):
        NamedMergeBatchNorm([(["0"], "1"), (["2"], "3")]).apply(model)
    _assert_restored(model, before)


def test_attribute_canonizer_overrides_and_restores_exactly():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    model[1].note = "original"

    def doubled(self, x):
        return 2 * x

    def attribute_map(name, module):
        if isinstance(module, nn.ReLU):
            return {
                "forward": types.MethodType(doubled, module),
                "note": "changed",
                "helper": nn.Identity(),
            }
        return None

    before = _state(model)
    inputs = torch.randn(2, 3)
    applied = AttributeCanonizer(attribute_map).apply(model)
    assert len(applied) == 1
    assert model[1].note == "changed"
    assert "1.helper" in dict(model.named_modules())
    assert torch.equal(model(inputs), 2 * model[0](inputs))
    applied[0].remove()
    _assert_restored(model, before)
    assert model[1].note == "original"


def test_composite_canonizer_applies_in_order_and_reverts_on_failure():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    before = _state(model)

    class Failing(Canonizer):
        def apply(self, root_module):
            raise RuntimeError("cannot canonize")

        def register(self):
            raise AssertionError("not used")

        def remove(self):
            raise AssertionError("not used")

    with pytest.raises(RuntimeError, match="cannot canonize"):
        CompositeCanonizer([SequentialMergeBatchNorm(), Failing()]).apply(model)
    _assert_restored(model, before)
    applied = CompositeCanonizer([SequentialMergeBatchNorm()]).apply(model)
    assert [type(instance) for instance in applied] == [SequentialMergeBatchNorm]
    applied[0].remove()
    _assert_restored(model, before)


def _small_resnet(block: type[nn.Module]) -> ResNet:
    model = ResNet(block, [1, 1, 1, 1], num_classes=7).double().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            _randomize_batch_norm(module)
    return model


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_resnet_canonizer_merges_all_batch_norms_and_adds_sums(block):
    model = _small_resnet(block)
    inputs = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    expected = model(inputs)
    before = _state(model)
    applied = ResNetCanonizer().apply(model)
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all("forward" in vars(batch_norm) for batch_norm in batch_norms)
    sums = [name for name, module in model.named_modules() if isinstance(module, Sum)]
    assert sums == [f"layer{k}.0.canonizer_sum" for k in range(1, 5)]
    torch.testing.assert_close(model(inputs), expected, rtol=1e-10, atol=1e-10)
    for instance in reversed(applied):
        instance.remove()
    _assert_restored(model, before)


def test_block_canonizers_only_touch_their_own_block_type():
    model = _small_resnet(BasicBlock)
    assert ResNetBottleneckCanonizer().apply(model) == []
    applied = ResNetBasicBlockCanonizer().apply(model)
    assert len(applied) == 4
    for instance in applied:
        instance.remove()


def test_copies_are_fresh_and_of_the_same_kind():
    for canonizer in (VGGCanonizer(), ResNetCanonizer(), NamedMergeBatchNorm([(["a"], "b")])):
        copy = canonizer.copy()
        assert type(copy) is type(canonizer) and copy is not canonizer


def test_named_canonizer_sets():
    assert set(CANONIZERS) == {"none", "merge_batchnorm", "vgg", "resnet", "torchvision"}
    assert get_canonizers("none") == []
    assert [type(c) for c in get_canonizers("merge_batchnorm")] == [SequentialMergeBatchNorm]
    assert [type(c) for c in get_canonizers("vgg")] == [VGGCanonizer]
    assert [type(c) for c in get_canonizers("resnet")] == [ResNetCanonizer]
    assert get_canonizers("resnet")[0] is not get_canonizers("resnet")[0]
    with pytest.raises(ValueError, match="merge_batchnorm, none, resnet, torchvision, vgg"):
        get_canonizers("densenet")


def test_merged_weights_are_reused_while_the_parameters_are_unchanged():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)).eval()
    conv, bn = model

    def merged_weight():
        applied = SequentialMergeBatchNorm().apply(model)
        try:
            return conv.weight
        finally:
            for instance in reversed(applied):
                instance.remove()

    original = conv.weight
    first = merged_weight()
    assert merged_weight() is first  # unchanged parameters: the merged tensor is reused
    assert conv.weight is original
    with torch.no_grad():
        bn.running_var.mul_(2.0)  # an in-place change of the statistics
    second = merged_weight()
    assert second is not first
    expected = (
        conv.weight.detach() * (bn.weight / (bn.running_var + bn.eps).sqrt())[:, None, None, None]
    )
    torch.testing.assert_close(second.detach(), expected.detach())
    with torch.no_grad():
        conv.weight.add_(1.0)  # an in-place change of the layer's weight
    assert merged_weight() is not second
    model.load_state_dict(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)).state_dict())
    third = merged_weight()
    expected = (
        conv.weight.detach() * (bn.weight / (bn.running_var + bn.eps).sqrt())[:, None, None, None]
    )
    torch.testing.assert_close(third.detach(), expected.detach())
    assert conv.weight is original


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_a_skeleton_on_the_meta_device_gets_the_shapes_and_dtypes_of_real_merging(dtype, affine):
    """Skeletons skip the arithmetic; what they get must look exactly like the real merge."""
    real = nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False),
        _randomize_batch_norm(nn.BatchNorm2d(6, affine=affine)),
        nn.ConvTranspose2d(6, 4, 3, groups=2),
        _randomize_batch_norm(nn.BatchNorm2d(4, affine=affine)),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
        _randomize_batch_norm(nn.BatchNorm1d(5, affine=affine)),
    ).to(dtype)
    real.eval()
    skeleton = copy.deepcopy(real).to("meta")
    merged = {}
    for model in (real, skeleton):
        applied = SequentialMergeBatchNorm().apply(model)
        assert len(applied) == 3
        try:
            merged[model] = {
                name: (p.shape, p.dtype, p.device.type) for name, p in model.named_parameters()
            }
        finally:
            for canonizer in applied:
                canonizer.remove()
    assert {name: shape_and_dtype[:2] for name, shape_and_dtype in merged[real].items()} == {
        name: shape_and_dtype[:2] for name, shape_and_dtype in merged[skeleton].items()
    }
    assert {device for *_, device in merged[skeleton].values()} == {"meta"}
    assert {name: p.shape for name, p in skeleton.named_parameters()} == {
        name: p.shape for name, p in real.named_parameters()
    }  # removed again: the skeleton's own parameters are back
