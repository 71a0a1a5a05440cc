"""Concepts of transformer layers: channels on the last axis (ViT tokens, Swin maps), in float64."""

import numpy as np
import pytest
import torch
from test_concepts import hand_made_conditional_heatmap
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.ops.misc import Permute

from lrp_desktop_core.channel_axis import declared_axis
from lrp_desktop_core.concepts import (
    concept_heatmaps,
    layer_relevance,
    plain_pass,
    spatial_map,
    token_grid,
)
from lrp_desktop_core.explain import Method, explain
from lrp_desktop_core.models import get_spec, load_model
from lrp_desktop_core.rulemap import RuleMap

VIT_BLOCK = "encoder.layers.encoder_layer_1"
SWIN_BLOCK = "features.1.1"


@pytest.fixture(scope="module")
def vit():
    loaded = load_model("demo_vit")
    model = loaded.model.double().eval()
    return model, RuleMap.recommended(model, loaded.spec)


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    model = SwinTransformer(
        patch_size=[4, 4], embed_dim=12, depths=[2, 2], num_heads=[2, 2], window_size=[3, 3]
    )
    model.head = nn.Linear(model.head.in_features, 5)
    model = model.double().eval()
    return model, RuleMap.recommended(model, get_spec("swin_t"))


def _relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize(
    ("family", "layer", "size", "channels", "positions"),
    [
        ("vit", VIT_BLOCK, 64, 64, (65,)),  # a class token and 8 x 8 patches, 64 features each
        ("vit", "encoder.ln", 64, 64, (65,)),  # the last layer norm
        ("swin", SWIN_BLOCK, 28, 12, (7, 7)),  # (N, H, W, C) after the patch embedding
        ("swin", "features.3.0", 28, 24, (4, 4)),  # after patch merging
    ],
)
def test_conditional_heatmaps_of_a_transformer_layer_add_up_to_the_plain_heatmap(
    request, family, layer, size, channels, positions
):
    model, rulemap = request.getfixturevalue(family)
    image = torch.randn(
        1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    concepts = concept_heatmaps(model, image, rulemap, layer, "all", batch_size=64)
    overview = concepts.overview
    assert overview.channels.shape == (1, channels)
    assert overview.spatial.shape == (1, *positions)
    plain = overview.relevance[0]
    assert plain.dtype == np.float64
    assert _relative_error(concepts.relevance.sum(axis=0), plain) <= 1e-6
    explained = explain(model, image, Method("lrp", rulemap)).relevance[0]  # float32
    assert _relative_error(plain, explained.astype(np.float64)) <= 1e-6
    np.testing.assert_allclose(overview.channels[0].sum(), overview.spatial[0].sum(), rtol=1e-9)
    assert sorted(concepts.channels) == list(range(channels))


def test_one_vit_channel_matches_a_hand_made_reference(vit):
    """Mask the gradient at the block's output to one feature (the last axis), then LRP."""
    model, rulemap = vit
    channel = 9
    image = torch.randn(
        1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )

    target, reference = hand_made_conditional_heatmap(
        model, rulemap, VIT_BLOCK, image, (Ellipsis, channel)
    )
    concepts = concept_heatmaps(model, image, rulemap, VIT_BLOCK, [channel])
    assert concepts.target == target
    np.testing.assert_allclose(concepts.relevance[0], reference, rtol=1e-9, atol=1e-15)
    at_block = plain_pass(model, image, rulemap, VIT_BLOCK, None).layer_relevance
    assert at_block.shape == (1, 64, 65)  # channels first, then the tokens
    assert concepts.layer_relevance[0] == pytest.approx(float(at_block[0, channel].sum()))


def test_the_axis_can_be_named(vit):
    """Naming axis 1 of a ViT block makes the tokens the "channels"; they add up all the same."""
    model, rulemap = vit
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    found = layer_relevance(model, image, rulemap, VIT_BLOCK)
    tokens = layer_relevance(model, image, rulemap, VIT_BLOCK, axis=1)
    assert found.channels.shape == (1, 64) and tokens.channels.shape == (1, 65)
    np.testing.assert_allclose(tokens.channels[0], found.spatial[0], rtol=1e-9)
    by_token = concept_heatmaps(model, image, rulemap, VIT_BLOCK, "all", axis=1, batch_size=65)
    assert _relative_error(by_token.relevance.sum(axis=0), found.relevance[0]) <= 1e-6
    state = {name: value.clone() for name, value in model.state_dict().items()}
    for wrong in (0, 3, -3):  # the batch axis, and axes the (N, L, D) output lacks
        with pytest.raises(ValueError, match=rf"channel axis {wrong} does not fit"):
            layer_relevance(model, image, rulemap, VIT_BLOCK, axis=wrong)
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())


def test_the_axis_follows_the_modules_that_fix_the_layout():
    assert declared_axis(nn.Conv2d(3, 4, 3), -1) == 1
    assert declared_axis(nn.BatchNorm2d(4), -1) == 1
    assert declared_axis(nn.Linear(3, 4), 1) == -1
    assert declared_axis(nn.LayerNorm(4), 1) == -1
    assert declared_axis(nn.ReLU(), -1) is None  # keeps the layout before it
    assert declared_axis(Permute([0, 2, 3, 1]), 1) == -1  # to channels-last
    assert declared_axis(Permute([0, 3, 1, 2]), -1) == 1  # back to channels-first


def test_a_token_sequence_becomes_its_grid_of_patches():
    assert token_grid(17) == (1, 4) and token_grid(16) == (0, 4) and token_grid(7) is None
    tokens = np.arange(17.0)
    np.testing.assert_array_equal(spatial_map(tokens), np.arange(1.0, 17.0).reshape(4, 4))
    assert spatial_map(np.arange(7.0)) is None
    square = np.ones((3, 3))
    assert spatial_map(square) is square
