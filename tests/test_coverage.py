"""The rule coverage report: contents, reasons, warnings, and an untouched model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_desktop_core.composites import (
    EpsilonGammaBox,
    EpsilonPlus,
    GuidedBackprop,
    LayerMapComposite,
    NameMapComposite,
)
from lrp_desktop_core.coverage import LayerRule, rule_coverage, rule_params
from lrp_desktop_core.layer import Sum
from lrp_desktop_core.rules import Epsilon, Gamma, Norm, Pass, ZBox


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


def net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 0
        nn.ReLU(),  # 1
        Block(),  # 2
        nn.MaxPool2d(2),  # 3
        nn.Flatten(),  # 4
        nn.Dropout(),  # 5
        nn.Linear(4 * 4 * 4, 5),  # 6
        nn.Tanh(),  # 7
        nn.GroupNorm(1, 5),  # 8: parameters, and no preset has a rule for it
    ).eval()


def by_name(report: list[LayerRule]) -> dict[str, LayerRule]:
    return {entry.name: entry for entry in report}


def test_report_lists_every_leaf_with_its_rule_and_parameters():
    model = net()
    report = by_name(rule_coverage(model, EpsilonGammaBox(low=-2, high=torch.tensor(2.0))))
    leaves = [name for name, module in model.named_modules() if not list(module.children())]
    assert list(report) == leaves
    first = report["0"]
    assert (first.module_type, first.rule) == ("Conv2d", "ZBox")
    assert first.params == {"low": -2.0, "high": 2.0, "stabilizer": 1e-6, "zero_params": None}
    assert all(isinstance(first.params[key], float) for key in ("low", "high", "stabilizer"))
    assert report["2.conv"].rule == "Gamma" and report["2.conv"].params["gamma"] == 0.25
    assert report["6"].rule == "Epsilon" and report["6"].params["epsilon"] == 1e-6
    assert report["1"].reason == "ReLU activation: relevance passes through unchanged (Pass)"
    assert report["2.bn"].rule == "Pass" and "BatchNorm2d" in report["2.bn"].reason
    assert not any(entry.warn for entry in report.values() if entry.rule is not None)


def test_reasons_for_layers_without_a_rule():
    report = by_name(rule_coverage(net(), EpsilonPlus()))
    max_pool = report["3"]
    assert max_pool.rule is None and not max_pool.warn
    assert max_pool.reason.startswith("no rule: MaxPool2d is not covered by this composite")
    assert "maximum" in max_pool.reason
    assert report["5"].reason == "no rule: Dropout is inactive in eval mode"
    assert not report["5"].warn
    assert "reshapes" in report["4"].reason and not report["4"].warn
    layer_norm = report["8"]
    assert layer_norm.warn and "relevance is not conserved" in layer_norm.reason
    assert report["7"].rule == "Pass"


def test_warnings_for_training_mode_dropout_and_unruled_activations():
    model = net().train()
    composite = LayerMapComposite([(nn.Conv2d, Gamma()), (nn.Linear, Epsilon())])
    report = by_name(rule_coverage(model, composite))
    assert report["5"].warn and "eval" in report["5"].reason
    assert report["7"].warn and "Pass" in report["7"].reason  # Tanh changes relevance
    assert not report["1"].warn  # a ReLU without a rule passes relevance on as it is


def test_gradient_methods_do_not_warn_about_layers_without_rules():
    report = by_name(rule_coverage(net(), GuidedBackprop()))
    assert report["1"].rule == "ReLUGuidedBackprop"
    assert report["0"].rule is None and not report["0"].warn
    assert "as this method intends" in report["0"].reason


def test_container_with_a_rule_is_listed():
    model = net()
    composite = NameMapComposite([(["2"], Pass()), (["2.conv"], Epsilon())])
    report = by_name(rule_coverage(model, composite))
    assert report["2"].rule == "Pass" and report["2"].module_type == "Block"
    assert report["2.conv"].rule == "Epsilon"
    assert list(report)[2:4] == ["2", "2.conv"]


def test_sum_gets_norm_with_its_stabilizer():
    model = nn.Sequential(Sum())
    report = rule_coverage(model, LayerMapComposite([(Sum, Norm(stabilizer=0.5))]))
    assert report[0].rule == "Norm" and report[0].params == {"stabilizer": 0.5}
    assert "Sum" in report[0].reason


class RecordingCanonizer:
    """Replaces the Block by a plain Sequential of its parts, and puts it back on removal."""

    def __init__(self) -> None:
        self.removed = False
        self.saved = None

    def apply(self, root_module: nn.Module) -> list:
        applied = RecordingCanonizer()
        applied.saved = root_module[2]
        root_module[2] = nn.Sequential(applied.saved.conv, applied.saved.bn, Sum())
        applied.root = root_module
        self.applied = applied
        return [applied]

    def remove(self) -> None:
        self.root[2] = self.saved
        self.removed = True


def test_canonizers_are_applied_for_the_walk_and_removed_after():
    model = net()
    modules_before = list(model.named_modules())
    params_before = [
        (name, param, param.detach().clone()) for name, param in model.named_parameters()
    ]
    state_before = {key: value.clone() for key, value in model.state_dict().items()}
    canonizer = RecordingCanonizer()
    composite = EpsilonPlus(canonizers=[canonizer])
    report = by_name(rule_coverage(model, composite))
    assert report["2.2"].module_type == "Sum" and report["2.2"].rule == "Norm"
    assert canonizer.applied.removed
    assert list(model.named_modules()) == modules_before
    for (name, param, value), (name_after, param_after) in zip(
        params_before, model.named_parameters()
    ):
        assert name == name_after and param is param_after and torch.equal(param, value)
    assert state_before.keys() == model.state_dict().keys()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state_before.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_canonizers_are_removed_when_the_walk_fails():
    model = net()
    canonizer = RecordingCanonizer()

    def failing_map(ctx, name, module):
        raise RuntimeError("broken module map")

    composite = EpsilonPlus(canonizers=[canonizer])
    composite.module_map = failing_map
    with pytest.raises(RuntimeError, match="broken"):
        rule_coverage(model, composite)
    assert canonizer.applied.removed and isinstance(model[2], Block)


def test_first_layer_context_is_shared_over_the_walk():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1))
    report = rule_coverage(model, EpsilonGammaBox(low=0.0, high=1.0))
    assert [entry.rule for entry in report] == ["ZBox", "Gamma"]


def test_rule_params_of_tensor_bounds_and_callables():
    low = torch.zeros(1, 3, 4, 4)
    params = rule_params(ZBox(low=low, high=1))
    assert params["low"] is low and params["high"] == 1.0
    clipped = rule_params(Epsilon(epsilon=abs))
    assert clipped["epsilon"] is abs
