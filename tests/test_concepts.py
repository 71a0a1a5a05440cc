"""Relevance per layer and channel, and conditional (concept) heatmaps."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from lrp_desktop_core.concepts import (
    LayerNotFoundError,
    concept_heatmaps,
    layer_names,
    layer_relevance,
)
from lrp_desktop_core.explain import ExplainCancelled, Method, explain
from lrp_desktop_core.models import get_spec, load_model
from lrp_desktop_core.rulemap import RuleMap


@pytest.fixture(scope="module")
def demo():
    loaded = load_model("demo")
    model = loaded.model.double()
    return model, RuleMap.recommended(model, loaded.spec)


def _small_vgg() -> nn.Module:
    vgg = torchvision.models.vgg
    model = vgg.VGG(vgg.make_layers(vgg.cfgs["A"]), num_classes=5, init_weights=False)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 5))
    return model.double().eval()


def _snapshot(model: nn.Module) -> dict:
    return {name: value.clone() for name, value in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks


@pytest.mark.parametrize(
    ("family", "layer", "size"),
    [
        ("demo", "features.stage3.relu", 64),
        ("demo", "features.residual.sum", 64),
        ("vgg11", "features.3", 32),
        ("resnet18", "layer1.1.canonizer_sum", 32),
    ],
)
def test_conditional_heatmaps_of_all_channels_add_up_to_the_plain_heatmap(
    demo, family, layer, size
):
    if family == "demo":
        model, rulemap = demo
    elif family == "vgg11":
        model = _small_vgg()
        rulemap = RuleMap.recommended(model, get_spec("vgg11"))
    else:
        model = torchvision.models.resnet18(num_classes=5).double().eval()
        rulemap = RuleMap.recommended(model, get_spec("resnet18"))
    before = _snapshot(model)
    image = torch.randn(1, 3, size, size, dtype=torch.float64)
    concepts = concept_heatmaps(model, image, rulemap, layer, "all", batch_size=64)
    plain = explain(model, image, Method("lrp", rulemap)).relevance[0].astype(np.float64)
    assert concepts.relevance.dtype == np.float64
    summed = concepts.relevance.sum(axis=0)
    assert np.abs(summed - plain).max() <= 1e-6 * np.abs(plain).max()
    np.testing.assert_allclose(concepts.overview.relevance[0], plain, rtol=1e-6, atol=1e-12)
    assert sorted(concepts.channels) == list(range(len(concepts.overview.channels[0])))
    _assert_untouched(model, before)


def hand_made_conditional_heatmap(model, rulemap, layer, image, index) -> tuple[int, np.ndarray]:
    """Return the top class and the LRP heatmap through one channel, made by hand.

    A forward hook on ``layer`` puts a tensor hook on its output that keeps the gradient at
    ``index`` (an index into the output, e.g. ``(slice(None), 5)``) and zeroes the rest; then the
    plain LRP backward runs from the top class's logit. The rules' own hooks must see the mask.
    """

    def keep_channel(gradient):
        kept = torch.zeros_like(gradient)
        kept[index] = gradient[index]
        return kept

    def on_output(module, args, output):
        output.register_hook(keep_channel)

    with rulemap.to_composite().context(model):
        handle = dict(model.named_modules())[layer].register_forward_hook(on_output)
        leaf = image.clone().requires_grad_(True)
        logits = model(leaf)
        target = int(logits.argmax())
        start = torch.zeros_like(logits)
        start[0, target] = logits[0, target].detach()
        (reference,) = torch.autograd.grad(logits, leaf, start)
        handle.remove()
    return target, reference[0].numpy()


def test_one_conditional_heatmap_matches_a_hand_made_reference(demo):
    model, rulemap = demo
    layer, channel = "features.stage2.conv", 5
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    target, reference = hand_made_conditional_heatmap(
        model, rulemap, layer, image, (slice(None), channel)
    )
    concepts = concept_heatmaps(model, image, rulemap, layer, [channel])
    assert concepts.target == target
    np.testing.assert_allclose(concepts.relevance[0], reference, rtol=1e-9, atol=1e-15)


def test_top_k_channels_are_ordered_by_relevance_at_the_layer(demo):
    model, rulemap = demo
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    overview = layer_relevance(model, image, rulemap, "features.stage3.conv")
    per_channel = overview.channels[0]
    assert per_channel.shape == (64,)
    assert overview.spatial.shape == (1, 16, 16)
    np.testing.assert_allclose(overview.spatial[0].sum(), per_channel.sum())
    concepts = concept_heatmaps(model, image, rulemap, "features.stage3.conv", 5, batch_size=2)
    assert len(concepts.channels) == 5 and concepts.relevance.shape == (5, 3, 64, 64)
    np.testing.assert_array_equal(concepts.channels, np.argsort(-per_channel)[:5])
    assert np.all(np.diff(concepts.layer_relevance) <= 0)
    np.testing.assert_allclose(concepts.layer_relevance, per_channel[concepts.channels])
    shares = concepts.shares()
    assert shares[0] == pytest.approx(per_channel.max() / np.abs(per_channel).sum())


def test_a_linear_layer_has_channels_but_no_spatial_map(demo):
    model, rulemap = demo
    image = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    overview = layer_relevance(model, image, rulemap, "head.fc", target=1)
    assert overview.channels.shape == (2, 5) and overview.spatial.shape == (2,)
    np.testing.assert_array_equal(overview.target, [1, 1])
    logits = overview.logits.astype(np.float64)
    np.testing.assert_allclose(overview.channels[:, 1], logits[:, 1], rtol=1e-6)
    assert np.all(np.delete(overview.channels, 1, axis=1) == 0)


def test_a_bad_layer_name_lists_near_matches(demo):
    model, rulemap = demo
    with pytest.raises(LayerNotFoundError, match=r"features\.stage3\.conv"):
        concept_heatmaps(model, torch.randn(1, 3, 64, 64), rulemap, "features.stage3.cnv", 3)
    assert "features.residual.sum" in layer_names(model, rulemap)


def test_a_cancelled_run_leaves_the_model_unchanged(demo):
    model, rulemap = demo
    before = _snapshot(model)
    reports = []
    with pytest.raises(ExplainCancelled):
        concept_heatmaps(
            model,
            torch.randn(1, 3, 64, 64),
            rulemap,
            "features.stage3.conv",
            "all",
            batch_size=8,
            progress=reports.append,
            cancel=lambda: len(reports) >= 2,
        )
    assert reports == [1 / 8, 2 / 8]
    _assert_untouched(model, before)


def test_bad_channel_choices_are_refused(demo):
    model, rulemap = demo
    image = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="out of range"):
        concept_heatmaps(model, image, rulemap, "features.stage3.conv", [64])
    with pytest.raises(ValueError, match="one input"):
        concept_heatmaps(model, image.repeat(2, 1, 1, 1), rulemap, "features.stage3.conv", 2)


def test_a_channel_method_explains_through_one_channel(demo):
    from lrp_desktop_core.channel_method import ChannelMethod, explain_channel

    model, rulemap = demo
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    method = ChannelMethod("lrp", rulemap, layer="features.stage3.conv", channel=3)
    explanation = explain_channel(model, image, method, target=2)
    concepts = concept_heatmaps(model, image, rulemap, "features.stage3.conv", [3], target=2)
    np.testing.assert_allclose(explanation.relevance[0], concepts.relevance[0], rtol=1e-6)
    assert explanation.target.tolist() == [2] and explanation.method == method
    assert "channel 3 of features.stage3.conv" in method.label()
    assert method.settings()["channel"] == 3 and method.to_dict()["layer"] == "features.stage3.conv"
    other = ChannelMethod("lrp", rulemap, layer="features.stage3.conv", channel=4)
    assert hash(other) != hash(method) and other != method != Method("lrp", rulemap)
    with pytest.raises(ValueError, match="layer name"):
        ChannelMethod("lrp", rulemap)
