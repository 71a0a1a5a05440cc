"""The Swin Transformer (V1) canonizer, its attention under the LRP rules, and what is left alone.

In float64, on small Swin Transformers built from torchvision's class and on the real swin_t:

* the canonized forward pass equals torchvision's, with shifted windows and padded maps, and the
  canonizer leaves no trace once removed;
* the attention rules on a Swin attention core (relative position bias plus shift mask) match
  their closed forms;
* with Epsilon-type rules everywhere, LRP equals a hand-made modified gradient times input, both
  with CP-LRP and with AttnLRP on the attention;
* on the bias-free model the recommended preset conserves relevance, ``sum R = logit``; the
  relative position bias stays: it is a constant inside the attention weights;
* the audit finds nothing on the canonized model and warns on the uncanonized one; Swin V2 is
  left alone and still reported unsupported.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torchvision
from test_families import TINY, _assert_unchanged, _canonized, _snapshot
from test_vit import (
    SPEC,
    _explain,
    _gelu,
    _images,
    _layer_norm,
    assert_lrp_is_modified_gradient_times_input,
    epsilon_composite,
)
from torch import nn
from torch.nn import functional as F
from torchvision.models.swin_transformer import (
    PatchMerging,
    ShiftedWindowAttention,
    ShiftedWindowAttentionV2,
    SwinTransformer,
    SwinTransformerBlockV2,
)

from lrp_desktop_core.attention import AttentionAttnLRP, AttentionConservative
from lrp_desktop_core.audit import audit_rulemap
from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.coverage import rule_coverage
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RuleMap

FORWARD_TOLERANCE = 1e-12
RULE_TOLERANCE = 1e-10
RELEVANCE_TOLERANCE = 1e-6
SIZES = [(28, 28), (28, 12)]
"""Input sizes of the small model: 7 x 7 and 4 x 4 maps padded to windows of 3 and shifted along
both axes; 7 x 3 and 4 x 2 maps shifted along the rows only."""


def _small_swin(bias_free: bool, seed: int = 0) -> SwinTransformer:
    """Return a two-stage Swin Transformer in float64 with random parameters.

    Weights, biases, relative position bias tables and layer-norm affines are random; with
    ``bias_free`` every bias is 0 (the tables stay).
    """
    torch.manual_seed(seed)
    model = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=12,  # heads of 6 and 12 channels: scales 1 / sqrt(6) and 1 / sqrt(12)
        depths=[2, 2],
        num_heads=[2, 2],
        window_size=[3, 3],
        num_classes=5,
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.0 if bias_free else 0.2)
            elif name.endswith("relative_position_bias_table"):
                parameter.normal_(0.0, 0.5)
            elif parameter.dim() == 1:  # layer-norm scales
                parameter.normal_(1.0, 0.2)
            else:
                parameter.normal_(0.0, 1.0 / math.sqrt(parameter[0].numel()))
    return model.double().eval()


def _swin_t(bias_free: bool) -> SwinTransformer:
    """Return the real swin_t in float64, its biases random or (with ``bias_free``) zero."""
    torch.manual_seed(4)
    model = torchvision.models.swin_t()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.0 if bias_free else 0.2)
    return model.double().eval()


def _inputs(size: tuple[int, int], count: int = 2) -> torch.Tensor:
    """Images of ``size`` (height, width) in the bounds of :data:`SPEC`."""
    return _images(count=count, size=max(size))[..., : size[0], : size[1]]


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


# ---------------------------------------------------------------- the canonizer


@pytest.mark.parametrize("size", SIZES, ids=["square", "rows_shifted_only"])
def test_canonizer_is_exact_and_leaves_no_trace(size):
    model = _small_swin(bias_free=False)
    images = _inputs(size)
    before = _snapshot(model)
    with torch.no_grad():
        reference = model(images)
        with _canonized(model, "torchvision"):
            attention = model.features[1][1].attn
            assert set(attention._modules) == {"qkv", "proj", "canonizer_core"}
            parameters = [(name, id(p)) for name, p in model.named_parameters()]
            assert parameters == before["parameters"]  # none added, none copied
            canonized = model(images)
        after = model(images)
    assert _relative_error(canonized, reference) <= FORWARD_TOLERANCE
    assert torch.equal(after, reference)
    _assert_unchanged(model, before)


def test_canonizer_is_exact_on_swin_t():
    """The real swin_t is explained exactly at 64 pixels.

    Its 16 x 16 and 8 x 8 maps are padded to windows of 7 and shifted, its 4 x 4 and 2 x 2 maps
    fit one padded window without a shift.
    """
    model = _swin_t(bias_free=False)
    images = _inputs((64, 64), count=1)
    with torch.no_grad():
        reference = model(images)
        with _canonized(model, "torchvision"):
            canonized = model(images)
    error = _relative_error(canonized, reference)
    print(f"swin_t forward: {error:.1e} relative")
    assert error <= FORWARD_TOLERANCE


def test_attention_dropout_in_training_is_refused():
    attention = ShiftedWindowAttention(6, [3, 3], [1, 1], num_heads=2, attention_dropout=0.1)
    with _canonized(attention, "torchvision"), pytest.raises(ValueError, match="eval"):
        attention(torch.randn(1, 6, 6, 6))


def test_swin_v2_is_left_alone_and_reported():
    with torch.device("meta"):
        model = torchvision.models.swin_v2_t()
    applied = [i for canonizer in get_canonizers("torchvision") for i in canonizer.apply(model)]
    for instance in reversed(applied):
        instance.remove()
    v2_blocks = (ShiftedWindowAttentionV2, SwinTransformerBlockV2)
    assert not any(isinstance(getattr(i, "module", None), v2_blocks) for i in applied)
    recommendation = recommend(model)
    assert not recommendation.supported
    assert (recommendation.family, recommendation.canonizer, recommendation.preset) == (
        "Swin Transformer",
        "none",
        "epsilon_gamma_box",
    )
    (reason,) = recommendation.unsupported
    assert "Swin Transformer V2" in reason and "attention" in reason


def test_recommendation_for_swin():
    recommendation = recommend(_small_swin(bias_free=True))
    assert recommendation.supported, recommendation.unsupported
    assert (recommendation.family, recommendation.canonizer, recommendation.preset) == (
        "Swin Transformer",
        "torchvision",
        "vit_cp",
    )


def test_preset_gives_each_layer_its_rule():
    model = _small_swin(bias_free=True)
    rules = {
        layer.name: layer.rule
        for layer in rule_coverage(model, RuleMap.recommended(model, SPEC).to_composite())
    }
    block = "features.1.1"
    assert rules["features.0.0"] == "ZBox"
    assert rules[f"{block}.attn.canonizer_core"] == "AttentionConservative"
    assert rules[f"{block}.attn.qkv"] == rules[f"{block}.attn.proj"] == "Epsilon"
    assert rules[f"{block}.mlp.0"] == rules[f"{block}.mlp.3"] == "Gamma"
    assert (
        rules[f"{block}.canonizer_attention_sum"] == rules[f"{block}.canonizer_mlp_sum"] == "Norm"
    )
    assert rules[f"{block}.norm1"] == rules["features.2.norm"] == "LayerNormEpsilon"
    assert rules["features.2.reduction"] == rules["head"] == "Epsilon"


# ---------------------------------------------------------------- the rules on a Swin core


def _swin_core_inputs() -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Return a canonized shifted window attention's core, its call and the position bias.

    The call is the ``(q, k, v, mask)`` of one run on a 5 x 4 map (padded to 6 x 6, shifted by 1).
    """
    torch.manual_seed(6)
    attention = ShiftedWindowAttention(6, [3, 3], [1, 1], num_heads=2).double().eval()
    nn.init.normal_(attention.relative_position_bias_table, std=0.5)
    calls = []
    with torch.no_grad(), _canonized(attention, "torchvision"):
        core = attention.canonizer_core
        handle = core.register_forward_hook(
            lambda module, args, kwargs, output: calls.append((*args, kwargs["mask"])),
            with_kwargs=True,
        )
        attention(torch.randn(2, 5, 4, 6, dtype=torch.float64))
        handle.remove()
        bias = attention.get_relative_position_bias()
    return core, calls[0], bias


def _attention_weights(q, k, mask) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask, dim=-1)


@pytest.mark.parametrize("rule", [AttentionConservative, AttentionAttnLRP])
def test_rules_on_a_swin_core_are_the_closed_forms(rule):
    core, (q, k, v, mask), bias = _swin_core_inputs()
    assert mask.shape == (2 * 4, 2, 9, 9)  # (images x windows, heads, tokens, tokens)
    assert torch.equal(mask[0], bias[0])  # the first window holds no shifted tokens
    assert torch.equal(mask[3][mask[3] > -50], bias[0][mask[3] > -50])
    regions = 4**2 + 2**2 + 2**2 + 1**2  # pairs within the last window's regions of 4, 2, 2, 1
    assert (mask[3] < -50).sum() == 2 * (9**2 - regions)  # per head
    inputs = [tensor.clone().requires_grad_() for tensor in (q, k, v)]
    handles = rule(TINY).register(core)
    try:
        output = core(*inputs, mask=mask)
        generator = torch.Generator().manual_seed(7)
        seed = torch.randn(output.shape, dtype=torch.float64, generator=generator)
        relevance = torch.autograd.grad(output, inputs, seed)
    finally:
        handles.remove()
    ratio = seed / output.detach()
    queries, keys = q.clone().requires_grad_(), k.clone().requires_grad_()
    weights = _attention_weights(queries, keys, mask)
    values = v * (weights.detach().transpose(-2, -1) @ ratio)
    if rule is AttentionConservative:
        expected = (torch.zeros_like(q), torch.zeros_like(k), values)
        assert relevance[2].sum().item() == pytest.approx(seed.sum().item(), rel=RULE_TOLERANCE)
    else:
        grad_q, grad_k = torch.autograd.grad((weights @ v * ratio).sum(), (queries, keys))
        expected = (q * grad_q / 4, k * grad_k / 4, values / 2)
    for ours, theirs in zip(relevance, expected):
        assert (ours - theirs).abs().max() <= RULE_TOLERANCE * values.abs().max()


# ---------------------------------------------------------------- a hand-made reference


def _scaled_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in the forward pass, ``factor`` times the gradient in the backward pass."""
    return factor * x + (1 - factor) * x.detach()


def _cp_core(q, k, v, mask) -> torch.Tensor:
    """Attention with queries and keys held constant: CP-LRP's modified gradient."""
    return _attention_weights(q.detach(), k.detach(), mask) @ v


def _attnlrp_core(q, k, v, mask) -> torch.Tensor:
    """Attention whose gradient reaches queries and keys by a quarter, values by a half."""
    q, k, v = (_scaled_gradient(t, f) for t, f in ((q, 0.25), (k, 0.25), (v, 0.5)))
    return _attention_weights(q, k, mask) @ v


Core = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _windows(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B, windows, tokens, C)."""
    x = x.unflatten(1, (-1, window[0])).unflatten(3, (-1, window[1]))  # B, h, wh, w, ww, C
    return x.transpose(2, 3).flatten(3, 4).flatten(1, 2)


def _window_attention(module: ShiftedWindowAttention, x: torch.Tensor, core: Core):
    """Swin's shifted window attention, written out, with ``core`` as the attention."""
    height, width = x.shape[1:3]
    window, heads = module.window_size, module.num_heads
    x = F.pad(x, (0, 0, 0, -width % window[1], 0, -height % window[0]))
    size = x.shape[1:3]
    shift = [s if w < n else 0 for s, w, n in zip(module.shift_size, window, size)]
    x = torch.roll(x, (-shift[0], -shift[1]), (1, 2))
    # tokens brought round from the far side by the shift must not see the others, nor vice versa
    rows, columns = (torch.arange(n) >= n - s for n, s in zip(size, shift))
    regions = _windows((2 * rows[:, None] + columns)[None, :, :, None], window)[0, ..., 0]
    apart = regions[:, None, :] != regions[:, :, None]  # (windows, tokens, tokens)
    tokens = window[0] * window[1]
    table = module.relative_position_bias_table[module.relative_position_index]
    bias = table.view(tokens, tokens, heads).permute(2, 0, 1)
    mask = bias + torch.where(apart, -100.0, 0.0)[:, None]  # (windows, heads, tokens, tokens)
    qkv = module.qkv(_windows(x, window)).unflatten(-1, (3, heads, -1))
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (B, windows, heads, tokens, d)
    out = module.proj(core(q, k, v, mask).transpose(2, 3).flatten(3))
    rows_of_windows = size[0] // window[0]
    out = out.unflatten(2, window).unflatten(1, (rows_of_windows, -1)).transpose(2, 3)
    out = torch.roll(out.flatten(1, 2).flatten(2, 3), shift, (1, 2))
    return out[:, :height, :width]


def _patch_merging(module: PatchMerging, x: torch.Tensor) -> torch.Tensor:
    x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
    quarters = [x[:, i::2, j::2] for j in (0, 1) for i in (0, 1)]
    return module.reduction(_layer_norm(module.norm, torch.cat(quarters, dim=-1)))


def _reference_forward(model: SwinTransformer, images: torch.Tensor, core: Core) -> torch.Tensor:
    """Return the Swin forward pass whose gradient times input is epsilon-LRP with epsilon 0."""
    embedding, _, norm = model.features[0]
    x = _layer_norm(norm, embedding(images).permute(0, 2, 3, 1))
    for stage in model.features[1:]:
        if isinstance(stage, PatchMerging):
            x = _patch_merging(stage, x)
            continue
        for block in stage:
            x = x + _window_attention(block.attn, _layer_norm(block.norm1, x), core)
            hidden = _gelu(block.mlp[0](_layer_norm(block.norm2, x)))
            x = x + block.mlp[3](hidden)
    return model.head(_layer_norm(model.norm, x).mean(dim=(1, 2)))


@pytest.mark.parametrize(
    ("attention_rule", "core"),
    [(None, _cp_core), (AttentionAttnLRP(epsilon=TINY), _attnlrp_core)],
    ids=["cp", "attnlrp"],
)
@pytest.mark.parametrize("size", SIZES, ids=["square", "rows_shifted_only"])
def test_epsilon_rules_equal_the_modified_gradient_times_input(attention_rule, core, size):
    model = _small_swin(bias_free=False)
    assert_lrp_is_modified_gradient_times_input(
        model,
        epsilon_composite(attention_rule),
        _inputs(size, count=1),
        lambda images: _reference_forward(model, images, core),
    )


# ---------------------------------------------------------------- conservation


@pytest.mark.parametrize("size", SIZES, ids=["square", "rows_shifted_only"])
def test_bias_free_swin_conserves_relevance(size):
    model = _small_swin(bias_free=True)
    before = _snapshot(model)
    rulemap = RuleMap.recommended(model, SPEC, epsilon=TINY, stabilizer=TINY)
    assert rulemap.preset == "vit_cp"
    relevance, logit = _explain(model, rulemap.to_composite(), _inputs(size, count=1))
    print(f"small Swin: sum R / logit - 1 = {relevance.sum().item() / logit - 1:.2e}")
    assert relevance.sum().item() == pytest.approx(logit, rel=RELEVANCE_TOLERANCE)
    _assert_unchanged(model, before)


def test_bias_free_swin_t_conserves_relevance():
    """The real swin_t architecture at 64 pixels, in float64."""
    model = _swin_t(bias_free=True)
    rulemap = RuleMap.recommended(model, SPEC, epsilon=TINY, stabilizer=TINY)
    relevance, logit = _explain(model, rulemap.to_composite(), _inputs((64, 64), count=1))
    print(f"swin_t: sum R / logit - 1 = {relevance.sum().item() / logit - 1:.2e}")
    assert relevance.sum().item() == pytest.approx(logit, rel=RELEVANCE_TOLERANCE)


# ---------------------------------------------------------------- the audit


def test_audit_finds_nothing_on_the_canonized_swin_and_warns_without_canonizer():
    model = _small_swin(bias_free=False)
    shape = (1, 3, *SIZES[0])
    report = audit_rulemap(model, RuleMap.recommended(model, SPEC), shape)
    assert report.ok, report.warnings
    bare = RuleMap.recommended(model, SPEC, canonizer="none")
    warnings = audit_rulemap(model, bare, shape).warnings
    print("\n".join(warnings))
    assert any("`features.1.0.attn`" in warning for warning in warnings)
