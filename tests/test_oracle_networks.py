"""Whole networks against zennit 0.5.1: every preset composite and every attributor agree.

Random-weight torchvision ``vgg11_bn``, ``resnet18`` and ``alexnet`` and a small custom network
with batch norms after a bias-free convolution and after a dense layer are explained in float64
(inputs of 32 x 32 pixels, 64 x 64 for alexnet) by this engine, with its canonizers, and by
zennit, with its own; the attributions must agree within 1e-6 of their largest magnitude.

Two known faults of zennit are kept out of the comparison:

* zennit keeps a merged batch norm's ``eps`` while setting its statistics to the identity, so its
  canonized model scales every merged activation by ``(1 + eps) ** -0.5``; the batch norms here use
  a tiny ``eps``, which makes that error negligible (this engine's merge is exact for any eps);
* ``beta_smooth`` is the only preset whose activation rule reads the activation's input, which
  zennit gets wrong when a ReLU works in place (torchvision's ReLUs do: the stored input is
  overwritten by the output) or is called twice in one forward pass (torchvision's ResNet blocks
  call ``self.relu`` twice). It is compared with the gradient of the model whose ReLUs
  back-propagate the softplus derivative, computed without hooks, and with zennit only on the
  custom network, whose ReLUs are neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

zennit_attribution = pytest.importorskip("zennit.attribution")
zennit_canonizers = pytest.importorskip("zennit.canonizers")
zennit_composites = pytest.importorskip("zennit.composites")
zennit_torchvision = pytest.importorskip("zennit.torchvision")

from test_model_integrity import random_model, randomize  # noqa: E402

from lrp_desktop_core import attribution  # noqa: E402
from lrp_desktop_core.attribution import one_hot  # noqa: E402
from lrp_desktop_core.canonizers import get_canonizers  # noqa: E402
from lrp_desktop_core.composites import COMPOSITES  # noqa: E402
from lrp_desktop_core.types import BatchNorm  # noqa: E402

pytestmark = pytest.mark.oracle

TOLERANCE = 1e-6
TINY_EPS = 1e-12
BETA_SMOOTH = 10.0


@dataclass
class Network:
    """A model with its input, its target class and the matching canonizers of both engines."""

    name: str
    model: nn.Module
    images: torch.Tensor
    target: int
    reference_output: torch.Tensor
    canonizer: str
    zennit_canonizers: Callable[[], list]
    zennit_keeps_relu_inputs: bool


def _custom_network() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 10),
    ).double()


NETWORKS = {
    "custom": (
        lambda: randomize(_custom_network()),
        32,
        "merge_batchnorm",
        lambda: [zennit_canonizers.SequentialMergeBatchNorm()],
    ),
    "alexnet": (lambda: random_model("alexnet", torch.float64), 64, "none", list),
    "resnet18": (
        lambda: random_model("resnet18", torch.float64),
        32,
        "resnet",
        lambda: [zennit_torchvision.ResNetCanonizer()],
    ),
    "vgg11_bn": (
        lambda: random_model("vgg11_bn", torch.float64),
        32,
        "vgg",
        lambda: [zennit_torchvision.VGGCanonizer()],
    ),
}


@pytest.fixture(scope="module", params=list(NETWORKS))
def network(request) -> Network:
    builder, size, canonizer, zennit_canonizers = NETWORKS[request.param]
    model = builder()
    for module in model.modules():
        if isinstance(module, BatchNorm):
            module.eps = TINY_EPS
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(1, 3, size, size, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        reference_output = model(images)
    return Network(
        name=request.param,
        model=model,
        images=images,
        target=int(reference_output.argmax()),
        reference_output=reference_output,
        canonizer=canonizer,
        zennit_canonizers=zennit_canonizers,
        zennit_keeps_relu_inputs=request.param == "custom",
    )


def _presets(name: str, network: Network) -> tuple:
    """Return the preset ``name`` of this engine and of zennit, each with its own canonizers."""
    kwargs = {"low": -4.0, "high": 4.0} if name == "epsilon_gamma_box" else {}
    ours = COMPOSITES[name](canonizers=get_canonizers(network.canonizer), **kwargs)
    theirs = zennit_composites.COMPOSITES[name](canonizers=network.zennit_canonizers(), **kwargs)
    return ours, theirs


def _one_hot(network: Network) -> torch.Tensor:
    return one_hot(network.reference_output, torch.tensor([network.target]))


def _assert_agree(ours: torch.Tensor, reference: torch.Tensor) -> None:
    scale = reference.abs().max().item()
    assert scale > 0 and torch.isfinite(ours).all()
    difference = (ours - reference).abs().max().item()
    assert difference <= TOLERANCE * scale, f"max difference {difference / scale:.2e} of max|R|"


def _assert_model_untouched(network: Network) -> None:
    with torch.no_grad():
        assert torch.equal(network.model(network.images), network.reference_output)


class _SmoothReLUGradient(torch.autograd.Function):
    """ReLU forward; the derivative of softplus with sharpness ``beta`` backward."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(input)
        ctx.beta = beta
        return input.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (input,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(ctx.beta * input), None


def _beta_smooth_reference(network: Network) -> torch.Tensor:
    """Compute the beta-smooth gradient per call of every ReLU, without any hook."""
    relus = [module for module in network.model.modules() if isinstance(module, nn.ReLU)]
    for relu in relus:
        relu.forward = lambda input: _SmoothReLUGradient.apply(input, BETA_SMOOTH)
    try:
        images = network.images.clone().requires_grad_()
        output = network.model(images)
        (gradient,) = torch.autograd.grad(output, images, _one_hot(network))
    finally:
        for relu in relus:
            del relu.forward
    return gradient


@pytest.mark.parametrize(
    "preset", sorted(name for name in COMPOSITES if not name.startswith("vit_"))
)  # the ViT presets: not in zennit
def test_preset_matches_zennit(network, preset):
    _assert_model_untouched(network)
    ours, theirs = _presets(preset, network)
    with attribution.Gradient(network.model, ours) as attributor:
        output, relevance = attributor(network.images, attr_output=network.target)
    torch.testing.assert_close(output, network.reference_output, rtol=1e-10, atol=1e-10)
    if preset == "beta_smooth":
        _assert_agree(relevance, _beta_smooth_reference(network))
    if preset != "beta_smooth" or network.zennit_keeps_relu_inputs:
        with zennit_attribution.Gradient(network.model, theirs) as attributor:
            _, reference = attributor(network.images, attr_output=_one_hot(network))
        _assert_agree(relevance, reference)
    _assert_model_untouched(network)


ATTRIBUTORS = {
    "smoothgrad": ("SmoothGrad", {"noise_level": 0.2, "n_iter": 2}),
    "integrated_gradients": ("IntegratedGradients", {"n_iter": 2}),
    "occlusion": ("Occlusion", {}),
}


@pytest.mark.parametrize("kind", list(ATTRIBUTORS))
@pytest.mark.parametrize("network", ["custom", "alexnet", "resnet18"], indirect=True)
def test_attributor_matches_zennit(network, kind):
    """Match zennit's attributors.

    The attributors repeat the gradient of the preset tests, so vgg11_bn, whose dense layers make
    every pass slow, adds nothing here.
    """
    _assert_model_untouched(network)
    class_name, kwargs = ATTRIBUTORS[kind]
    one_hot = _one_hot(network)
    ours_output, theirs_output = network.target, one_hot
    if kind == "occlusion":
        window = network.images.shape[-1] // 2
        kwargs = {"window": window, "stride": window}
        theirs_output = lambda output: output * one_hot  # noqa: E731 - zennit scores outputs
    ours, theirs = _presets("epsilon_plus_flat", network)
    results = []
    for module, composite, attr_output in (
        (attribution, ours, ours_output),
        (zennit_attribution, theirs, theirs_output),
    ):
        torch.manual_seed(7)
        with getattr(module, class_name)(network.model, composite, **kwargs) as attributor:
            results.append(attributor(network.images, attr_output=attr_output)[1])
    _assert_agree(*results)
    _assert_model_untouched(network)
