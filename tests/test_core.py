"""Tests of the reference core API in ``lrp_desktop_core.core``."""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch
from torch import nn

from lrp_desktop_core import core
from lrp_desktop_core.core import (
    BasicHook,
    Composite,
    CompositeContext,
    Hook,
    Identity,
    ParamMod,
    RemovableHandle,
    RemovableHandleList,
    Stabilizer,
    collect_leaves,
    expand,
    stabilize,
    uncompress,
    zero_wrap,
)

REFERENCE_SIGNATURES = {
    "stabilize": "(input, epsilon=1e-06, clip=False, norm_scale=False, dim=None)",
    "expand": "(tensor, shape, cut_batch_dim=False)",
    "zero_wrap": "(zero_params)",
    "uncompress": "(data, selector, compressed)",
    "collect_leaves": "(module)",
}
REFERENCE_INITS = {
    Stabilizer: "(self, epsilon=1e-06, clip=False, norm_scale=False, dim=None)",
    ParamMod: "(self, modifier, param_keys=None, zero_params=None, require_params=True)",
    BasicHook: (
        "(self, input_modifiers=None, param_modifiers=None, output_modifiers=None, "
        "gradient_mapper=None, reducer=None, stabilizer=1e-06)"
    ),
    Composite: "(self, module_map=None, canonizers=None)",
    CompositeContext: "(self, module, composite)",
    RemovableHandle: "(self, instance)",
    Hook: "(self)",
}


def _plain_signature(function) -> str:
    signature = inspect.signature(function)
    parameters = signature.parameters.values()
    plain = signature.replace(
        parameters=[p.replace(annotation=inspect.Parameter.empty) for p in parameters],
        return_annotation=inspect.Signature.empty,
    )
    return str(plain)


@pytest.mark.parametrize("name", sorted(REFERENCE_SIGNATURES))
def test_function_signatures_follow_the_reference(name):
    assert _plain_signature(getattr(core, name)) == REFERENCE_SIGNATURES[name]


@pytest.mark.parametrize("cls", list(REFERENCE_INITS), ids=lambda cls: cls.__name__)
def test_constructor_signatures_follow_the_reference(cls):
    assert _plain_signature(cls.__init__) == REFERENCE_INITS[cls]


def test_every_reference_name_is_exported():
    names = {
        "Stabilizer",
        "stabilize",
        "expand",
        "zero_wrap",
        "uncompress",
        "ParamMod",
        "collect_leaves",
        "Identity",
        "Hook",
        "BasicHook",
        "RemovableHandle",
        "RemovableHandleList",
        "Composite",
        "CompositeContext",
    }
    assert names <= set(core.__all__)
    for method in ("register", "remove", "context", "inactive"):
        assert callable(getattr(Composite, method))


# --- stabilize and Stabilizer -------------------------------------------------------------------

VALUES = torch.tensor([-2.0, -1e-9, -0.0, 0.0, 1e-9, 3.0], dtype=torch.float64)


def test_stabilize_shifts_by_sign_with_zero_counted_positive():
    result = stabilize(VALUES, epsilon=0.5)
    expected = torch.tensor([-2.5, -0.5 - 1e-9, 0.5, 0.5, 0.5 + 1e-9, 3.5], dtype=torch.float64)
    torch.testing.assert_close(result, expected)


def test_stabilize_clip_keeps_sign_and_clamps_magnitude():
    result = stabilize(VALUES, epsilon=0.5, clip=True)
    expected = torch.tensor([-2.0, -0.5, 0.5, 0.5, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(result, expected)


def test_stabilize_norm_scale_uses_root_mean_square_over_all_but_batch():
    data = torch.tensor([[3.0, -4.0], [0.0, 0.0]], dtype=torch.float64)
    result = stabilize(data, epsilon=0.1, norm_scale=True)
    rms = torch.tensor([[(12.5) ** 0.5], [0.0]], dtype=torch.float64)
    expected = data + torch.where(data >= 0, 1.0, -1.0).double() * 0.1 * rms
    torch.testing.assert_close(result, expected)


def test_stabilize_norm_scale_respects_dim_and_clip():
    data = torch.tensor([[3.0, 0.01], [-4.0, -0.01]], dtype=torch.float64)
    result = stabilize(data, epsilon=0.1, clip=True, norm_scale=True, dim=(0,))
    rms = torch.tensor([[12.5**0.5, 1e-4**0.5]], dtype=torch.float64)
    expected = torch.sign(data) * torch.maximum(data.abs(), 0.1 * rms)
    torch.testing.assert_close(result, expected)


def test_stabilize_norm_scale_over_no_dimension_is_each_entrys_own_magnitude():
    """The mean over no dimension is the entry itself (torch's ``mean(dim=())`` takes all)."""
    data = torch.tensor([[3.0, -0.5], [-4.0, 0.0]], dtype=torch.float64)
    result = stabilize(data, epsilon=0.1, norm_scale=True, dim=())
    torch.testing.assert_close(result, data + 0.1 * data.abs() * torch.tensor([[1, -1], [-1, 1]]))
    by_int = stabilize(data, 0.1, norm_scale=True, dim=1)
    assert torch.equal(by_int, stabilize(data, 0.1, norm_scale=True, dim=(1,)))


def test_stabilize_leaves_input_untouched():
    data = VALUES.clone()
    stabilize(data)
    assert torch.equal(data, VALUES)


def test_stabilizer_calls_stabilize_and_ensure_converts():
    stabilizer = Stabilizer(epsilon=0.25, clip=True)
    torch.testing.assert_close(stabilizer(VALUES), stabilize(VALUES, 0.25, clip=True))
    from_number = Stabilizer.ensure(0.5)
    assert isinstance(from_number, Stabilizer) and from_number.epsilon == 0.5
    assert Stabilizer.ensure(3).epsilon == 3

    def custom(tensor):
        return tensor + 1

    assert Stabilizer.ensure(custom) is custom
    with pytest.raises(TypeError, match="stabilizer"):
        Stabilizer.ensure("1e-6")


# --- expand ---------------------------------------------------------------------------------------


def test_expand_number_becomes_tensor_of_shape():
    result = expand(2.5, (2, 3))
    assert isinstance(result, torch.Tensor) and result.shape == (2, 3)
    assert torch.all(result == 2.5)


def test_expand_appends_trailing_singletons():
    channels = torch.tensor([1.0, 2.0, 3.0])
    result = expand(channels, (3, 4, 5))
    assert result.shape == (3, 4, 5)
    assert torch.equal(result[:, 2, 3], channels)


def test_expand_cuts_a_larger_batch_only_when_asked():
    batch = torch.arange(4.0).reshape(4, 1)
    assert torch.equal(expand(batch, (2, 3), cut_batch_dim=True)[:, 0], torch.tensor([0.0, 1.0]))
    with pytest.raises(RuntimeError):
        expand(batch, (2, 3))


@pytest.mark.parametrize(
    ("tensor", "shape"),
    [(torch.zeros(3), (4, 2)), (torch.zeros(2, 2, 2), (2, 2)), (torch.zeros(2, 3), (2, 4))],
)
def test_expand_refuses_what_does_not_fit(tensor, shape):
    with pytest.raises(RuntimeError):
        expand(tensor, shape)


# --- zero_wrap and uncompress ---------------------------------------------------------------------


def _double(tensor, name):
    return tensor * 2


def test_zero_wrap_with_a_string():
    wrapped = zero_wrap("bias")(_double)
    tensor = torch.ones(3)
    assert torch.equal(wrapped(tensor, "bias"), torch.zeros(3))
    assert torch.equal(wrapped(tensor, "weight"), torch.full((3,), 2.0))
    # a string is one name, not a set of letters
    assert torch.equal(wrapped(tensor, "b"), torch.full((3,), 2.0))


def test_zero_wrap_with_a_list():
    wrapped = zero_wrap(["bias", "weight"])(_double)
    tensor = torch.ones(2)
    assert torch.equal(wrapped(tensor, "weight"), torch.zeros(2))
    assert torch.equal(wrapped(tensor, "bias"), torch.zeros(2))
    assert torch.equal(wrapped(tensor, "scale"), torch.full((2,), 2.0))


@pytest.mark.parametrize(
    ("data", "selector"),
    [
        ([1, 2, 3, 4, 5], [True, False, True, False, False]),
        ("abcdef", [False] * 6),
        ("abc", [True, True, True]),
    ],
)
def test_uncompress_inverts_compress(data, selector):
    compressed = [str(value).upper() * 2 for value in itertools.compress(data, selector)]
    result = list(uncompress(data, selector, compressed))
    expected = []
    replacements = iter(compressed)
    for value, selected in zip(data, selector):
        expected.append(next(replacements) if selected else value)
    assert result == expected
    assert len(result) == len(data)


def test_uncompress_example():
    assert list(uncompress([1, 2, 3, 4], [False, True, True, False], ["b", "c"])) == [
        1,
        "b",
        "c",
        4,
    ]


# --- ParamMod -------------------------------------------------------------------------------------


def _linear() -> nn.Linear:
    return nn.Linear(3, 2).double()


def test_parammod_modifies_inside_and_restores_objects_and_values():
    layer = _linear()
    weight, bias = layer.weight, layer.bias
    saved = {key: value.clone() for key, value in layer.state_dict().items()}
    x = torch.randn(4, 3, dtype=torch.float64)
    with ParamMod(lambda tensor, name: tensor.clamp(min=0))(layer) as module:
        assert module is layer
        expected = x @ weight.clamp(min=0).T + bias.clamp(min=0)
        torch.testing.assert_close(layer(x), expected)
    assert layer.weight is weight and layer.bias is bias
    assert isinstance(layer.weight, nn.Parameter)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, saved[key])
    torch.testing.assert_close(layer(x), x @ weight.T + bias)


def test_parammod_restores_when_the_body_raises():
    layer = _linear()
    weight = layer.weight
    saved = weight.detach().clone()
    with pytest.raises(KeyError), ParamMod(lambda tensor, name: tensor * 0)(layer):
        raise KeyError("boom")
    assert layer.weight is weight and torch.equal(layer.weight, saved)


def test_parammod_param_keys_and_zero_params():
    layer = _linear()
    mod = ParamMod(lambda tensor, name: tensor + 1, param_keys=["weight"], zero_params="bias")
    original, modified = mod.state_dicts(layer)
    assert set(original) == {"weight", "bias"}
    torch.testing.assert_close(modified["weight"], layer.weight.detach() + 1)
    assert torch.equal(modified["bias"], torch.zeros_like(layer.bias))
    none_mod = ParamMod(lambda tensor, name: tensor + 1, param_keys=[])
    assert none_mod.state_dicts(layer) == ({}, {})


def test_parammod_default_keys_are_the_modules_own_parameters():
    model = nn.Sequential(nn.Linear(2, 2))
    assert ParamMod(lambda tensor, name: tensor).state_dicts(model) == ({}, {})


def test_parammod_missing_parameters_raise_unless_not_required():
    layer = nn.ReLU()
    mod = ParamMod(lambda tensor, name: tensor, param_keys=["weight"])
    with pytest.raises(RuntimeError, match="weight"):
        mod.state_dicts(layer)
    relaxed = ParamMod(lambda tensor, name: tensor, param_keys=["weight"], require_params=False)
    assert relaxed.state_dicts(layer) == ({}, {})
    no_bias = nn.Linear(2, 2, bias=False)
    original, _ = ParamMod(lambda tensor, name: tensor, param_keys=["weight", "bias"]).state_dicts(
        no_bias
    )
    assert set(original) == {"weight"}


def test_parammod_ensure():
    mod = ParamMod(_double)
    assert ParamMod.ensure(mod) is mod
    wrapped = ParamMod.ensure(_double)
    assert isinstance(wrapped, ParamMod) and wrapped.modifier is _double
    with pytest.raises(TypeError):
        ParamMod.ensure(3)


# --- collect_leaves and Identity ------------------------------------------------------------------


def test_collect_leaves_depth_first_in_registration_order():
    inner = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())
    model = nn.Sequential(nn.Identity(), inner, nn.Sequential(nn.Flatten(), nn.Linear(1, 1)))
    leaves = list(collect_leaves(model))
    assert leaves == [model[0], inner[0], inner[1], model[2][0], model[2][1]]
    lone = nn.ReLU()
    assert list(collect_leaves(lone)) == [lone]


def test_identity_forward_and_backward():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    out_a, out_b = Identity.apply(a, b)
    assert torch.equal(out_a, a) and torch.equal(out_b, b)
    assert out_a.grad_fn is not None and out_a.grad_fn is out_b.grad_fn
    seeds = (torch.randn(3), torch.randn(2))
    grads = torch.autograd.grad((out_a, out_b), (a, b), seeds)
    assert torch.equal(grads[0], seeds[0]) and torch.equal(grads[1], seeds[1])


# --- hooks ----------------------------------------------------------------------------------------


class PassHook(Hook):
    """Relevance passes unchanged (the output gradient goes to the input)."""

    def backward(self, module, grad_input, grad_output):
        return grad_output


def _epsilon_map(ctx, name, module):
    if isinstance(module, nn.Linear):
        return BasicHook()
    if isinstance(module, nn.ReLU):
        return PassHook()
    return None


def _relu_net(inplace: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(8, 16, bias=False),
        nn.ReLU(inplace=inplace),
        nn.Linear(16, 12, bias=False),
        nn.ReLU(inplace=inplace),
        nn.Linear(12, 4, bias=False),
    ).double()


def _hook_counts(model: nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


@pytest.mark.parametrize("inplace", [False, True])
def test_epsilon_on_bias_free_relu_net_conserves_relevance(inplace):
    model = _relu_net(inplace)
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    with Composite(_epsilon_map).context(model):
        output = model(x)
        seed = output * torch.eye(4, dtype=torch.float64)[[0, 1, 2, 3, 0]]
        (relevance,) = torch.autograd.grad(output, x, seed)
    torch.testing.assert_close(relevance.sum(1), seed.sum(1), rtol=1e-4, atol=1e-12)


def test_basic_hook_matches_hand_computed_epsilon_rule():
    layer = nn.Linear(4, 3).double()
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(2, 3, dtype=torch.float64)
    with Composite(lambda ctx, name, module: BasicHook(stabilizer=0.1)).context(layer):
        (relevance,) = torch.autograd.grad(layer(x), x, seed)
    with torch.no_grad():
        z = x @ layer.weight.T + layer.bias
        expected = x * ((seed / stabilize(z, 0.1)) @ layer.weight)
    torch.testing.assert_close(relevance, expected)


def test_module_called_twice_gets_each_calls_relevance():
    shared = nn.Linear(4, 4, bias=False).double()

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = shared

        def forward(self, x):
            return self.shared(torch.relu(self.shared(x)))

    model = Twice()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    hook_map = lambda ctx, name, module: (  # noqa: E731
        BasicHook(stabilizer=1e-12) if isinstance(module, nn.Linear) else None
    )
    with Composite(hook_map).context(model):
        output = model(x)
        (relevance,) = torch.autograd.grad(output, x, output)
    with torch.no_grad():
        weight = shared.weight
        hidden = x @ weight.T
        activation = torch.relu(hidden)
        top = activation @ weight.T
        relevance_hidden = activation * ((top / top) @ weight)
        expected = x * ((relevance_hidden / hidden) @ weight)
    torch.testing.assert_close(relevance, expected, rtol=1e-8, atol=1e-10)


class TwoInputs(nn.Module):
    """A leaf with two tensor inputs and one non-tensor argument."""

    def __init__(self):
        super().__init__()
        self.weight_a = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
        self.weight_b = nn.Parameter(torch.randn(3, 2, dtype=torch.float64))

    def forward(self, a, b, scale: float = 1.0, note: str = ""):
        return scale * (a @ self.weight_a.T + b @ self.weight_b.T)


def test_module_with_several_tensor_inputs_gets_relevance_for_each():
    module = TwoInputs()
    a = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(2, 3, dtype=torch.float64)
    with Composite(lambda ctx, name, m: BasicHook(stabilizer=1e-12)).context(module):
        output = module(a, b, 2.0, note="a string")
        rel_a, rel_b = torch.autograd.grad(output, (a, b), seed)
    with torch.no_grad():
        z = 2.0 * (a @ module.weight_a.T + b @ module.weight_b.T)
        ratio = seed / z
        expected_a = a * (2.0 * ratio @ module.weight_a)
        expected_b = b * (2.0 * ratio @ module.weight_b)
    torch.testing.assert_close(rel_a, expected_a)
    torch.testing.assert_close(rel_b, expected_b)
    torch.testing.assert_close(rel_a.sum() + rel_b.sum(), seed.sum())


def test_hook_does_nothing_when_no_input_requires_grad():
    layer = nn.Linear(3, 3)
    calls = []

    class Recording(Hook):
        def forward(self, module, args, kwargs, output):
            calls.append("forward")

    with Composite(lambda ctx, name, module: Recording()).context(layer):
        x = torch.randn(2, 3)
        output = layer(x)
        with torch.no_grad():
            layer(x.requires_grad_())
    assert calls == []
    torch.testing.assert_close(output, x @ layer.weight.T + layer.bias)


def test_hook_copy_is_independent_with_same_arguments():
    hook = BasicHook(stabilizer=0.5)
    copy = hook.copy()
    assert type(copy) is BasicHook and copy is not hook
    assert copy.stabilizer.epsilon == 0.5

    class Custom(BasicHook):
        def __init__(self, epsilon=1e-6, note="x"):
            super().__init__(stabilizer=epsilon)
            self.note = note

    custom = Custom(0.25, note="y").copy()
    assert isinstance(custom, Custom) and custom.note == "y" and custom.stabilizer.epsilon == 0.25


def test_handles_remove_hooks_and_composite_removes_everything():
    model = _relu_net()
    before = _hook_counts(model)
    composite = Composite(_epsilon_map)
    composite.register(model)
    counts = _hook_counts(model)
    hooked = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.ReLU))]
    assert all((len(m._forward_pre_hooks), len(m._forward_hooks)) == (1, 1) for m in hooked)
    assert counts != before
    composite.register(model)  # registering again replaces, never doubles
    assert _hook_counts(model) == counts
    composite.remove()
    assert _hook_counts(model) == before
    assert composite.hooks == [] and len(composite.handles) == 0


def test_removable_handles():
    removed = []

    class Target:
        def remove(self):
            removed.append(self)

    target = Target()
    handles = RemovableHandleList([RemovableHandle(target), RemovableHandle(target)])
    handles.remove()
    assert removed == [target, target] and len(handles) == 0
    handle = RemovableHandle(Target())  # the target is gone: nothing to call
    handle.remove()
    assert len(removed) == 2


def test_composite_context_registers_and_removes():
    model = _relu_net()
    composite = Composite(_epsilon_map)
    with composite.context(model) as entered:
        assert entered is model
        assert len(composite.hooks) == 5
    assert composite.hooks == [] and _hook_counts(model) == [(0, 0)] * 6
    with pytest.raises(ValueError, match="inside"), CompositeContext(model, composite):
        raise ValueError("inside")
    assert _hook_counts(model) == [(0, 0)] * 6


def test_module_map_sees_every_named_module_pre_order_with_one_context():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
    seen = []

    def module_map(ctx, name, module):
        ctx.setdefault("count", 0)
        ctx["count"] += 1
        seen.append((name, ctx["count"]))
        return

    Composite(module_map).register(model)
    assert seen == [("", 1), ("0", 2), ("1", 3), ("1.0", 4), ("1.1", 5)]


def test_canonizers_are_applied_first_and_reverted_in_reverse_order():
    events = []

    class Recorder:
        def __init__(self, label):
            self.label = label

        def apply(self, module):
            events.append(("apply", self.label))
            return [self]

        def remove(self):
            events.append(("remove", self.label))

    def module_map(ctx, name, module):
        events.append(("map", name))
        return

    composite = Composite(module_map, canonizers=[Recorder("a"), Recorder("b")])
    composite.register(nn.ReLU())
    composite.remove()
    assert events == [("apply", "a"), ("apply", "b"), ("map", ""), ("remove", "b"), ("remove", "a")]


def test_inactive_lets_the_plain_gradient_through_and_differentiates_the_attribution():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(2, 2, dtype=torch.float64)

    def epsilon_map(ctx, name, module):
        return BasicHook() if isinstance(module, nn.Linear) else None

    composite = Composite(epsilon_map)
    with composite.context(model):
        output = model(x)
        with composite.inactive():
            (plain,) = torch.autograd.grad(output, x, seed, retain_graph=True)
        (relevance,) = torch.autograd.grad(output, x, seed, create_graph=True)
        with composite.inactive():
            (second,) = torch.autograd.grad(relevance.sum(), x)
    (expected_plain,) = torch.autograd.grad(model(x), x, seed)
    torch.testing.assert_close(plain, expected_plain)
    assert not torch.allclose(relevance, expected_plain)

    def relevance_of(inputs):
        with composite.context(model):
            out = model(inputs)
            (rel,) = torch.autograd.grad(out, inputs, seed, create_graph=True)
        return rel.sum()

    numeric = torch.autograd.functional.jacobian(relevance_of, x.detach().clone())
    torch.testing.assert_close(second, numeric, rtol=1e-6, atol=1e-8)
    assert all(hook.active for hook in composite.hooks) or composite.hooks == []


def _snapshot(model):
    return [(name, param, param.detach().clone()) for name, param in model.named_parameters()], {
        key: value.clone() for key, value in model.state_dict().items()
    }


def _assert_unchanged(model, snapshot):
    params, state = snapshot
    for (name, param), (saved_name, saved_param, saved_value) in zip(
        model.named_parameters(), params
    ):
        assert name == saved_name and param is saved_param and torch.equal(param, saved_value)
    assert set(model.state_dict()) == set(state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_parameters_keep_identity_and_values_through_register_attribution_remove():
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    snapshot = _snapshot(model)
    clamp = ParamMod(lambda tensor, name: tensor.clamp(min=0))
    composite = Composite(
        lambda ctx, name, module: (
            BasicHook(param_modifiers=[clamp]) if isinstance(module, nn.Linear) else None
        )
    )
    composite.register(model)
    _assert_unchanged(model, snapshot)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    output = model(x)
    torch.autograd.grad(output, x, torch.ones_like(output))
    _assert_unchanged(model, snapshot)
    composite.remove()
    _assert_unchanged(model, snapshot)


def test_exception_in_the_middle_of_a_backward_leaves_the_model_intact():
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    snapshot = _snapshot(model)

    def failing_reducer(inputs, gradients):
        raise ArithmeticError("reducer failed")

    def module_map(ctx, name, module):
        if name == "0":
            return BasicHook(
                param_modifiers=[lambda tensor, name: tensor * 3], reducer=failing_reducer
            )
        if isinstance(module, nn.Linear):
            return BasicHook(param_modifiers=[lambda tensor, name: tensor * 2])
        return None

    composite = Composite(module_map)
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)

    def attribute() -> None:
        output = model(x)
        torch.autograd.grad(output, x, torch.ones_like(output))

    with pytest.raises(ArithmeticError, match="reducer failed"), composite.context(model):
        attribute()
    _assert_unchanged(model, snapshot)
    assert _hook_counts(model) == [(0, 0)] * 4
    torch.testing.assert_close(model(x.detach()), model.double()(x.detach()))


def test_modified_parameters_are_cached_while_unchanged_and_refreshed_after_an_update():
    layer = nn.Linear(3, 2).double()
    calls = []

    def counting(tensor, name):
        calls.append(name)
        return tensor.clamp(min=0)

    composite = Composite(lambda ctx, name, module: BasicHook(param_modifiers=[counting]))
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    with composite.context(layer):
        for _ in range(3):
            output = layer(x)
            torch.autograd.grad(output, x, torch.ones_like(output))
        assert calls == ["weight", "bias"]
        with torch.no_grad():
            layer.weight.mul_(-1)
        output = layer(x)
        (relevance,) = torch.autograd.grad(output, x, torch.ones_like(output))
    assert calls == ["weight", "bias"] * 2
    with torch.no_grad():
        weight, bias = layer.weight.clamp(min=0), layer.bias.clamp(min=0)
        z = x @ weight.T + bias
        expected = x * ((1 / stabilize(z)) @ weight)
    torch.testing.assert_close(relevance, expected)


def test_basic_hook_validates_branch_counts():
    with pytest.raises(ValueError, match="same length"):
        BasicHook(input_modifiers=[lambda x: x] * 2, param_modifiers=[lambda t, n: t])


@pytest.mark.parametrize("uses_module_backward", [False, True])
def test_an_attribution_leaves_no_reference_cycle_that_keeps_tensors_alive(
    uses_module_backward, monkeypatch
):
    import gc
    import weakref

    monkeypatch.setattr(BasicHook, "uses_module_backward", uses_module_backward)
    model = _relu_net()
    composite = Composite(_epsilon_map)
    alive = []
    gc.disable()
    try:
        with composite.context(model):
            for _ in range(2):
                x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
                output = model(x)
                # a seed that is part of the graph, as ``output * one_hot`` is
                torch.autograd.grad(output, x, output * torch.ones_like(output))
                alive.append(weakref.ref(x))
                del x, output
        assert [ref() is None for ref in alive] == [True, True]
    finally:
        gc.enable()


@pytest.mark.parametrize("uses_module_backward", [False, True])
def test_an_in_place_module_does_not_overwrite_the_stored_input(uses_module_backward):
    seen = []

    class Recording(Hook):
        def backward(self, module, grad_input, grad_output):
            seen.append(self.stored_tensors["input"][0].detach().clone())
            return grad_input

    Recording.uses_module_backward = uses_module_backward
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)).double()
    x = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    composite = Composite(lambda ctx, name, module: Recording() if name == "1" else None)
    with composite.context(model):
        output = model(x)
        torch.autograd.grad(output, x, torch.ones_like(output))
    pre_activation = model[0](x).detach()
    assert (pre_activation < 0).any()
    torch.testing.assert_close(seen[0], pre_activation)


class _SkippingPass(Hook):
    """Pass the relevance on, skipping the module's own backward."""

    uses_module_backward = False

    def backward(self, module, grad_input, grad_output):
        return grad_output


class _ReturnsBuffer(nn.Module):
    """A module whose output is a tensor it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("constant", torch.ones(4, dtype=torch.float64))

    def forward(self, x):
        return self.constant.expand_as(x).reshape(x.shape) if x.ndim > 1 else self.constant


@pytest.mark.parametrize("layer", [nn.Identity(), nn.Flatten(0), nn.ReLU(inplace=True)])
def test_a_skipped_module_output_shared_with_its_input_is_copied(layer):
    """An output aliasing the stored input is copied, so an in-place op after it is harmless."""
    seen = []

    class Recording(_SkippingPass):
        def backward(self, module, grad_input, grad_output):
            seen.append(self.stored_tensors["input"][0].detach().clone())
            return grad_output

    model = nn.Sequential(nn.Linear(4, 4), layer, nn.ReLU(inplace=True), nn.Linear(4, 2)).double()
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    composite = Composite(lambda ctx, name, module: Recording() if name == "1" else None)
    with composite.context(model):
        output = model(x)
        (relevance,) = torch.autograd.grad(output, x, torch.ones_like(output))
    pre_activation = model[0](x).detach()
    assert (pre_activation < 0).any()
    torch.testing.assert_close(seen[0], pre_activation)
    mask = (layer(pre_activation.clone()) > 0).double()
    expected = model[0].weight.T @ (mask * model[3].weight.sum(0))
    torch.testing.assert_close(relevance, expected.detach())


def test_a_skipped_module_returning_its_own_tensor_leaves_it_outside_the_graph():
    module = _ReturnsBuffer()
    model = nn.Sequential(module, nn.Linear(4, 2).double())
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    composite = Composite(lambda ctx, name, child: _SkippingPass() if name == "0" else None)
    with composite.context(model):
        output = model(x)
        torch.autograd.grad(output, x, torch.ones_like(output))
    assert module.constant.grad_fn is None
    assert torch.equal(module.constant, torch.ones(4, dtype=torch.float64))
