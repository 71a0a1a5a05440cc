"""Tests of rule choices and rule maps: validation, JSON round trips, presets, composites."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest
import torch
import torchvision
from torch import nn

from lrp_desktop_core import rules
from lrp_desktop_core.attribution import Gradient
from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.composites import COMPOSITES
from lrp_desktop_core.demo_net import build_demo_net
from lrp_desktop_core.rulemap import (
    RULE_CHOICES,
    RuleChoice,
    RuleMap,
    canonized_leaves,
    default_choice,
)

LOW = torch.tensor([-2.0, -1.5, -1.0]).view(1, 3, 1, 1)
HIGH = torch.tensor([2.0, 2.5, 3.0]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def demo_net() -> nn.Module:
    torch.manual_seed(3)
    model = build_demo_net(4)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def preset_map(demo_net) -> RuleMap:
    return RuleMap.from_preset(demo_net, "epsilon_gamma_box", "merge_batchnorm", low=LOW, high=HIGH)


def test_choices_cover_every_rule_with_descriptions():
    assert set(RULE_CHOICES) == set(rules.RULE_DESCRIPTIONS) | {"none"}
    for name, spec in RULE_CHOICES.items():
        assert spec.description
        choice = default_choice(name, (LOW, HIGH))
        built = choice.build()
        assert (built is None) == (name == "none")
        if built is not None:
            assert isinstance(built, spec.rule_class)


def test_rule_choice_defaults_equality_and_labels():
    gamma = RuleChoice("Gamma")
    assert gamma.params == {"gamma": 0.25, "stabilizer": 1e-6}
    assert gamma == RuleChoice("Gamma", {"gamma": 0.25}) and hash(gamma) == hash(
        RuleChoice("Gamma", {"stabilizer": 1e-6})
    )
    assert gamma != RuleChoice("Gamma", {"gamma": 0.5})
    gamma.params["gamma"] = 9.0  # a copy: the choice stays as it was
    assert gamma.params["gamma"] == 0.25
    with pytest.raises(AttributeError):
        gamma.rule = "Epsilon"
    assert gamma.label() == "Gamma(gamma=0.25)"
    assert RuleChoice("Pass").label() == "Pass"


@pytest.mark.parametrize(
    ("rule", "params", "message"),
    [
        ("Gama", {}, "unknown rule 'Gama'"),
        ("Gamma", {"alpha": 1.0}, "Gamma has no parameter alpha"),
        ("Gamma", {"gamma": "big"}, "gamma must be a number"),
        ("Gamma", {"gamma": -1.0}, "gamma must be a finite number >= 0"),
        ("ZBox", {"low": [0.0, float("inf")], "high": 1.0}, "low must be a finite number, not inf"),
        ("Epsilon", {"epsilon": float("nan")}, "epsilon must be a finite number"),
        ("Epsilon", {"epsilon": True}, "epsilon must be a number"),
        ("AlphaBeta", {"alpha": 3.0}, "alpha - beta"),
        ("ZBox", {"low": 0.0}, "ZBox needs high"),
        ("ZBox", {"low": [], "high": 1.0}, "empty"),
    ],
)
def test_rule_choice_rejects_bad_input(rule, params, message):
    with pytest.raises(ValueError, match=message):
        RuleChoice(rule, params)


def test_zbox_per_channel_bounds_broadcast_over_images():
    choice = RuleChoice("ZBox", {"low": [-1, -2, -3], "high": 4})
    assert choice.params["low"] == (-1.0, -2.0, -3.0)
    built = choice.build()
    assert built.low.shape == (1, 3, 1, 1) and built.high == 4.0
    assert choice.to_dict() == {
        "rule": "ZBox",
        "params": {"low": [-1.0, -2.0, -3.0], "high": 4.0, "stabilizer": 1e-6},
    }


def test_preset_map_covers_every_canonized_leaf(demo_net, preset_map):
    leaves = [name for name, _ in canonized_leaves(demo_net, "merge_batchnorm")]
    assert list(preset_map) == leaves
    assert preset_map.mismatches(demo_net) == []
    assert preset_map.canonizer == "merge_batchnorm" and preset_map.preset == "epsilon_gamma_box"
    first = preset_map["features.stage1.conv"]
    assert first.rule == "ZBox" and first.params["low"] == (-2.0, -1.5, -1.0)
    assert preset_map["head.fc"].rule == "Epsilon"
    assert preset_map["features.stage2.conv"].rule == "Gamma"


def test_map_composite_gives_the_presets_relevance(demo_net, preset_map):
    x = torch.randn(2, 3, 32, 32)

    def seed(output):
        return torch.zeros_like(output).scatter_(1, output.argmax(1, keepdim=True), 1) * output

    preset = COMPOSITES["epsilon_gamma_box"](
        low=LOW, high=HIGH, canonizers=get_canonizers("merge_batchnorm")
    )
    _, expected = Gradient(demo_net, preset, attr_output=seed)(x)
    _, relevance = Gradient(demo_net, preset_map.to_composite(), attr_output=seed)(x)
    torch.testing.assert_close(relevance, expected, rtol=1e-5, atol=1e-7)


def test_json_round_trip_and_fingerprint(tmp_path, preset_map):
    again = RuleMap.from_json(preset_map.to_json())
    assert again == preset_map and again.fingerprint() == preset_map.fingerprint()
    path = preset_map.save(tmp_path / "rules.json")
    loaded = RuleMap.load(path)
    assert loaded == preset_map and list(loaded) == list(preset_map)
    relabelled = RuleMap(dict(preset_map), preset_map.canonizer, "my label")
    assert relabelled.fingerprint() == preset_map.fingerprint() and relabelled != preset_map
    assert RuleMap(dict(preset_map), "none").fingerprint() != preset_map.fingerprint()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"layers": {"fc": {"rule": "Gamma"}', "not valid JSON \\(line 1"),
        ("[1, 2]", '"layers" object'),
        ('{"layers": {"fc": {"rule": "Gama"}}}', "layer 'fc': unknown rule 'Gama'"),
        ('{"layers": {"fc": {"rule": "Gamma", "params": {"gamma": -2}}}}', "layer 'fc': .*gamma"),
        ('{"layers": {"fc": "Gamma"}}', "layer 'fc': expected"),
        ('{"canonizer": "vgg16", "layers": {}}', "unknown canonizer 'vgg16'"),
    ],
)
def test_load_names_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as raised:
        RuleMap.load(path)
    assert "bad.json" in str(raised.value)


def test_load_of_a_missing_file():
    with pytest.raises(ValueError, match="cannot read the rule map"):
        RuleMap.load("/nonexistent/rules.json")


def test_with_rule_returns_an_edited_copy(preset_map):
    flat = RuleChoice("Flat")
    edited = preset_map.with_rule(["features.stage1.conv", "features.stage2.conv"], flat)
    assert edited["features.stage1.conv"] == flat and edited["features.stage2.conv"] == flat
    assert preset_map["features.stage1.conv"].rule == "ZBox"
    assert edited.preset == "epsilon_gamma_box (edited)"
    assert edited.with_rule("head.fc", RuleChoice("Epsilon", {"epsilon": 0.1})).preset == (
        "epsilon_gamma_box (edited)"
    )
    assert edited.fingerprint() != preset_map.fingerprint()
    assert preset_map.with_rule("head.fc", preset_map["head.fc"]) is preset_map
    assert list(edited) == list(preset_map)
    with pytest.raises(AttributeError):
        edited.canonizer = "none"


def test_largest_stabilizer_reads_epsilons_and_stabilizers(preset_map):
    assert preset_map.largest_stabilizer == 1e-6
    edited = preset_map.with_rule("head.fc", RuleChoice("Epsilon", {"epsilon": 0.25}))
    assert edited.largest_stabilizer == 0.25
    edited = preset_map.with_rule("features.stage1.conv", RuleChoice("ZPlus", {"stabilizer": 3.0}))
    assert edited.largest_stabilizer == 3.0
    assert RuleMap({"head.fc": RuleChoice("Pass")}).largest_stabilizer == 0.0


def test_mismatches_name_missing_layers_and_type_conflicts(demo_net, preset_map):
    rules_ = dict(preset_map)
    del rules_["head.fc"]
    rules_["head.fc9"] = RuleChoice("Epsilon")
    rules_["features.stage1.relu"] = RuleChoice("Gamma")
    problems = RuleMap(rules_, "merge_batchnorm").mismatches(demo_net)
    assert problems == [
        "'features.stage1.relu' is a ReLU, which the Gamma rule cannot handle "
        "(it needs a convolution or linear layer)",
        "'head.fc9' is in the rule map but not in the model",
        "'head.fc' (Linear) has no rule in the rule map",
    ]


def test_canonized_leaves_see_the_resnet_sums_and_restore_the_model():
    model = torchvision.models.resnet18(num_classes=3).eval()
    before = [(name, module) for name, module in model.named_modules()]
    names = [name for name, _ in canonized_leaves(model, "resnet")]
    assert "layer1.0.canonizer_sum" in names and "layer1.0.conv1" in names
    assert [(name, module) for name, module in model.named_modules()] == before


def test_recommended_uses_the_specs_bounds_and_the_structures_canonizer(demo_net):
    class Spec:
        @staticmethod
        def input_bounds():
            return LOW, HIGH

    recommended = RuleMap.recommended(demo_net, Spec())
    assert recommended.canonizer == "merge_batchnorm"
    assert recommended["features.stage1.conv"].params["high"] == (2.0, 2.5, 3.0)
    plus = RuleMap.recommended(demo_net, Spec(), preset="epsilon_plus")
    assert plus.preset == "epsilon_plus" and plus["features.stage2.conv"].rule == "ZPlus"
    assert plus.is_lrp and not RuleMap.recommended(demo_net, Spec(), "guided_backprop").is_lrp
    with pytest.raises(ValueError, match="unknown preset"):
        RuleMap.from_preset(demo_net, "epsilon_minus")
    with pytest.raises(ValueError, match="epsilon_gamma_box"):
        RuleMap.from_preset(demo_net, "epsilon_gamma_box")  # no bounds given
    json.loads(plus.to_json())


def test_a_recommendation_the_caller_has_is_used_instead_of_a_new_one(demo_net, monkeypatch):
    class Spec:
        @staticmethod
        def input_bounds():
            return LOW, HIGH

    from lrp_desktop_core import recommend as recommending

    known = recommending.recommend(demo_net)
    assert RuleMap.recommended(demo_net, Spec(), recommendation=known) == RuleMap.recommended(
        demo_net, Spec()
    )

    def not_again(model):
        raise AssertionError("recommend ran again")

    monkeypatch.setattr(recommending, "recommend", not_again)
    other = dataclasses.replace(known, preset="epsilon_plus", canonizer="none")
    given = RuleMap.recommended(demo_net, Spec(), recommendation=other)
    assert given.preset == "epsilon_plus" and given.canonizer == "none"


def test_copies_and_pickles_are_equal(preset_map):
    for duplicate in (copy.copy, copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))):
        again = duplicate(preset_map)
        assert again == preset_map and again.preset == preset_map.preset
        assert duplicate(preset_map["features.stage1.conv"]) == preset_map["features.stage1.conv"]
