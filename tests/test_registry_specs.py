"""Every registry model takes the input its spec's preprocessing makes (random weights).

The networks are built on the meta device, so no weights take memory or time; shape checks such
as a vision transformer's image-size assertion still fire on meta tensors.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.models import regnet

from lrp_desktop_core.images import prepare_image
from lrp_desktop_core.models import get_spec, list_models


@pytest.fixture
def regnet_plan_on_cpu(monkeypatch):
    """Let RegNet builders run on the meta device.

    RegNet computes its stage widths with tensors and reads them back (``.tolist()``), which meta
    tensors cannot do; only that plan is computed on the CPU, the network still lands on meta.
    """
    plan = regnet.BlockParams.from_init_params

    def on_cpu(*args, **kwargs):
        with torch.device("cpu"):
            return plan(*args, **kwargs)

    monkeypatch.setattr(regnet.BlockParams, "from_init_params", on_cpu)


@pytest.mark.parametrize("name", list_models())
def test_preprocessed_image_passes_through_the_model(name, regnet_plan_on_cpu):
    spec = get_spec(name)
    image = Image.new("RGB", (41, 29), (200, 80, 20))  # not square, smaller than any input
    loaded = prepare_image(image, spec)
    assert loaded.tensor.shape == (3, *spec.input_size)
    assert loaded.display.shape == (*spec.input_size, 3)
    with torch.device("meta"):
        model = spec.builder().eval()
    with torch.no_grad():
        logits = model(loaded.tensor.unsqueeze(0).to("meta"))
    assert logits.shape == (1, spec.num_classes)


def test_vit_h_14_is_built_for_the_size_of_its_preprocessing(regnet_plan_on_cpu):
    spec = get_spec("vit_h_14")
    with torch.device("meta"):
        model = spec.builder()
    assert model.image_size == spec.crop == 518


def test_meta_forward_still_rejects_a_wrong_input_size():
    """The meta check would catch a spec whose size does not fit (the ViT-H/14 fault)."""
    with torch.device("meta"):
        model = get_spec("vit_b_16").builder().eval()
    with pytest.raises(AssertionError, match="Wrong image height"):
        model(torch.empty(1, 3, 518, 518, device="meta"))
