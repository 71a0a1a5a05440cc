"""The app on the bundled ViT demo: the explicit attention parts in the rule tree, the captions."""

from __future__ import annotations

import copy

import pytest
import torch
from PySide6.QtCore import Qt

from lrp_desktop.comparison import conservation_note
from lrp_desktop.reporter import Reporter
from lrp_desktop.rule_tree import NAME, RULE, RuleTreeModel
from lrp_desktop.session import ModelInfo, Session
from lrp_desktop_core.explain import Method, explain
from lrp_desktop_core.images import load_image
from lrp_desktop_core.models import demo_samples, load_model
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RuleMap

BLOCK = "encoder.layers.encoder_layer_0"


@pytest.fixture(scope="module")
def vit_demo():
    return load_model("demo_vit")


@pytest.fixture
def tree(qtbot, vit_demo):
    info = ModelInfo(
        "demo_vit#test",
        vit_demo.spec,
        "demo_vit",
        vit_demo.weights_path,
        vit_demo.weights_sha256,
        copy.deepcopy(vit_demo.model).to("meta"),
        0,
        "cpu",
        recommend(vit_demo.model),
    )
    session = Session()
    session.set_model(info, RuleMap.recommended(info.skeleton, info.spec))
    return RuleTreeModel(session, Reporter())


@pytest.mark.parametrize(
    ("layer", "rule", "says"),
    [
        (f"{BLOCK}.self_attention.canonizer_q", "Epsilon", "Query projection"),
        (f"{BLOCK}.self_attention.canonizer_k", "Epsilon", "Key projection"),
        (f"{BLOCK}.self_attention.canonizer_v", "Epsilon", "Value projection"),
        (f"{BLOCK}.self_attention.canonizer_core", "AttentionConservative", "Attention core"),
        (f"{BLOCK}.canonizer_attention_sum", "Norm", "after the attention branch"),
        (f"{BLOCK}.canonizer_mlp_sum", "Norm", "after the MLP branch"),
        ("encoder.canonizer_position", "Norm", "position embedding"),
        ("canonizer_token", "Norm", "class token"),
    ],
)
def test_tree_shows_each_attention_part_with_its_rule_and_what_it_does(tree, layer, rule, says):
    index = tree.index_of_layer(layer)
    assert index.isValid(), f"{layer} is not in the tree"
    assert index.siblingAtColumn(RULE).data() == rule
    tooltip = index.siblingAtColumn(NAME).data(Qt.ItemDataRole.ToolTipRole)
    assert "Added by the canonizer" in tooltip and says in tooltip


def test_the_model_own_layers_say_nothing_of_a_canonizer(tree):
    index = tree.index_of_layer(f"{BLOCK}.self_attention.out_proj")
    tooltip = index.siblingAtColumn(NAME).data(Qt.ItemDataRole.ToolTipRole)
    assert "canonizer" not in tooltip


def test_conservation_caption_says_that_attnlrp_does_not_conserve_relevance(vit_demo):
    model, spec = vit_demo.model, vit_demo.spec
    image = load_image(demo_samples()[0], spec).tensor.unsqueeze(0).to(torch.float32)
    notes = {
        preset: conservation_note(
            explain(model, image, Method("lrp", RuleMap.recommended(model, spec, preset)))
        )
        for preset in ("vit_cp", "vit_attnlrp")
    }
    assert "softmax does not conserve" in notes["vit_attnlrp"]
    assert "softmax" not in notes["vit_cp"]
    assert all("conserved" in note for note in notes.values())
