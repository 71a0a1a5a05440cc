"""MaxViT canonizers and the ``vit_cp`` preset, on models built from torchvision's ``MaxVit``.

In float64, with random weights, biases, batch-norm statistics and norm affines:

* the attention rules match their closed forms on MaxViT's windowed heads, with the relative
  position bias as the mask and MaxViT's scale ``1 / sqrt(channels)``;
* the canonizers leave the forward pass exact and leave no trace once removed, on a small
  MaxViT and on one with maxvit_t's geometry (224 pixels, 7 x 7 partitions, four blocks);
* the pre-norm merge is exact for any kernel without padding and refuses padded or grouped
  convolutions, for which it would not be;
* on the bias-free model the recommended preset conserves relevance, ``sum R = logit``;
* with Epsilon-type rules everywhere (CP-LRP or AttnLRP on attention), LRP equals a hand-made
  modified gradient times input;
* the audit finds nothing on the canonized model and warns on the uncanonized one.

The real maxvit_t (31 M parameters) takes about a minute per explanation in float64 on two
cores, too long for this suite. Measured once, bias-free with random weights at 224 pixels: the
canonized forward is within 9e-16 of the original (relative), and ``vit_cp`` gives
``sum R / logit - 1 = -8e-16``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from test_families import TINY, _assert_unchanged, _canonized, _snapshot
from test_vit import (
    BOUND,
    SPEC,
    _explain,
    _images,
    _layer_norm,
    assert_lrp_is_modified_gradient_times_input,
    epsilon_composite,
)
from torch import nn
from torchvision.models.maxvit import (
    MaxVit,
    MBConv,
    PartitionAttentionLayer,
    RelativePositionalMultiHeadAttention,
)

from lrp_desktop_core.attention import AttentionAttnLRP, AttentionConservative, AttentionCore
from lrp_desktop_core.audit import audit_rulemap
from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.composites import COMPOSITES
from lrp_desktop_core.coverage import rule_coverage
from lrp_desktop_core.maxvit import MaxVitMergePreNorm
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RuleMap

RULE_TOLERANCE = 1e-10
FORWARD_TOLERANCE = 1e-12
RELEVANCE_TOLERANCE = 1e-6

SMALL = {
    "input_size": (32, 32),
    "stem_channels": 8,
    "partition_size": 2,
    "block_channels": [8, 16],
    "block_layers": [1, 2],  # the second block's second layer has no projection
    "head_dim": 4,
}
"""Two blocks on 32 pixels: 8 x 8, then 4 x 4 grids in 2 x 2 partitions; 2 and 4 heads."""
T_GEOMETRY = {
    "input_size": (224, 224),
    "stem_channels": 8,
    "partition_size": 7,
    "block_channels": [8, 8, 16, 16],
    "block_layers": [1, 1, 1, 1],
    "head_dim": 8,
}
"""maxvit_t's geometry (224 pixels, 7 x 7 partitions, grids 56 to 7) with few channels."""


def _maxvit(config: dict, bias_free: bool, seed: int = 0) -> MaxVit:
    """Return a MaxViT in float64 with random weights, biases, norm statistics and affines.

    With ``bias_free`` every bias and batch-norm mean is 0. The relative position bias stays: it
    is added to the scores, inside the attention matrix that CP-LRP holds constant, so it does
    not absorb relevance.
    """
    torch.manual_seed(seed)
    model = MaxVit(stochastic_depth_prob=0.0, num_classes=5, **config)
    spread = 0.0 if bias_free else 0.2
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, spread)
            elif name.endswith("relative_position_bias_table"):
                parameter.normal_(0.0, 0.5)
            elif parameter.dim() == 1:  # batch-norm and layer-norm scales
                parameter.normal_(1.0, 0.2)
            else:
                parameter.normal_(0.0, 1.0 / math.sqrt(parameter[0].numel()))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, spread)
                module.running_var.uniform_(0.5, 2.0)
    return model.double().eval()


def _vit_cp(model: nn.Module) -> RuleMap:
    return RuleMap.recommended(model, SPEC, epsilon=TINY, stabilizer=TINY)


# ---------------------------------------------------------------- the rules


def _core_call(rule):
    """Run a core on (batch, windows, heads, tokens, d) under ``rule`` with a relative bias."""
    generator = torch.Generator().manual_seed(2)
    q, k, v = (
        torch.randn(2, 3, 2, 4, 3, dtype=torch.float64, generator=generator).requires_grad_()
        for _ in range(3)
    )
    bias = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=generator)
    core = AttentionCore(head_dim=3, scale=6**-0.5)
    handles = rule.register(core)
    try:
        output = core(q, k, v, mask=bias)
        seed = torch.randn(output.shape, dtype=torch.float64, generator=generator)
        relevance = torch.autograd.grad(output, (q, k, v), seed)
    finally:
        handles.remove()
    return (q.detach(), k.detach(), v.detach()), bias, output.detach(), seed, relevance


def test_conservative_rule_with_relative_bias_is_the_closed_form():
    (q, k, v), bias, output, seed, (r_q, r_k, r_v) = _core_call(AttentionConservative(TINY))
    attention = torch.softmax(torch.einsum("bghid,bghjd->bghij", q, k) / math.sqrt(6) + bias, -1)
    expected = v * torch.einsum("bghij,bghid->bghjd", attention, seed / output)
    assert (r_v - expected).abs().max() <= RULE_TOLERANCE * expected.abs().max()
    assert not r_q.any() and not r_k.any()
    assert r_v.sum().item() == pytest.approx(seed.sum().item(), rel=RULE_TOLERANCE)


def test_attnlrp_rule_with_relative_bias_is_the_closed_form():
    (q, k, v), bias, output, seed, relevance = _core_call(AttentionAttnLRP(TINY))
    ratio = seed / output
    queries, keys = q.clone().requires_grad_(), k.clone().requires_grad_()
    scores = torch.einsum("bghid,bghjd->bghij", queries, keys) / math.sqrt(6) + bias
    attention = torch.softmax(scores, dim=-1)
    grad_q, grad_k = torch.autograd.grad((attention @ v * ratio).sum(), (queries, keys))
    values = v * torch.einsum("bghij,bghid->bghjd", attention.detach(), ratio) / 2
    for ours, expected in zip(relevance, (q * grad_q / 4, k * grad_k / 4, values)):
        assert (ours - expected).abs().max() <= RULE_TOLERANCE * expected.abs().max()


# ---------------------------------------------------------------- the canonizers


@pytest.mark.parametrize("config", [SMALL, T_GEOMETRY], ids=["small", "maxvit_t_geometry"])
def test_maxvit_canonizer_is_exact_and_leaves_no_trace(config):
    model = _maxvit(config, bias_free=False)
    images = _images(count=2, size=config["input_size"][0])
    before = _snapshot(model)
    with torch.no_grad():
        reference = model(images)
        with _canonized(model, "torchvision"):
            canonized = model(images)
            canonized_types = {type(module) for module in model.modules()}
            attention = next(
                m for m in model.modules() if isinstance(m, RelativePositionalMultiHeadAttention)
            )
            assert not list(attention.canonizer_core.parameters())
            assert attention.canonizer_core.scale == attention.scale_factor
        after = model(images)
    assert (canonized - reference).abs().max() <= FORWARD_TOLERANCE * reference.abs().max()
    assert nn.BatchNorm2d in canonized_types  # still there, passing its input through
    _assert_unchanged(model, before)
    assert torch.equal(after, reference)


def test_every_block_is_rewritten_and_every_batch_norm_merged():
    model = _maxvit(SMALL, bias_free=False)
    recommendation = recommend(model)
    assert recommendation.supported, recommendation.unsupported
    assert (recommendation.family, recommendation.canonizer, recommendation.preset) == (
        "MaxViT",
        "torchvision",
        "vit_cp",
    )
    assert recommendation.affine_batch_norms == ()
    counts = {
        kind: sum(isinstance(module, kind) for module in model.modules())
        for kind in (MBConv, PartitionAttentionLayer, RelativePositionalMultiHeadAttention)
    }
    reasons = " ".join(recommendation.reasons)
    assert f"{counts[MBConv]} x MaxViT MBConv" in reasons
    assert f"{counts[PartitionAttentionLayer]} x MaxViT partition attention" in reasons
    assert f"{counts[RelativePositionalMultiHeadAttention]} x MaxViT relative-position" in reasons


def _lively_batch_norm(channels: int) -> nn.BatchNorm2d:
    batch_norm = nn.BatchNorm2d(channels).double().eval()
    with torch.no_grad():
        for tensor in (batch_norm.weight, batch_norm.bias, batch_norm.running_mean):
            tensor.normal_(0.5, 0.5)
        batch_norm.running_var.uniform_(0.5, 2.0)
    return batch_norm


@pytest.mark.parametrize("bias", [True, False])
def test_pre_norm_merge_is_exact_for_any_unpadded_kernel(bias):
    torch.manual_seed(6)
    batch_norm = _lively_batch_norm(4)
    conv = nn.Conv2d(4, 3, 3, stride=2, padding="valid", bias=bias).double()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    before = _snapshot(nn.Sequential(batch_norm, conv))
    with torch.no_grad():
        reference = conv(batch_norm(x))
        merge = MaxVitMergePreNorm()
        merge.register([conv], batch_norm)
        merged = conv(batch_norm(x))
        merge.remove()
    assert (merged - reference).abs().max() <= FORWARD_TOLERANCE * reference.abs().max()
    _assert_unchanged(nn.Sequential(batch_norm, conv), before)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, padding="same"),
        nn.Conv2d(4, 4, 1, groups=2),
    ],
    ids=["padded", "same", "grouped"],
)
def test_pre_norm_merge_refuses_what_it_cannot_merge_exactly(conv):
    batch_norm = nn.BatchNorm2d(4).eval()
    with pytest.raises(ValueError, match="without padding and groups"):
        MaxVitMergePreNorm().register([conv], batch_norm)
    assert "forward" not in vars(batch_norm)


# ---------------------------------------------------------------- the preset


def test_preset_gives_each_layer_its_rule():
    model = _maxvit(SMALL, bias_free=True)
    composite = COMPOSITES["vit_cp"](
        low=-BOUND, high=BOUND, canonizers=get_canonizers("torchvision")
    )
    rules = {layer.name: layer.rule for layer in rule_coverage(model, composite)}
    mbconv = "blocks.0.layers.0.layers.MBconv"
    attention = "blocks.0.layers.0.layers.grid_attention"
    assert rules["stem.0.0"] == "ZBox"
    assert rules[f"{mbconv}.layers.pre_norm"] == rules[f"{mbconv}.layers.conv_a.1"] == "Pass"
    assert rules[f"{mbconv}.layers.conv_a.0"] == rules[f"{mbconv}.layers.conv_b.0"] == "Gamma"
    assert rules[f"{mbconv}.layers.squeeze_excitation.canonizer_product"] == "SignalTakesAll"
    assert rules[f"{mbconv}.layers.squeeze_excitation.scale_activation"] == "Pass"
    assert rules[f"{mbconv}.proj.0"] == rules[f"{mbconv}.canonizer_sum"] == "Norm"
    assert rules[f"{attention}.attn_layer.0"] == "LayerNormEpsilon"
    assert rules[f"{attention}.attn_layer.1.canonizer_core"] == "AttentionConservative"
    assert rules[f"{attention}.attn_layer.1.to_qkv"] == "Epsilon"
    assert rules[f"{attention}.attn_layer.1.merge"] == "Epsilon"
    assert rules[f"{attention}.canonizer_mlp_sum"] == "Norm"
    assert rules[f"{attention}.mlp_layer.1"] == rules[f"{attention}.mlp_layer.3"] == "Gamma"
    assert rules[f"{attention}.mlp_layer.2"] == rules["classifier.4"] == "Pass"  # GELU, Tanh
    assert rules["classifier.0"] == "Norm"
    assert rules["classifier.5"] == "Epsilon"


@pytest.mark.parametrize("config", [SMALL, T_GEOMETRY], ids=["small", "maxvit_t_geometry"])
def test_bias_free_maxvit_conserves_relevance(config):
    model = _maxvit(config, bias_free=True)
    before = _snapshot(model)
    relevance, logit = _explain(
        model, _vit_cp(model).to_composite(), _images(size=config["input_size"][0])
    )
    print(f"MaxViT: sum R / logit - 1 = {relevance.sum().item() / logit - 1:.2e}")
    assert relevance.sum().item() == pytest.approx(logit, rel=RELEVANCE_TOLERANCE)
    _assert_unchanged(model, before)


# ---------------------------------------------------------------- a hand-made reference

Treat = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def _gated(activation: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``activation(x)`` as ``x`` times its gate held constant: the Pass rule's gradient."""
    return x * (activation(x) / x).detach()


def _gradient_scaled(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x``, whose gradient is multiplied by ``factor``."""
    return x * factor + (x * (1 - factor)).detach()


def _held(q, k, v):
    """CP-LRP: queries and keys held constant."""
    return q.detach(), k.detach(), v


def _shared(q, k, v):
    """AttnLRP: a quarter of the gradient to queries and keys, half to the values."""
    return _gradient_scaled(q, 0.25), _gradient_scaled(k, 0.25), _gradient_scaled(v, 0.5)


def _attention(module: RelativePositionalMultiHeadAttention, x, treat: Treat) -> torch.Tensor:
    """Torchvision's relative-position attention, the gradients of q, k, v treated."""
    batch, windows, tokens, channels = x.shape
    heads = [
        part.reshape(batch, windows, tokens, module.n_heads, module.head_dim).permute(0, 1, 3, 2, 4)
        for part in module.to_qkv(x).chunk(3, dim=-1)
    ]
    q, k, v = treat(*heads)
    scores = torch.einsum("bghid,bghjd->bghij", q, k * module.scale_factor)
    weights = torch.softmax(scores + module.get_relative_positional_bias(), dim=-1)
    out = torch.einsum("bghij,bghjd->bghid", weights, v)
    return module.merge(out.permute(0, 1, 3, 2, 4).reshape(batch, windows, tokens, channels))


def _mbconv(block: MBConv, x: torch.Tensor) -> torch.Tensor:
    """Return the MBConv; the squeeze-and-excitation gate held constant (the signal takes all)."""
    layers = block.layers
    h = layers.conv_a[1](layers.conv_a[0](layers.pre_norm(x)))
    h = _gated(layers.conv_a[2], h)
    h = _gated(layers.conv_b[2], layers.conv_b[1](layers.conv_b[0](h)))
    h = h * layers.squeeze_excitation._scale(h).detach()
    return block.proj(x) + layers.conv_c(h)


def _partition_attention(layer: PartitionAttentionLayer, x, treat: Treat) -> torch.Tensor:
    height, width = (size // layer.p for size in layer.grid_size)
    x = layer.partition_swap(layer.partition_op(x, layer.p))
    x = x + _attention(layer.attn_layer[1], _layer_norm(layer.attn_layer[0], x), treat)
    mlp = layer.mlp_layer
    x = x + mlp[3](_gated(mlp[2], mlp[1](_layer_norm(mlp[0], x))))
    return layer.departition_op(layer.departition_swap(x), layer.p, height, width)


def _reference_forward(model: MaxVit, images: torch.Tensor, treat: Treat) -> torch.Tensor:
    """MaxViT's forward pass whose gradient times input is LRP with Epsilon-type rules."""
    stem = model.stem[0]
    x = model.stem[1](_gated(stem[2], stem[1](stem[0](images))))
    for block in model.blocks:
        for layer in block.layers:
            x = _mbconv(layer.layers.MBconv, x)
            x = _partition_attention(layer.layers.window_attention, x, treat)
            x = _partition_attention(layer.layers.grid_attention, x, treat)
    head = model.classifier
    x = _layer_norm(head[2], head[1](head[0](x)))
    return head[5](_gated(head[4], head[3](x)))


@pytest.mark.parametrize(
    ("attention_rule", "treat"),
    [(None, _held), (AttentionAttnLRP(epsilon=TINY), _shared)],
    ids=["cp_lrp", "attnlrp"],
)
def test_epsilon_rules_equal_the_modified_gradient_times_input(attention_rule, treat):
    model = _maxvit(SMALL, bias_free=False)
    assert_lrp_is_modified_gradient_times_input(
        model,
        epsilon_composite(attention_rule),
        _images(),
        lambda images: _reference_forward(model, images, treat),
    )


# ---------------------------------------------------------------- the audit


def test_audit_finds_nothing_on_the_canonized_maxvit_and_warns_without_canonizer():
    model = _maxvit(SMALL, bias_free=False)
    report = audit_rulemap(model, RuleMap.recommended(model, SPEC), (1, 3, 32, 32))
    assert report.ok, report.warnings
    bare = RuleMap.recommended(model, SPEC, canonizer="none")
    warnings = audit_rulemap(model, bare, (1, 3, 32, 32)).warnings
    attention = "`blocks.0.layers.0.layers.window_attention.attn_layer.1`"
    assert any("einsum" in warning and attention in warning for warning in warnings)
    assert any("`blocks.0.layers.0.layers.MBconv`" in warning for warning in warnings)
