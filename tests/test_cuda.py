"""Every preset composite gives the same attribution on a CUDA device as on the CPU (float64)."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from test_model_integrity import random_model
from torch import nn

from lrp_desktop_core.attribution import Gradient
from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.composites import COMPOSITES

pytestmark = pytest.mark.cuda

TOLERANCE = 1e-5
NETWORKS = {"resnet18": "resnet", "vgg11_bn": "vgg"}


@pytest.fixture(scope="module", params=list(NETWORKS))
def models(request) -> tuple[nn.Module, nn.Module, str]:
    model = random_model(request.param, torch.float64)
    return model, copy.deepcopy(model).to("cuda"), NETWORKS[request.param]


def _relevance(model: nn.Module, preset: str, canonizer: str, images: torch.Tensor):
    takes_bounds = "low" in inspect.signature(COMPOSITES[preset]).parameters
    kwargs = {"low": -4.0, "high": 4.0} if takes_bounds else {}
    composite = COMPOSITES[preset](canonizers=get_canonizers(canonizer), **kwargs)
    with Gradient(model, composite) as attributor:
        output, relevance = attributor(images, attr_output=[3, 5])
    return output, relevance


@pytest.mark.parametrize("preset", sorted(COMPOSITES))
def test_preset_on_cuda_matches_cpu(models, preset):
    cpu_model, cuda_model, canonizer = models
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    cpu_output, cpu_relevance = _relevance(cpu_model, preset, canonizer, images)
    cuda_output, cuda_relevance = _relevance(cuda_model, preset, canonizer, images.to("cuda"))
    assert cuda_relevance.device.type == "cuda"
    scale = cpu_relevance.abs().max().item()
    assert scale > 0
    difference = (cuda_relevance.cpu() - cpu_relevance).abs().max().item()
    assert difference <= TOLERANCE * scale, f"max difference {difference / scale:.2e} of max|R|"
    torch.testing.assert_close(cuda_output.cpu(), cpu_output, rtol=1e-9, atol=1e-9)
