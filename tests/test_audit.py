"""Tests of the audit that finds operations on the relevance path that no rule covers."""

import weakref

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lrp_desktop_core.audit import _op_name, audit_composite, audit_rulemap
from lrp_desktop_core.core import Composite, Hook
from lrp_desktop_core.demo_net import build_demo_net
from lrp_desktop_core.layer import Sum
from lrp_desktop_core.rulemap import RuleChoice, RuleMap

SHAPE = (1, 3, 32, 32)


def rules_of(model, canonizer="none"):
    return RuleMap.from_preset(model, "epsilon_gamma_box", canonizer=canonizer, low=-3.0, high=3.0)


def audit(model, canonizer="none", shape=SHAPE):
    return audit_rulemap(model, rules_of(model, canonizer), shape)


def kinds(report):
    return {(finding.kind, finding.module, finding.op) for finding in report.findings}


class Swish(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        x = self.conv(x)
        return x * torch.sigmoid(x)


class Branches(nn.Module):
    def __init__(self, with_sum):
        super().__init__()
        self.left, self.right = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
        self.sum = Sum() if with_sum else None

    def forward(self, x):
        a, b = self.left(x), self.right(x)
        return a + b if self.sum is None else self.sum(torch.stack([a, b], dim=-1))


class FunctionalHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x).mean((2, 3))
        return F.linear(x, self.fc.weight, self.fc.bias)


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scale = nn.Parameter(torch.full((1, 4, 1, 1), 0.5))
        self.register_buffer("offset", torch.ones(4))

    def forward(self, x):
        doubled = self.offset * 2  # a constant: not on the relevance path
        return self.scale * self.conv(x) + doubled.sum() * 0


class Neutral(nn.Module):
    """Only relevance-neutral operations between its layers, and an unused auxiliary head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 16 * 16 + 4, 2)
        self.aux = nn.Linear(4, 2)  # used in training only

    def forward(self, x):
        x = F.relu(F.pad(self.features(x), (1, 1, 1, 1)))
        x = F.max_pool2d(x, 2)
        pooled = x.mean((2, 3))
        x = torch.cat([torch.flatten(x, 1), pooled], dim=1)
        x = self.dropout(x)
        return self.fc(x)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, 3))
        self.attention = nn.MultiheadAttention(3, 1)

    def forward(self, x):
        x = x.flatten(2).permute(2, 0, 1)
        x = torch.cat([self.token.expand(1, x.shape[1], -1), x])
        return self.attention(x, x, x)[0][0]


class Failing(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        self.features(x)
        raise RuntimeError("broken forward")


def test_inline_swish_is_an_outside_op_of_its_container():
    report = audit(Swish())
    assert {("outside_op", "", "mul"), ("outside_op", "", "sigmoid")} <= kinds(report)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), Swish())
    report = audit(model)
    assert ("outside_op", "1", "mul") in kinds(report)
    mul = next(f for f in report.for_module("1") if f.op == "mul")
    assert mul.count == 1 and "`1`" in mul.message and "mul" in mul.message
    assert report.warnings == tuple(f.message for f in report.findings) and not report.ok


def test_root_ops_are_named_as_the_models_own_forward():
    report = audit(Swish())
    assert all("the model's own forward" in message for message in report.warnings)


def test_addition_in_parent_is_flagged_but_sum_layer_is_not():
    assert kinds(audit(Branches(with_sum=False))) == {("outside_op", "", "add")}
    assert audit(Branches(with_sum=True)).ok


def test_functional_use_of_weights_is_flagged_twice():
    report = audit(FunctionalHead())
    assert ("never_ran", "fc", "") in kinds(report)
    assert ("outside_op", "", "linear") in kinds(report)
    (never_ran,) = report.for_module("fc")
    assert "`fc`" in never_ran.message and "linear" in never_ran.message


def test_multihead_attention_uses_its_out_proj_functionally():
    report = audit(Attention())
    assert ("never_ran", "attention.out_proj", "") in kinds(report)
    assert ("outside_op", "attention", "multi_head_attention_forward") in kinds(report)
    own = {f.module: f.message for f in report.findings if f.kind == "parameters_without_rule"}
    assert "`token`" in own[""] and "`in_proj_weight`" in own["attention"]


def test_own_parameter_on_relevance_path_without_rule():
    report = audit(nn.Sequential(LayerScale()))
    (finding,) = [f for f in report.findings if f.kind == "parameters_without_rule"]
    assert finding.module == "0" and finding.count == 1 and "`scale`" in finding.message
    # the arithmetic on the buffer is constant; only the ops touching the input count
    outside = {f.op: f.count for f in report.for_module("0") if f.kind == "outside_op"}
    assert outside == {"mul": 1, "add": 1}


@pytest.mark.parametrize(
    ("build", "canonizer"),
    [
        (lambda: build_demo_net(4), "merge_batchnorm"),
        (lambda: torchvision.models.resnet18(num_classes=10), "resnet"),
        (lambda: torchvision.models.vgg11_bn(num_classes=10), "vgg"),
        (Neutral, "merge_batchnorm"),
    ],
    ids=["demo", "resnet18", "vgg11_bn", "neutral_ops"],
)
def test_clean_models_have_no_findings(build, canonizer):
    report = audit(build(), canonizer)
    assert report.ok, report.warnings


def test_uncanonized_resnet_flags_each_residual_addition():
    report = audit(torchvision.models.resnet18(num_classes=10))
    assert {(f.module, f.op) for f in report.findings} == {
        (f"layer{stage}.{block}", "add") for stage in range(1, 5) for block in range(2)
    }


class Apply(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.op = op

    def forward(self, x):
        return self.op(self.conv(x))


def written_into(x):
    copy = torch.zeros_like(x.detach())
    copy[:, :2] = x[:, :2]
    return copy * 2


@pytest.mark.parametrize(
    ("op", "flagged"),
    [
        (lambda x: F.avg_pool2d(x, 2), None),
        (lambda x: F.avg_pool2d(x, 3, 1, 1), "avg_pool2d"),
        (lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), None),
        (lambda x: F.avg_pool2d(x, 2, divisor_override=3), "avg_pool2d"),
        (lambda x: F.pad(x, (1, 1), value=0.0), None),
        (lambda x: F.pad(x, (1, 1), value=1.0), "pad"),
        (lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"), "pad"),
        (lambda x: F.dropout(x, 0.5, training=False), None),
        (lambda x: F.dropout(x, 0.5, training=True), "dropout"),
        (lambda x: F.alpha_dropout(x, 0.5), None),
        (lambda x: x.sum((2, 3)), "sum"),
        (lambda x: x.mT * 2, "mul"),  # taint follows property getters
        (written_into, "mul"),  # and __setitem__
        (lambda x: x.sub_(1), "sub"),
    ],
)
def test_arguments_decide_whether_an_op_is_neutral(op, flagged):
    found = {(f.module, f.op) for f in audit(Apply(op)).findings}
    assert found == ({("", flagged)} if flagged else set())


class Raising(nn.Module):
    def forward(self, x):
        raise ValueError("not this way")


def test_an_exception_caught_inside_forward_leaves_the_module_stack_right():
    class Fallback(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.raising = nn.Conv2d(3, 4, 3), Raising()

        def forward(self, x):
            try:
                return self.raising(x)
            except ValueError:
                return self.conv(x) * 2

    assert kinds(audit(Fallback())) == {("outside_op", "", "mul")}


def test_rule_hook_code_runs_inside_its_module():
    class Busy(Hook):
        def pre_forward(self, module, args, kwargs):
            args[0].abs()
            return super().pre_forward(module, args, kwargs)

        def forward(self, module, args, kwargs, output):
            output.abs()

    def module_map(ctx, name, module):
        return Busy() if isinstance(module, (nn.Conv2d, nn.Linear)) else None

    assert audit_composite(Apply(torch.relu), Composite(module_map), torch.randn(SHAPE)).ok


def test_a_module_that_ran_is_not_reported_as_skipped():
    class Twice(FunctionalHead):
        def forward(self, x):
            x = self.conv(x).mean((2, 3))
            return self.fc(x) + F.linear(x, self.fc.weight)

    assert kinds(audit(Twice())) == {("outside_op", "", "linear"), ("outside_op", "", "add")}


def test_op_names_are_normalised():
    assert _op_name(torch.Tensor.__iadd__) == "add"
    assert _op_name(torch.Tensor.__rmul__) == "mul"
    assert _op_name(torch.Tensor.__truediv__) == "div"
    assert _op_name(torch.Tensor.add_) == "add"
    assert _op_name(torch.Tensor.__getitem__) == "__getitem__"


def snapshot(model):
    return (
        [(name, id(param)) for name, param in model.named_parameters()],
        {key: value.clone() for key, value in model.state_dict().items()},
        [(name, type(module), module.training) for name, module in model.named_modules()],
    )


def assert_intact(model, before):
    params, state, modules = snapshot(model)
    assert params == before[0] and modules == before[2]
    assert state.keys() == before[1].keys()
    for key, value in state.items():
        assert value.dtype == before[1][key].dtype and torch.equal(value, before[1][key]), key
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._forward_hooks_always_called and not module._forward_pre_hooks_with_kwargs


def test_model_is_intact_after_an_audit():
    model = torchvision.models.resnet18(num_classes=10).train()
    model.layer1.eval()
    before = snapshot(model)
    assert audit(model, "resnet").ok
    assert_intact(model, before)


def test_model_is_intact_after_a_failing_forward():
    model = Failing().train()
    before = snapshot(model)
    composite = rules_of(model, "merge_batchnorm").to_composite()
    with pytest.raises(RuntimeError, match="broken forward"):
        audit_composite(model, composite, torch.randn(SHAPE))
    assert_intact(model, before)
    assert not composite.hooks


def test_audit_keeps_no_graph_alive():
    model = build_demo_net(4)
    outputs = []
    model.register_forward_hook(lambda module, args, output: outputs.append(weakref.ref(output)))
    audit_composite(model, rules_of(model, "merge_batchnorm").to_composite(), torch.randn(SHAPE))
    assert outputs and outputs[-1]() is None


def test_a_model_is_traced_once_per_canonizer_and_shape():
    model = FunctionalHead()
    rules = rules_of(model)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    first = audit_rulemap(model, rules, SHAPE)
    assert audit_rulemap(model, rules, SHAPE) == first and calls == [SHAPE]
    # fc without a rule: nothing of fc's "never ran" any more, and no new pass for it
    changed = audit_rulemap(model, rules.with_rule(["fc"], RuleChoice("none")), SHAPE)
    assert ("never_ran", "fc", "") in kinds(first) and ("never_ran", "fc", "") not in kinds(changed)
    assert len(calls) == 1
    assert audit_rulemap(model, rules_of(model, "merge_batchnorm"), SHAPE) == first
    assert len(calls) == 2
    assert audit_rulemap(model, rules, (2, 3, 16, 16)) == first and len(calls) == 3
    assert audit_rulemap(FunctionalHead(), rules, SHAPE) == first and len(calls) == 3


def thinned(rules, keep_every):
    """``rules`` with all but every ``keep_every``-th layer's rule set to "none" (0: all none)."""
    names = list(rules)
    dropped = [name for i, name in enumerate(names) if not keep_every or i % keep_every]
    return rules.with_rule(dropped, RuleChoice("none")) if dropped else rules


@pytest.mark.parametrize(
    ("build", "canonizer"),
    [
        (lambda: nn.Sequential(nn.Conv2d(3, 3, 1), Swish()), "none"),
        (lambda: Branches(with_sum=False), "none"),
        (FunctionalHead, "none"),
        (Attention, "none"),
        (lambda: nn.Sequential(LayerScale()), "none"),
        (lambda: torchvision.models.resnet18(num_classes=10), "none"),
        (lambda: torchvision.models.resnet18(num_classes=10), "resnet"),
        (lambda: build_demo_net(4), "merge_batchnorm"),
    ],
    ids=["swish", "branches", "functional", "attention", "scale", "resnet18", "canonized", "demo"],
)
def test_findings_of_any_rule_map_equal_those_of_auditing_its_composite(build, canonizer):
    model = build()
    rules = rules_of(model, canonizer)
    inputs = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    seen = set()
    for keep_every in (1, 2, 3, 0):
        variant = thinned(rules, keep_every)
        expected = audit_composite(model, variant.to_composite(), inputs)
        assert audit_rulemap(model, variant, SHAPE) == expected, keep_every
        seen.add(expected)
    assert len(seen) > 1  # the variants differ in what they find
