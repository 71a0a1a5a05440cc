"""Tests of building a network without random weights when a weights file fills it."""

import pytest
import torch
from torch import nn

from lrp_desktop_core.models import ModelLoadError, load_model
from lrp_desktop_core.uninitialised import INITIALISERS, initialisers_skipped

SMALLEST_OF_EACH_FAMILY = [
    "demo",
    "demo_vit",
    "resnet18",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mobilenet_v3_small",
    "mnasnet0_5",  # its layers refuse a state dict without module versions: a file keeps none
    "efficientnet_b0",
    "regnet_y_400mf",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "convnext_tiny",
    "swin_t",
    "swin_v2_t",
    "maxvit_t",
    "vit_b_32",
]


def every_tensor(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters, buffers (persistent or not) and plain tensor attributes, by qualified name."""
    tensors = {}
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{name}"] = value
        for name, value in [*module._parameters.items(), *module._buffers.items()]:
            if value is not None:
                tensors[f"{prefix}.{name}"] = value
    return tensors


@pytest.mark.parametrize("name", SMALLEST_OF_EACH_FAMILY)
def test_a_network_loaded_from_a_weights_file_equals_the_one_saved(tmp_path, name):
    saved = load_model(name) if name.startswith("demo") else load_model(name, seed=3)
    path = tmp_path / f"{name}.pt"
    torch.save(saved.model.state_dict(), path)
    loaded = load_model(name, weights=path)
    expected, actual = every_tensor(saved.model), every_tensor(loaded.model)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and torch.equal(actual[key], value), key


def test_the_loaded_network_computes_what_the_saved_one_does(tmp_path):
    saved = load_model("swin_v2_t", seed=1)
    path = tmp_path / "swin.pt"
    torch.save(saved.model.state_dict(), path)
    loaded = load_model("swin_v2_t", weights=path)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(image), saved.model(image))


def test_initialisers_are_skipped_inside_the_block_only():
    weight = torch.full((3, 3), 7.0)
    with initialisers_skipped():
        for name in ("kaiming_uniform_", "zeros_", "trunc_normal_", "orthogonal_"):
            assert getattr(nn.init, name)(weight) is weight
        layer = nn.Linear(3, 3)  # built, with its parameters left as allocated
        assert layer.weight.shape == (3, 3)
    assert torch.equal(weight, torch.full((3, 3), 7.0))
    nn.init.zeros_(weight)
    assert not weight.any()
    assert {"kaiming_uniform_", "xavier_normal_", "ones_", "constant_"} <= set(INITIALISERS)


def test_initialisers_come_back_after_an_error():
    before = {name: getattr(nn.init, name) for name in INITIALISERS}
    with pytest.raises(RuntimeError, match="half-built"), initialisers_skipped():
        raise RuntimeError("half-built")
    assert {name: getattr(nn.init, name) for name in INITIALISERS} == before


def test_weights_that_leave_a_parameter_unfilled_are_refused(tmp_path):
    state = load_model("resnet18", seed=0).model.state_dict()
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=r"missing from the file: .*layer1\.0\.conv1\.weight"):
        load_model("resnet18", weights=path)
