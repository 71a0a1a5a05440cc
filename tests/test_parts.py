"""Every module a canonizer adds to a torchvision classifier is described for the rule tree."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import get_model

from lrp_desktop_core.parts import describe_part
from lrp_desktop_core.rulemap import canonized_leaves

FAMILIES = (
    "resnet18",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mnasnet0_5",
    "efficientnet_b0",
    "shufflenet_v2_x0_5",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
    "maxvit_t",
)
"""One member of each family whose canonizer adds modules."""
BUILDER_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": False, "transform_input": True},
    "inception_v3": {"aux_logits": False, "init_weights": False, "transform_input": True},
}
"""Builder arguments that give the canonizer something to add (the input transform)."""


@pytest.mark.parametrize("name", FAMILIES)
def test_every_added_module_is_described(name):
    with torch.device("meta"):
        model = get_model(name, weights=None, **BUILDER_KWARGS.get(name, {}))
    added = [layer for layer, _ in canonized_leaves(model, "torchvision") if "canonizer_" in layer]
    assert added, "the canonizer added no module"
    undescribed = [layer for layer in added if describe_part(layer) is None]
    assert not undescribed


def test_the_model_own_layers_are_not_described():
    assert describe_part("features.0.0") is None
    assert describe_part("encoder.layers.encoder_layer_0.self_attention.out_proj") is None
    assert "Query projection" in describe_part(
        "encoder.layers.encoder_layer_0.self_attention.canonizer_q"
    )
