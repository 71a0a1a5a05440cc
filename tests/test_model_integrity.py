"""A model is never changed by an attribution or a canonizer, also when something fails half-way.

After an attribution, after canonizers are removed and after an error in the middle of a backward
pass, the model has the same ``nn.Parameter`` objects, a bit-identical ``state_dict`` (batch-norm
running statistics and ``num_batches_tracked`` included), no leftover or missing instance
attribute in any module, no accumulated parameter gradients, and ``.to()``, ``.double()`` and
``.float()`` still work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from lrp_desktop_core.attribution import Gradient
from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.composites import EpsilonGammaBox, EpsilonPlusFlat
from lrp_desktop_core.core import Composite, Hook
from lrp_desktop_core.rules import Epsilon
from lrp_desktop_core.types import BatchNorm, Linear

INPUT_SIZE = 32


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and batch-norm buffer of ``model`` with random values, in place.

    Weights are uniform with a variance of 2 / fan-in, so activations keep their scale; biases are
    small. Batch norms get random non-trivial weights, biases and running statistics, so merging
    them changes the layers they are merged into. Returns ``model`` in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BatchNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.running_mean.normal_(0.0, 0.3, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.num_batches_tracked.fill_(module.num_features)
                continue
            for parameter in module.parameters(recurse=False):
                if parameter.ndim > 1:
                    bound = math.sqrt(6.0 / parameter[0].numel())
                    parameter.uniform_(-bound, bound, generator=generator)
                else:
                    parameter.uniform_(-0.1, 0.1, generator=generator)
    return model.eval()


def random_model(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """Build torchvision model ``name`` in eval mode with random values (see :func:`randomize`).

    The model is built on the meta device and filled directly, which is much faster than
    torchvision's own initialisation of the large dense layers.
    """
    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
    return randomize(model.to(dtype=dtype).to_empty(device="cpu"), seed)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().reshape(-1).contiguous().view(torch.uint8)


_STORES = ("_parameters", "_buffers", "_modules")
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
)


@dataclass
class ModuleRecord:
    """The instance attributes of one module: which objects, in which order, which hooks."""

    attributes: dict[str, Any]
    stores: dict[str, list[tuple[str, int]]]
    hooks: dict[str, list]

    @classmethod
    def of(cls, module: nn.Module) -> ModuleRecord:
        attributes = dict(vars(module))
        return cls(
            attributes=attributes,
            stores={
                store: [(key, id(value)) for key, value in attributes[store].items()]
                for store in _STORES
            },
            hooks={key: list(attributes[key]) for key in _HOOK_DICTS},
        )

    def assert_same(self, now: ModuleRecord, name: str, same_buffer_objects: bool) -> None:
        assert now.attributes.keys() == self.attributes.keys(), f"attributes of {name!r} changed"
        for key, value in now.attributes.items():
            if key not in _STORES:
                assert value is self.attributes[key], f"{name!r}.{key} was replaced"
        for store in _STORES:
            after, before = now.stores[store], self.stores[store]
            if store == "_buffers" and not same_buffer_objects:
                after, before = [key for key, _ in after], [key for key, _ in before]
            assert after == before, f"{store} of {name!r} changed"
        assert now.hooks == self.hooks, f"hooks left on {name!r}"


@dataclass
class Snapshot:
    """Everything about a model that an attribution must leave as it was."""

    parameters: dict[str, nn.Parameter]
    state: dict[str, torch.Tensor]
    modules: dict[str, ModuleRecord]

    @classmethod
    def take(cls, model: nn.Module) -> Snapshot:
        """Record ``model``'s parameters, state and the attributes of every module."""
        return cls(
            parameters=dict(model.named_parameters()),
            state={key: value.clone() for key, value in model.state_dict().items()},
            modules={name: ModuleRecord.of(module) for name, module in model.named_modules()},
        )

    def assert_unchanged(self, model: nn.Module, same_buffer_objects: bool = True) -> None:
        """Assert that ``model`` is exactly as it was when the snapshot was taken.

        ``same_buffer_objects=False`` allows new buffer objects with the same values, as after a
        dtype round trip (``.double().float()``), where torch replaces buffers.
        """
        parameters = dict(model.named_parameters())
        assert parameters.keys() == self.parameters.keys()
        for name, parameter in parameters.items():
            assert parameter is self.parameters[name], f"parameter {name} was replaced"
            assert parameter.grad is None, f"parameter {name} got a gradient"
        state = model.state_dict()
        assert list(state) == list(self.state)
        for key, value in state.items():
            assert value.dtype == self.state[key].dtype, key
            assert torch.equal(_bits(value), _bits(self.state[key])), f"{key} changed"
        modules = dict(model.named_modules())
        assert list(modules) == list(self.modules), "modules added or removed"
        for name, module in modules.items():
            self.modules[name].assert_same(ModuleRecord.of(module), name, same_buffer_objects)


def _assert_same_output(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding, relative to the largest output."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=1e-5 * scale)


def _check_conversions(model: nn.Module, snapshot: Snapshot, images: torch.Tensor) -> None:
    """``.double()``, ``.float()`` and ``.to()`` work and round-trip to the same state."""
    expected = model(images)
    model.double()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    _assert_same_output(model(images.double()).float(), expected)
    model.float().to("cpu")
    snapshot.assert_unchanged(model, same_buffer_objects=False)


CANONIZER_NAMES = {
    torchvision.models.ResNet: ["merge_batchnorm", "resnet"],
    torchvision.models.VGG: ["merge_batchnorm", "vgg"],
}
_MIDDLE_LAYER = {torchvision.models.ResNet: "layer2.0.conv1", torchvision.models.VGG: "features.8"}


@pytest.fixture(scope="module", params=["resnet18", "vgg11_bn"])
def model(request) -> nn.Module:
    return random_model(request.param)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)


def _in_sequential(model: nn.Module) -> set[int]:
    return {
        id(child)
        for module in model.modules()
        if isinstance(module, nn.Sequential)
        for child in module.children()
    }


def test_canonizers_merge_exactly_and_remove_without_a_trace(model, images):
    expected = model(images)
    batch_norms = [module for module in model.modules() if isinstance(module, BatchNorm)]
    for canonizer_name in CANONIZER_NAMES[type(model)]:
        snapshot = Snapshot.take(model)
        applied = [
            instance
            for canonizer in get_canonizers(canonizer_name)
            for instance in canonizer.apply(model)
        ]
        bypassed = [bn for bn in batch_norms if "forward" in vars(bn)]
        if canonizer_name == "merge_batchnorm":
            assert bypassed == [bn for bn in batch_norms if id(bn) in _in_sequential(model)]
        else:
            assert bypassed == batch_norms
        _assert_same_output(model(images), expected)
        for instance in reversed(applied):
            instance.remove()
        snapshot.assert_unchanged(model)
        assert torch.equal(model(images), expected)
    _check_conversions(model, Snapshot.take(model), images)


def test_attribution_leaves_the_model_unchanged(model, images):
    snapshot = Snapshot.take(model)
    expected = model(images)
    presets = [
        lambda canonizers: EpsilonGammaBox(low=-3.0, high=3.0, canonizers=canonizers),
        lambda canonizers: EpsilonPlusFlat(canonizers=canonizers),
    ]
    for canonizer_name, preset in zip(CANONIZER_NAMES[type(model)], presets):
        with Gradient(model, preset(get_canonizers(canonizer_name))) as attributor:
            output, relevance = attributor(images, attr_output=[1, 2])
        assert relevance.abs().sum() > 0
        _assert_same_output(output, expected)
        snapshot.assert_unchanged(model)
    assert torch.equal(model(images), expected)


class _FailingHook(Hook):
    """A hook whose backward raises, to interrupt an attribution half-way."""

    def backward(self, module, grad_input, grad_output):
        raise RuntimeError("interrupted on purpose")


def _failing_composite(canonizer_name: str, failing_layer: str) -> Composite:
    def module_map(ctx: dict, name: str, module: nn.Module) -> Hook | None:
        if name == failing_layer:
            return _FailingHook()
        if isinstance(module, Linear):
            return Epsilon()
        return None

    return Composite(module_map=module_map, canonizers=get_canonizers(canonizer_name))


def test_model_unchanged_after_an_error_in_the_middle_of_a_backward(model, images):
    snapshot = Snapshot.take(model)
    failing_layer = _MIDDLE_LAYER[type(model)]
    for canonizer_name in CANONIZER_NAMES[type(model)]:
        composite = _failing_composite(canonizer_name, failing_layer)
        with (
            pytest.raises(RuntimeError, match="interrupted on purpose"),
            Gradient(model, composite) as attributor,
        ):
            attributor(images, attr_output=0)
        snapshot.assert_unchanged(model)
    canonizers = get_canonizers(CANONIZER_NAMES[type(model)][-1])
    with Gradient(model, EpsilonPlusFlat(canonizers=canonizers)) as attributor:
        _, relevance = attributor(images, attr_output=0)
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    snapshot.assert_unchanged(model)
    _check_conversions(model, snapshot, images)
