"""Tests that weights holding NaN or inf are refused when a model is loaded, naming the tensor."""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lrp_desktop_core.demo_net import build_demo_net
from lrp_desktop_core.models import ModelLoadError, get_spec, load_model
from lrp_desktop_core.weightfiles import read_weights


def _small_module() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def _poison(tensor: torch.Tensor, nan: int, inf: int) -> None:
    """Write ``nan`` NaNs and then ``inf`` (alternately signed) infinities into ``tensor``."""
    flat = tensor.data.view(-1)
    flat[:nan] = math.nan
    for offset in range(inf):
        flat[nan + offset] = math.inf if offset % 2 == 0 else -math.inf


def _assert_names(error: pytest.ExceptionInfo, name: str, nan: int, inf: int) -> None:
    message = str(error.value)
    assert re.search(rf"\b{re.escape(name)} holds {nan + inf} non-finite values", message)
    assert f"({nan} NaN, {inf} inf)" in message
    assert "earlier checkpoint" in message


@pytest.mark.parametrize(
    ("layer", "tensor", "nan", "inf"),
    [(0, "weight", 2, 0), (1, "running_var", 0, 1)],
    ids=["nan in a parameter", "inf in a buffer"],
)
def test_whole_module_file_with_non_finite_values_names_the_tensor(
    tmp_path, layer, tensor, nan, inf
):
    model = _small_module()
    _poison(getattr(model[layer], tensor), nan=nan, inf=inf)
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(ModelLoadError) as error:
        load_model(path, trust=True)
    _assert_names(error, f"{layer}.{tensor}", nan=nan, inf=inf)
    assert str(path) in str(error.value)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_file_with_nan_weights_is_refused(tmp_path):
    model = _small_module()
    _poison(model[5].bias, nan=1, inf=1)
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    with pytest.raises(ModelLoadError) as error:
        load_model(path, trust=True)
    _assert_names(error, "5.bias", nan=1, inf=1)


def _demo_state_with_bad_values() -> tuple[dict[str, torch.Tensor], str]:
    state = {key: value.clone() for key, value in build_demo_net().state_dict().items()}
    floating = [key for key, value in state.items() if value.is_floating_point()]
    first, later = floating[0], floating[-1]
    _poison(state[later], nan=1, inf=0)  # only the first bad tensor in file order is named
    _poison(state[first], nan=3, inf=2)
    return state, first


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_file_with_non_finite_values_names_the_first_tensor(tmp_path, suffix):
    state, first = _demo_state_with_bad_values()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_file(state, str(path), metadata={"architecture": "demo"})
    with pytest.raises(ModelLoadError) as error:
        load_model("demo", weights=path)
    _assert_names(error, first, nan=3, inf=2)
    if suffix == ".safetensors":  # the file names its architecture, so it also loads on its own
        with pytest.raises(ModelLoadError, match=re.escape(first)):
            load_model(path)


def test_state_dict_for_a_registry_architecture_is_checked(tmp_path):
    model = get_spec("squeezenet1_1").builder()
    state = model.state_dict()
    _poison(state["features.0.weight"], nan=0, inf=4)
    path = tmp_path / "squeezenet.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError) as error:
        load_model("squeezenet1_1", weights=path)
    _assert_names(error, "features.0.weight", nan=0, inf=4)


def test_integer_tensors_and_finite_weights_pass(tmp_path):
    state = {key: value.clone() for key, value in build_demo_net().state_dict().items()}
    assert any(not value.is_floating_point() for value in state.values())  # num_batches_tracked
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    loaded = load_model("demo", weights=path)
    assert loaded.weights_path == path
    assert read_weights(path).state_dict.keys() == state.keys()


@pytest.mark.parametrize("name", ["demo", "squeezenet1_1", "mobilenet_v3_small"])
def test_registry_models_with_random_weights_are_finite(name):
    spec = get_spec(name)
    model = spec.builder() if name == "demo" else load_model(name).model
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors
    assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
    logits = model.eval()(torch.zeros(1, 3, *spec.input_size))
    assert logits.shape == (1, spec.num_classes)
    assert torch.isfinite(logits).all()
