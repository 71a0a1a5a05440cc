"""Attention rules, the attention and Vision Transformer canonizers and the ``vit_cp`` preset.

In float64, on small Vision Transformers built from torchvision's class:

* the attention rules match their closed forms (CP-LRP by hand, AttnLRP by autograd);
* the canonizers leave the forward pass exact and leave no trace once removed, for Vision
  Transformers and plain ``nn.MultiheadAttention`` (batch first or not, with masks);
* on the bias-free model the recommended preset conserves relevance, ``sum R = logit``, also on
  the real ViT-B/16 architecture;
* with Epsilon-type rules everywhere, LRP equals a hand-made modified gradient times input;
* the audit finds nothing on the canonized model and warns on the uncanonized one.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torchvision
from test_families import TINY, _assert_unchanged, _canonized, _snapshot
from torch import nn
from torch.nn import functional as F
from torchvision.models.vision_transformer import VisionTransformer

from lrp_desktop_core.attention import AttentionAttnLRP, AttentionConservative, AttentionCore
from lrp_desktop_core.audit import audit_rulemap
from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.composites import COMPOSITES, LayerMapComposite, layer_map_base
from lrp_desktop_core.coverage import rule_coverage
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RuleMap
from lrp_desktop_core.rules import Epsilon
from lrp_desktop_core.types import Linear

RULE_TOLERANCE = 1e-10
FORWARD_TOLERANCE = 1e-12
RELEVANCE_TOLERANCE = 1e-6
BOUND = 2.0
"""Inputs lie in [-BOUND, BOUND]; the ZBox bounds of the preset."""
SPEC = SimpleNamespace(
    input_bounds=lambda: (torch.tensor(-BOUND).double(), torch.tensor(BOUND).double())
)
"""What ``RuleMap.recommended`` needs of a model spec."""


def _small_vit(bias_free: bool, seed: int = 0) -> VisionTransformer:
    """Return a two-layer ViT in float64 with random parameters.

    Weights, biases, tokens and layer-norm affines are random (the head too, which torchvision
    zeroes); with ``bias_free`` every additive constant is 0.
    """
    torch.manual_seed(seed)
    model = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=5,
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name in ("class_token", "encoder.pos_embedding"):
                parameter.normal_(0.0, 0.0 if bias_free else 0.2)
            elif parameter.dim() == 1:  # layer-norm scales
                parameter.normal_(1.0, 0.2)
            else:
                parameter.normal_(0.0, 1.0 / math.sqrt(parameter[0].numel()))
    return model.double().eval()


def _images(count: int = 1, size: int = 32, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(count, 3, size, size, dtype=torch.float64, generator=generator)
    return (2 * uniform - 1) * BOUND


def _explain(model: nn.Module, composite, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Return the relevance of ``images`` for the top class and that class's logit."""
    with composite.context(model):
        inputs = images.clone().requires_grad_()
        output = model(inputs)
        target = int(output[0].argmax())
        seed = torch.zeros_like(output)
        seed[:, target] = output[:, target]
        (relevance,) = torch.autograd.grad(output, inputs, seed)
    return relevance.detach(), output[0, target].item()


# ---------------------------------------------------------------- the rules


def _core_call(rule, mask: torch.Tensor | None):
    """Run an attention core under ``rule``; return inputs, output, seed and the relevance."""
    generator = torch.Generator().manual_seed(2)
    q, k, v = (
        torch.randn(2, 2, 5, 3, dtype=torch.float64, generator=generator).requires_grad_()
        for _ in range(3)
    )
    core = AttentionCore(head_dim=3)
    handles = rule.register(core)
    try:
        output = core(q, k, v, mask=mask)
        seed = torch.randn(output.shape, dtype=torch.float64, generator=generator)
        relevance = torch.autograd.grad(output, (q, k, v), seed)
    finally:
        handles.remove()
    return (q.detach(), k.detach(), v.detach()), output.detach(), seed, relevance


def _masks() -> list[torch.Tensor | None]:
    hidden = torch.zeros(2, 1, 1, 5, dtype=torch.float64)
    hidden[0, ..., 1] = -math.inf
    return [None, hidden]


@pytest.mark.parametrize("mask", _masks(), ids=["no_mask", "key_mask"])
def test_conservative_rule_is_the_closed_form(mask):
    (q, k, v), output, seed, (r_q, r_k, r_v) = _core_call(AttentionConservative(TINY), mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(3) + (0 if mask is None else mask)
    attention = torch.softmax(scores, dim=-1)
    expected = v * (attention.transpose(-2, -1) @ (seed / output))
    assert (r_v - expected).abs().max() <= RULE_TOLERANCE * expected.abs().max()
    assert not r_q.any() and not r_k.any()
    assert r_v.sum().item() == pytest.approx(seed.sum().item(), rel=RULE_TOLERANCE)


@pytest.mark.parametrize("mask", _masks(), ids=["no_mask", "key_mask"])
def test_attnlrp_rule_is_the_closed_form(mask):
    (q, k, v), output, seed, relevance = _core_call(AttentionAttnLRP(TINY), mask)
    ratio = seed / output
    queries, keys = q.clone().requires_grad_(), k.clone().requires_grad_()
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(3) + (0 if mask is None else mask)
    attention = torch.softmax(scores, dim=-1)
    grad_q, grad_k = torch.autograd.grad((attention @ v * ratio).sum(), (queries, keys))
    values = v * (attention.detach().transpose(-2, -1) @ ratio) / 2
    for ours, expected in zip(relevance, (q * grad_q / 4, k * grad_k / 4, values)):
        assert (ours - expected).abs().max() <= RULE_TOLERANCE * expected.abs().max()


# ---------------------------------------------------------------- the canonizers


def test_vit_canonizer_is_exact_and_leaves_no_trace():
    model = _small_vit(bias_free=False)
    images = _images(count=2)
    before = _snapshot(model)
    with torch.no_grad():
        reference = model(images)
        with _canonized(model, "torchvision"):
            canonized = model(images)
            attention = model.encoder.layers[0].self_attention
            packed = attention.in_proj_weight
            assert attention.canonizer_k.weight.data_ptr() == packed[16:32].data_ptr()
    assert (canonized - reference).abs().max() <= FORWARD_TOLERANCE * reference.abs().max()
    _assert_unchanged(model, before)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_canonizer_is_exact_with_masks(batch_first, need_weights):
    torch.manual_seed(3)
    attention = nn.MultiheadAttention(8, 2, batch_first=batch_first).double().eval()
    query = torch.randn(3, 5, 8, dtype=torch.float64)  # batch first: (N, L, E)
    key = torch.randn(3, 4, 8, dtype=torch.float64)
    if not batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    padding = torch.zeros(3, 4, dtype=torch.bool)
    padding[0, 1] = True
    masks = {
        "key_padding_mask": padding,
        "attn_mask": torch.triu(torch.ones(5, 4, dtype=torch.bool), diagonal=1),
    }
    before = _snapshot(attention)
    with torch.no_grad():
        reference = attention(query, key, key, need_weights=need_weights, **masks)
        with _canonized(attention, "torchvision"):
            canonized = attention(query, key, key, need_weights=need_weights, **masks)
    for ours, theirs in zip(canonized, reference):
        if theirs is None:
            assert ours is None
            continue
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() <= FORWARD_TOLERANCE * theirs.abs().max()
    _assert_unchanged(attention, before)


def test_multihead_attention_canonizer_with_separate_projections_and_head_masks():
    torch.manual_seed(5)
    attention = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True).double().eval()
    inputs = [
        torch.randn(3, length, size, dtype=torch.float64)
        for length, size in ((5, 8), (4, 6), (4, 5))
    ]
    mask = torch.randn(3 * 2, 5, 4, dtype=torch.float64)  # one float mask per sample and head
    before = _snapshot(attention)
    with torch.no_grad():
        reference = attention(*inputs, attn_mask=mask, average_attn_weights=False)
        with _canonized(attention, "torchvision"):
            assert attention.canonizer_k.weight is attention.k_proj_weight
            canonized = attention(*inputs, attn_mask=mask, average_attn_weights=False)
    for ours, theirs in zip(canonized, reference):
        assert (ours - theirs).abs().max() <= FORWARD_TOLERANCE * theirs.abs().max()
    _assert_unchanged(attention, before)


def test_attention_with_extra_key_bias_is_left_alone_and_reported():
    model = nn.Sequential(nn.MultiheadAttention(4, 1, add_bias_kv=True))
    assert get_canonizers("torchvision")[0].apply(model) == []
    (reason,) = recommend(model).unsupported
    assert "add_bias_kv" in reason


# ---------------------------------------------------------------- the preset


def test_recommendation_for_vision_transformers():
    recommendation = recommend(_small_vit(bias_free=True))
    assert recommendation.supported, recommendation.unsupported
    assert (recommendation.family, recommendation.canonizer, recommendation.preset) == (
        "Vision Transformer",
        "torchvision",
        "vit_cp",
    )


def test_preset_gives_each_layer_its_rule():
    model = _small_vit(bias_free=True)
    composite = COMPOSITES["vit_cp"](
        low=-BOUND, high=BOUND, canonizers=get_canonizers("torchvision")
    )
    rules = {layer.name: layer.rule for layer in rule_coverage(model, composite)}
    block = "encoder.layers.encoder_layer_0"
    assert rules["conv_proj"] == "ZBox"
    assert rules[f"{block}.self_attention.canonizer_core"] == "AttentionConservative"
    assert rules[f"{block}.self_attention.canonizer_q"] == "Epsilon"
    assert rules[f"{block}.self_attention.out_proj"] == "Epsilon"
    assert rules[f"{block}.mlp.0"] == rules[f"{block}.mlp.3"] == "Gamma"
    assert rules[f"{block}.mlp.1"] == "Pass"
    assert rules[f"{block}.ln_1"] == "LayerNormEpsilon"
    assert rules["heads.head"] == "Epsilon"
    assert rules["canonizer_token"] == rules["encoder.canonizer_position"] == "Norm"


def test_bias_free_vit_conserves_relevance():
    model = _small_vit(bias_free=True)
    before = _snapshot(model)
    rulemap = RuleMap.recommended(model, SPEC, epsilon=TINY, stabilizer=TINY)
    relevance, logit = _explain(model, rulemap.to_composite(), _images())
    print(f"small ViT: sum R / logit - 1 = {relevance.sum().item() / logit - 1:.2e}")
    assert relevance.sum().item() == pytest.approx(logit, rel=RELEVANCE_TOLERANCE)
    _assert_unchanged(model, before)


def test_bias_free_vit_b_16_conserves_relevance():
    """The real ViT-B/16 architecture (12 layers, 12 heads, 224 pixels), in float64."""
    torch.manual_seed(4)
    model = torchvision.models.vit_b_16()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name in ("class_token", "encoder.pos_embedding"):
                parameter.zero_()
        model.heads.head.weight.normal_(0.0, 0.02)
    model = model.double().eval()
    composite = COMPOSITES["vit_cp"](
        low=-BOUND,
        high=BOUND,
        epsilon=TINY,
        stabilizer=TINY,
        canonizers=get_canonizers(recommend(model).canonizer),
    )
    relevance, logit = _explain(model, composite, _images(size=224))
    print(f"ViT-B/16: sum R / logit - 1 = {relevance.sum().item() / logit - 1:.2e}")
    assert relevance.sum().item() == pytest.approx(logit, rel=RELEVANCE_TOLERANCE)


def test_attnlrp_runs_on_the_vit_and_does_not_conserve():
    """The AttnLRP preset runs in a whole model.

    Its softmax absorbs relevance, so relevance is not conserved.
    """
    model = _small_vit(bias_free=True)
    composite = COMPOSITES["vit_attnlrp"](
        epsilon=TINY, stabilizer=TINY, canonizers=get_canonizers("torchvision")
    )
    rules = {layer.name: layer.rule for layer in rule_coverage(model, composite)}
    block = "encoder.layers.encoder_layer_0"
    assert rules[f"{block}.self_attention.canonizer_core"] == "AttentionAttnLRP"
    assert rules["conv_proj"] == rules[f"{block}.mlp.0"] == rules["heads.head"] == "Epsilon"
    relevance, logit = _explain(model, composite, _images())
    print(f"AttnLRP on the small ViT: sum R / logit = {relevance.sum().item() / logit:.3f}")
    assert torch.isfinite(relevance).all()
    assert relevance.sum().item() != pytest.approx(logit, rel=1e-3)


# ---------------------------------------------------------------- a hand-made reference


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """Return a layer norm whose standard deviation is held constant."""
    sigma = torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).detach()
    return (x - x.mean(dim=-1, keepdim=True)) / sigma * norm.weight + norm.bias


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU as ``x`` times its gate held constant: the Pass rule's modified gradient."""
    return x * (0.5 * (1 + torch.erf(x / math.sqrt(2)))).detach()


def _attention(module: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Self-attention with queries and keys held constant (CP-LRP's modified gradient)."""
    q, k, v = F.linear(x, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (module.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
    scores = q.detach() @ k.detach().transpose(-2, -1) / math.sqrt(module.head_dim)
    heads = torch.softmax(scores, dim=-1) @ v
    return module.out_proj(heads.transpose(1, 2).flatten(2))


def _reference_forward(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Return the ViT's forward pass whose gradient times input is epsilon-LRP with epsilon 0."""
    x = model.conv_proj(images).flatten(2).transpose(1, 2)
    x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + model.encoder.pos_embedding
    for block in model.encoder.layers:
        x = x + _attention(block.self_attention, _layer_norm(block.ln_1, x))
        hidden = _gelu(block.mlp[0](_layer_norm(block.ln_2, x)))
        x = x + block.mlp[3](hidden)
    return model.heads(_layer_norm(model.encoder.ln, x)[:, 0])


def epsilon_composite(attention_rule=None) -> LayerMapComposite:
    """Return epsilon-type rules with tiny stabilizers everywhere.

    Attention cores get CP-LRP unless ``attention_rule`` is given.
    """
    attention = [] if attention_rule is None else [(AttentionCore, attention_rule)]
    layer_map = [*attention, *layer_map_base(TINY), (Linear, Epsilon(epsilon=TINY))]
    return LayerMapComposite(layer_map, canonizers=get_canonizers("torchvision"))


def assert_lrp_is_modified_gradient_times_input(
    model: nn.Module, composite, images: torch.Tensor, reference_forward
) -> None:
    """Check that LRP with ``composite`` equals gradient times input of a reference.

    ``reference_forward`` is a hand-made forward whose gradient is the rules' one; it must
    compute the model's own output.
    """
    with torch.no_grad():
        expected = model(images)
        error = (reference_forward(images) - expected).abs().max()
        assert error <= FORWARD_TOLERANCE * expected.abs().max()
    inputs = images.clone().requires_grad_()
    output = reference_forward(inputs)
    target = int(output[0].argmax())
    (gradient,) = torch.autograd.grad(output[0, target], inputs)
    reference = (inputs * gradient).detach()
    relevance, _ = _explain(model, composite, images)
    difference = (relevance - reference).abs().max().item() / reference.abs().max().item()
    print(f"LRP vs modified gradient x input: {difference:.2e} of max|R|")
    assert difference <= RELEVANCE_TOLERANCE


def test_epsilon_rules_equal_the_modified_gradient_times_input():
    model = _small_vit(bias_free=False)
    assert_lrp_is_modified_gradient_times_input(
        model, epsilon_composite(), _images(), lambda images: _reference_forward(model, images)
    )


# ---------------------------------------------------------------- the audit


def test_audit_finds_nothing_on_the_canonized_vit_and_warns_without_canonizer():
    model = _small_vit(bias_free=False)
    rulemap = RuleMap.recommended(model, SPEC)
    report = audit_rulemap(model, rulemap, (1, 3, 32, 32))
    assert report.ok, report.warnings
    bare = RuleMap.recommended(model, SPEC, canonizer="none")
    warnings = audit_rulemap(model, bare, (1, 3, 32, 32)).warnings
    assert any("multi_head_attention_forward" in warning for warning in warnings)
    assert any("`encoder.layers.encoder_layer_0`" in warning for warning in warnings)
