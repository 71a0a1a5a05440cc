"""Code written for zennit runs on lrp_desktop_core as it does on zennit (issue 14, item 6).

Each test is written from zennit's documented API and, where that is practical, runs the same code
against the installed zennit 0.5.1 and against this package, and compares.  README lists the
differences that are deliberate (exact batch-norm merge, per-call records, model left intact).
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from lrp_desktop_core import attribution as ours_attribution
from lrp_desktop_core import canonizers as ours_canonizers
from lrp_desktop_core import cmap as ours_cmap
from lrp_desktop_core import composites as ours_composites
from lrp_desktop_core import core as ours_core
from lrp_desktop_core import image as ours_image
from lrp_desktop_core import rules as ours_rules

zennit_attribution = pytest.importorskip("zennit.attribution")
zennit_canonizers = pytest.importorskip("zennit.canonizers")
zennit_cmap = pytest.importorskip("zennit.cmap")
zennit_composites = pytest.importorskip("zennit.composites")
zennit_core = pytest.importorskip("zennit.core")
zennit_image = pytest.importorskip("zennit.image")
zennit_rules = pytest.importorskip("zennit.rules")

pytestmark = pytest.mark.oracle

ATTRIBUTION = {"ours": ours_attribution, "zennit": zennit_attribution}
CORE = {"ours": ours_core, "zennit": zennit_core}
BOTH = ["ours", "zennit"]
README = Path(__file__).resolve().parent.parent / "README.md"


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Softplus(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    ).double()


def _inputs() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 6, 6, dtype=torch.float64)


def _one_hot() -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64)[[0, 2]]


def _composite(which: str):
    module = ours_composites if which == "ours" else zennit_composites
    return module.EpsilonPlusFlat()


# --- names ------------------------------------------------------------------------------------


def test_identity_and_constant_are_zennits():
    for module in ATTRIBUTION.values():
        marker = object()
        assert module.identity(marker) is marker
        assert module.constant(marker)(1, 2, key=3) is marker


@pytest.mark.parametrize("which", BOTH)
def test_composite_hook_refs_hold_the_registered_hooks(which):
    model, composite = _net(), _composite(which)
    assert len(composite.hook_refs) == 0
    with composite.context(model):
        hooks = list(composite.hook_refs)
        assert len(hooks) >= 5  # the convolutions, the activations, the linear layer
        assert all(isinstance(hook, CORE[which].Hook) for hook in hooks)
    assert len(composite.hook_refs) == 0


@pytest.mark.parametrize("which", BOTH)
def test_attributor_inactive_lets_the_plain_gradient_flow(which):
    model, x = _net(), _inputs()
    attribution = ATTRIBUTION[which]
    plain = attribution.Gradient(model)(x, _one_hot())[1]
    with attribution.Gradient(model, _composite(which)) as attributor:
        modified = attributor(x, _one_hot())[1]
        with attributor.inactive():
            inactive = attributor(x, _one_hot())[1]
    assert not torch.allclose(modified, plain)
    torch.testing.assert_close(inactive, plain)


@pytest.mark.parametrize("which", BOTH)
def test_canonizer_base_apply_returns_a_list(which):
    canonizers = ours_canonizers if which == "ours" else zennit_canonizers

    class Extending(canonizers.Canonizer):
        def apply(self, root_module):
            return [*super().apply(root_module)]

        def register(self):
            pass

        def remove(self):
            pass

    assert Extending().apply(nn.Linear(2, 2)) == []


def test_stabilize_takes_an_int_dim_as_zennit_does():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    by_int = ours_core.stabilize(x, 1e-2, norm_scale=True, dim=1)
    torch.testing.assert_close(by_int, ours_core.stabilize(x, 1e-2, norm_scale=True, dim=(1,)))
    torch.testing.assert_close(by_int, zennit_core.stabilize(x, 1e-2, norm_scale=True, dim=1))
    stabilizer = ours_core.Stabilizer(1e-2, norm_scale=True, dim=2)
    expected = zennit_core.stabilize(x, 1e-2, norm_scale=True, dim=2)
    torch.testing.assert_close(stabilizer(x), expected)


# --- hooks ------------------------------------------------------------------------------------


def test_basic_hook_copies_share_the_modifier_objects():
    for core in CORE.values():
        hook = core.BasicHook(
            input_modifiers=[lambda x: x, lambda x: x.clamp(min=0)],
            param_modifiers=[lambda p, name: p, lambda p, name: p.clamp(min=0)],
            output_modifiers=[lambda z: z, lambda z: z],
            gradient_mapper=lambda grad, outputs: [grad / (o + 1e-6) for o in outputs],
            reducer=lambda inputs, grads: inputs[0] * grads[0] + inputs[1] * grads[1],
        )
        copy = hook.copy()
        assert copy is not hook and type(copy) is type(hook)
        for name in ("input_modifiers", "output_modifiers", "param_modifiers"):
            assert all(a is b for a, b in zip(getattr(copy, name), getattr(hook, name)))
        assert copy.gradient_mapper is hook.gradient_mapper
        assert copy.reducer is hook.reducer
    rule = ours_rules.Epsilon(epsilon=0.25)
    copy = rule.copy()
    assert copy.epsilon == 0.25 and copy.stabilizer is rule.stabilizer
    assert copy.stored_tensors is not rule.stored_tensors


def _zennit_style_hooks(core: ModuleType) -> tuple[type, list]:
    """Return a hook subclass written against zennit 0.5's signatures.

    It overrides ``pre_forward``, ``post_forward`` and ``forward`` without keyword arguments,
    and ``backward``.
    """
    calls: list = []

    class HalveGradient(core.Hook):
        def pre_forward(self, module, input):
            calls.append("pre_forward")
            return super().pre_forward(module, input)

        def post_forward(self, module, input, output):
            calls.append("post_forward")
            return super().post_forward(module, input, output)

        def forward(self, module, input, output):
            calls.append(("forward", tuple(output.shape)))

        def backward(self, module, grad_input, grad_output):
            calls.append("backward")
            return tuple(grad / 2 for grad in grad_input)

    return HalveGradient, calls


def test_hook_subclasses_with_zennits_signatures_keep_working():
    results, traces = [], []
    for which in BOTH:
        core = CORE[which]
        hook_class, calls = _zennit_style_hooks(core)
        model, x = _net(), _inputs()

        def module_map(ctx, name, module, hook_class=hook_class):
            return hook_class() if isinstance(module, nn.Tanh) else None

        composite = core.Composite(module_map=module_map)
        with ATTRIBUTION[which].Gradient(model, composite) as attributor:
            results.append(attributor(x, _one_hot())[1])
        traces.append(calls)
    torch.testing.assert_close(*results)
    plain = ours_attribution.Gradient(_net())(_inputs(), _one_hot())[1]
    torch.testing.assert_close(results[0], plain / 2)
    for calls in traces:
        assert {"pre_forward", "post_forward", "backward", ("forward", (2, 4, 6, 6))} <= set(calls)


# --- occlusion ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "stride"),
    [((1, 3, 3, 3), (1, 3, 3, 3)), ((2, 2), 2), (3, (1, 2)), (4, 4), ((1, 6, 2), (1, 3, 2))],
)
def test_occlusion_reads_window_and_stride_as_zennit_does(window, stride):
    model, x = _net(), _inputs()

    def score(output):
        return output * _one_hot()

    ours = ours_attribution.Occlusion(model, window=window, stride=stride)(x, score)
    theirs = zennit_attribution.Occlusion(model, window=window, stride=stride)(x, score)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])


def test_a_window_for_every_dimension_includes_the_batch():
    model, x = _net(), _inputs()
    masks = ours_attribution.Occlusion(model, window=(1, 3, 6, 6), stride=(1, 3, 6, 6)).masks(x)
    assert len(masks) == 2  # one window per sample, none across the batch
    assert masks[0][0].all() and not masks[0][1].any()


@pytest.mark.parametrize("which", BOTH)
@pytest.mark.parametrize(("window", "stride"), [(2.0, 2), (2, 1.5), ((2, 2.0), 2), ("2", 2)])
def test_a_non_integer_window_or_stride_is_a_type_error(which, window, stride):
    with pytest.raises(TypeError):
        ATTRIBUTION[which].Occlusion(_net(), window=window, stride=stride)


@pytest.mark.parametrize("which", BOTH)
def test_the_unoccluded_pass_comes_last(which):
    model, x = _net(), _inputs()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    output, _ = ATTRIBUTION[which].Occlusion(model, window=3, stride=3)(x, _one_hot())
    assert len(seen) == 5  # four windows, then the input itself
    torch.testing.assert_close(seen[-1], x)
    assert not any(torch.equal(earlier, x) for earlier in seen[:-1])
    torch.testing.assert_close(output, model(x))


# --- differentiable attributions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("Gradient", {}),
        ("SmoothGrad", {"n_iter": 3, "noise_level": 0.1}),
        ("IntegratedGradients", {"n_iter": 3}),
    ],
)
def test_attributions_with_create_graph_are_differentiable_in_the_input(name, kwargs):
    grads = []
    for which in BOTH:
        model = _net()
        x = _inputs().requires_grad_()
        attributor = getattr(ATTRIBUTION[which], name)(model, create_graph=True, **kwargs)
        torch.manual_seed(5)
        _, relevance = attributor(x, _one_hot())
        assert relevance.requires_grad
        (grad,) = torch.autograd.grad((relevance**2).sum(), x)
        assert grad.abs().sum() > 0
        grads.append(grad)
    torch.testing.assert_close(*grads)


def test_lrp_with_create_graph_is_differentiable_in_the_input():
    model, x = _net(), _inputs().requires_grad_()
    with ours_attribution.Gradient(model, _composite("ours"), create_graph=True) as attributor:
        _, relevance = attributor(x, _one_hot())
    (grad,) = torch.autograd.grad(relevance.sum(), x)
    assert torch.isfinite(grad).all()


# --- MixedComposite -----------------------------------------------------------------------------


def _mixed(which: str):
    composites = ours_composites if which == "ours" else zennit_composites
    rules = ours_rules if which == "ours" else zennit_rules
    conv = (nn.Conv2d,)
    named = composites.NameMapComposite([(("2",), rules.Epsilon())])
    first = composites.SpecialFirstLayerMapComposite(
        layer_map=[(conv, rules.Gamma()), (nn.Linear, rules.Epsilon())],
        first_map=[(conv, rules.Flat())],
    )
    return composites.MixedComposite([named, first])


def _rules_given(composite, model: nn.Module) -> list[tuple[str, str]]:
    ctx: dict = {}
    given = []
    for name, module in model.named_modules():
        hook = composite.module_map(ctx, name, module)
        given.append((name, None if hook is None else type(hook).__name__))
    return given


@pytest.mark.parametrize("first_named", [False, True])
def test_mixed_composite_gives_the_first_layer_rule_where_zennit_does(first_named):
    model = _net()
    composites = {which: _mixed(which) for which in BOTH}
    if first_named:  # the name map takes the first convolution itself
        for composite in composites.values():
            name_map = composite.composites[0].name_map
            name_map[0] = (("0",), name_map[0][1])
    ours, theirs = (_rules_given(composites[which], model) for which in BOTH)
    assert ours == theirs
    if first_named:  # the first layer was seen: the next convolution gets no first-layer rule
        assert dict(ours)["0"] == "Epsilon" and dict(ours)["2"] == "Gamma"
    else:
        assert dict(ours)["0"] == "Flat" and dict(ours)["2"] == "Epsilon"


# --- error types --------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["", "00f,zzzzzz", "0:00f,,f00", "00f"])
def test_colour_map_syntax_errors_are_runtime_errors_as_in_zennit(source):
    with pytest.raises(RuntimeError):
        zennit_cmap.ColorMap(source)
    with pytest.raises(RuntimeError) as caught:
        ours_cmap.ColorMap(source)
    assert isinstance(caught.value, ValueError)


def test_imgify_takes_a_grid_shape_as_zennit_does():
    batch = np.random.default_rng(0).random((4, 1, 3, 5))
    ours = np.asarray(ours_image.imgify(batch, grid=(1, 4), vmin=0, vmax=1).convert("RGB"))
    assert ours.shape == (3, 20, 3)


@pytest.mark.parametrize(
    ("call", "args", "kwargs"),
    [
        ("imgify", (np.zeros((2, 2, 2, 2, 2)),), {}),
        ("imgify", (np.zeros(4),), {}),
        ("imgify", (np.zeros((3, 4, 4, 4)),), {}),
        ("imgify", (np.zeros((4, 4)),), {"grid": True}),
        ("imgify", (np.zeros((4, 1, 4, 4)),), {"grid": (1, 2, 2)}),
        ("gridify", (np.zeros((4, 4)),), {}),
        ("gridify", (np.zeros((4, 5, 4, 4)),), {}),
    ],
)
def test_bad_image_shapes_and_grid_arguments_are_type_errors_as_in_zennit(call, args, kwargs):
    with pytest.raises(TypeError):
        getattr(zennit_image, call)(*args, **kwargs)
    with pytest.raises(TypeError) as caught:
        getattr(ours_image, call)(*args, **kwargs)
    assert isinstance(caught.value, ValueError)


# --- README's example ---------------------------------------------------------------------------


def _readme_engine_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The engine") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None, "README's engine section has no python example"
    return match.group(1)


def _is_zennits_pillow_failure(error: BaseException) -> bool:
    frames = [frame.filename for frame in traceback.extract_tb(error.__traceback__)]
    in_zennit = any(name.endswith(("zennit/image.py", "zennit\\image.py")) for name in frames)
    return in_zennit and frames[-1].replace("\\", "/").endswith("PIL/ImagePalette.py")


def test_readmes_engine_example_runs_with_our_imports_and_with_zennits(tmp_path, monkeypatch):
    code = _readme_engine_example()
    assert "lrp_desktop_core." in code
    monkeypatch.chdir(tmp_path)
    relevances = {}
    for which in BOTH:
        source = code if which == "ours" else code.replace("lrp_desktop_core.", "zennit.")
        namespace: dict = {}
        torch.manual_seed(0)
        try:
            exec(compile(source, f"README ({which})", "exec"), namespace)
        except TypeError as error:
            # zennit 0.5.1 hands Pillow its palette as an array, which current Pillow refuses
            # (README: "images export with current Pillow"); everything before the export ran
            if which == "ours" or not _is_zennits_pillow_failure(error):
                raise
        else:
            assert (tmp_path / "heatmap.png").is_file()
            (tmp_path / "heatmap.png").unlink()
        relevances[which] = namespace["relevance"].detach()
    ours, theirs = relevances["ours"], relevances["zennit"]
    assert ours.shape == theirs.shape == (1, 3, 224, 224)
    scale = theirs.abs().max()
    torch.testing.assert_close(ours / scale, theirs / scale, rtol=1e-3, atol=1e-4)
