"""Attention rollout (Abnar and Zuidema 2020) in the engine, the command line and the app.

In float64, on small Vision Transformers built from torchvision's class:

* the map equals a hand computation from the attention weights that ``nn.MultiheadAttention``
  itself returns, and the rolled-out matrix is row-stochastic;
* one layer of uniform attention gives a uniform map; a sequence-first attention gives the same
  map as the batch-first one it copies;
* the model is left exactly as it was, also when its forward pass fails;
* models without a Vision Transformer (a CNN, Swin) are refused before any computation;
* ``explain``, ``lrp-explain --method rollout`` and the app compute it, and refuse it on a CNN.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from PySide6.QtCore import Qt
from test_app_audit import viewer_on
from test_app_errors import new_error
from test_app_support import wait_for_heatmap
from test_families import _assert_unchanged, _snapshot
from test_vit import _images, _small_vit
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock

from lrp_desktop_core.cli import main
from lrp_desktop_core.explain import (
    Method,
    UnsupportedModelError,
    explain,
    relevance_conservation,
)
from lrp_desktop_core.names import METHODS
from lrp_desktop_core.rollout import (
    attention_matrices,
    attention_rollout,
    check_rollout_model,
    rollout,
)

pytest_plugins = ["test_app_support"]

TOLERANCE = 1e-10
PATCH = 8
GRID = 4
"""The patch size and grid side of ``_small_vit`` (32 x 32 images)."""


def _weights_by_hand(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Return each block's attention weights (N, heads, L, L).

    They are asked of ``nn.MultiheadAttention`` itself (``need_weights=True,
    average_attn_weights=False``) on the block's normalised input.
    """
    blocks = list(model.encoder.layers)
    inputs = []
    handles = [
        block.ln_1.register_forward_hook(lambda module, args, output: inputs.append(output))
        for block in blocks
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        return [
            block.self_attention(x, x, x, need_weights=True, average_attn_weights=False)[1]
            for block, x in zip(blocks, inputs, strict=True)
        ]


def _rollout_by_hand(weights: list[torch.Tensor]) -> np.ndarray:
    """Return the paper's recursion in numpy: ``R = norm(0.5 mean_h(A) + 0.5 I) R`` per layer."""
    length = weights[0].shape[-1]
    result = np.eye(length)
    for weight in weights:
        mixed = 0.5 * weight.numpy().mean(axis=1) + 0.5 * np.eye(length)
        result = mixed / mixed.sum(axis=-1, keepdims=True) @ result
    return result


def _pixels(matrix: np.ndarray) -> np.ndarray:
    """Return the class token's row over the patches, each value on its PATCH x PATCH pixels."""
    grid = matrix[:, 0, 1:].reshape(-1, GRID, GRID)
    return grid.repeat(PATCH, axis=1).repeat(PATCH, axis=2)


def test_rollout_is_the_product_of_the_mixed_head_averaged_attentions():
    model, images = _small_vit(bias_free=False), _images(2)
    weights = _weights_by_hand(model, images)
    logits, attentions = attention_matrices(model, images)
    assert len(attentions) == 2
    for ours, theirs in zip(attentions, weights, strict=True):
        assert ours.shape == (2, 2, 1 + GRID * GRID, 1 + GRID * GRID)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(logits, model(images), rtol=0, atol=1e-12)
    expected = _rollout_by_hand(weights)
    np.testing.assert_allclose(rollout(attentions).numpy(), expected, rtol=0, atol=TOLERANCE)
    logits, heat = attention_rollout(model, images)
    assert heat.shape == (2, 32, 32)
    np.testing.assert_allclose(heat.numpy(), _pixels(expected), rtol=0, atol=TOLERANCE)


def test_rows_of_the_rolled_out_matrix_sum_to_one():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 2, 4, 7, 7, dtype=torch.float64, generator=generator)
    matrix = rollout(list(torch.softmax(scores, dim=-1)))
    assert matrix.shape == (2, 7, 7) and bool((matrix >= 0).all())
    torch.testing.assert_close(matrix.sum(dim=-1), torch.ones(2, 7, dtype=torch.float64))
    _, attentions = attention_matrices(_small_vit(bias_free=False), _images(1))
    rows = rollout(attentions).sum(dim=-1)
    torch.testing.assert_close(rows, torch.ones_like(rows), rtol=0, atol=TOLERANCE)


def test_one_layer_of_uniform_attention_gives_a_uniform_map():
    model = _small_vit(bias_free=False)
    model.encoder.layers = model.encoder.layers[:1]
    attention = model.encoder.layers[0].self_attention
    with torch.no_grad():  # queries and keys zero: every score equal, every weight 1 / L
        attention.in_proj_weight[: 2 * attention.embed_dim] = 0
        attention.in_proj_bias[: 2 * attention.embed_dim] = 0
    _, heat = attention_rollout(model, _images(2))
    tokens = 1 + GRID * GRID
    expected = torch.full_like(heat, 0.5 / tokens)
    torch.testing.assert_close(heat, expected, rtol=0, atol=TOLERANCE)


class _SequenceFirstBlock(EncoderBlock):
    """An encoder block whose attention takes (tokens, batch, features) inputs."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(input).transpose(0, 1)
        x = self.self_attention(x, x, x, need_weights=False)[0].transpose(0, 1) + input
        return x + self.mlp(self.ln_2(x))


def test_sequence_first_attention_gives_the_same_rollout():
    model, images = _small_vit(bias_free=False), _images(2)
    other = copy.deepcopy(model)
    for block in other.encoder.layers:
        original = block.self_attention
        block.self_attention = nn.MultiheadAttention(
            original.embed_dim, original.num_heads, batch_first=False, dtype=torch.float64
        )
        block.self_attention.load_state_dict(original.state_dict())
        block.__class__ = _SequenceFirstBlock
    torch.testing.assert_close(other(images), model(images), rtol=0, atol=1e-12)
    _, heat = attention_rollout(other, images)
    torch.testing.assert_close(heat, attention_rollout(model, images)[1], rtol=0, atol=TOLERANCE)


def _assert_no_hooks(model: nn.Module) -> None:
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._forward_hooks_with_kwargs and not module._backward_hooks


def test_the_model_is_left_as_it_was_also_when_the_forward_pass_fails():
    model, images = _small_vit(bias_free=False), _images(1)
    before, output = _snapshot(model), model(images)
    attention_rollout(model, images)
    _assert_unchanged(model, before)
    _assert_no_hooks(model)
    torch.testing.assert_close(model(images), output, rtol=0, atol=0)

    def fail(module, args):
        raise RuntimeError("the head fails")

    failing = model.heads.register_forward_pre_hook(fail)  # after every attention layer ran
    with pytest.raises(RuntimeError, match="the head fails"):
        attention_rollout(model, images)
    failing.remove()
    _assert_unchanged(model, before)
    _assert_no_hooks(model)
    torch.testing.assert_close(model(images), output, rtol=0, atol=0)


def _forward_counter(model: nn.Module) -> list[int]:
    calls: list[int] = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


@pytest.mark.parametrize(
    ("build", "what"),
    [
        (lambda: torchvision.models.resnet18(num_classes=3), "no attention"),
        (lambda: torchvision.models.swin_t(num_classes=3), "within windows"),
    ],
    ids=["cnn", "swin"],
)
def test_models_without_a_vision_transformer_are_refused_before_any_work(build, what):
    model = build().eval()
    calls = _forward_counter(model)
    for attempt in (
        lambda: check_rollout_model(model),
        lambda: explain(model, torch.rand(1, 3, 64, 64), Method("rollout")),
    ):
        with pytest.raises(UnsupportedModelError, match="Vision Transformer") as error:
            attempt()
        assert what in str(error.value) and "use LRP" in str(error.value)
    assert calls == []


def test_explain_gives_a_class_agnostic_map_without_a_conservation_figure():
    model, images = _small_vit(bias_free=False), _images(2)
    method = Method("rollout")
    first = explain(model, images, method, target=0)
    other = explain(model, images, method, target=3)
    assert first.relevance.shape == (2, 3, 32, 32) and first.relevance.dtype == np.float32
    assert (first.relevance >= 0).all()
    np.testing.assert_array_equal(first.relevance, other.relevance)
    assert first.target.tolist() == [0, 0] and other.target.tolist() == [3, 3]
    heat = attention_rollout(model, images)[1].numpy()
    np.testing.assert_allclose(first.relevance.sum(axis=1), heat, rtol=1e-6)
    assert np.isnan(relevance_conservation(first)).all()
    assert method.class_agnostic and not Method("gradient").class_agnostic
    assert method.label() == "Attention rollout" and method.to_dict()["kind"] == "rollout"
    with pytest.raises(ValueError, match="allowed: none"):
        Method("rollout", params={"discard_ratio": 0.9})


def _file_vit(tmp_path) -> str:
    """Return a small ViT for 224 x 224 images (a 7 x 7 patch grid) saved with ``torch.save``."""
    model = torchvision.models.VisionTransformer(
        image_size=224,
        patch_size=32,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=4,
    )
    path = tmp_path / "tiny_vit.pt"
    torch.save(model.eval(), path)
    return str(path)


def _picture(tmp_path) -> str:
    path = tmp_path / "picture.png"
    Image.new("RGB", (90, 70), (120, 30, 200)).save(path)
    return str(path)


def test_the_command_line_computes_rollout_and_refuses_it_on_a_cnn(tmp_path, capsys):
    image, out = _picture(tmp_path), tmp_path / "vit"
    argv = [image, "--model", _file_vit(tmp_path), "--trust", "--method", "rollout", "--quiet"]
    assert main([*argv, "--out", str(out), "--evaluate"]) == 0
    assert (out / "picture_overlay.png").is_file()
    relevance = np.load(out / "picture.npy")
    assert relevance.shape == (3, 224, 224) and (relevance >= 0).all() and relevance.sum() > 0
    record = json.loads((out / "picture.json").read_text())
    assert record["method"]["kind"] == "rollout" and record["rulemap"] is None
    assert set(record["evaluation"]) >= {"morf_aopc", "lerf_aopc", "random_aopc"}
    capsys.readouterr()
    assert main([image, "--method", "rollout", "--quiet", "--out", str(tmp_path / "cnn")]) == 2
    err = capsys.readouterr().err
    assert "Vision Transformer" in err and "use LRP" in err and "Traceback" not in err


def test_the_app_offers_rollout_and_computes_it_for_a_vision_transformer(qtbot, tmp_path):
    app = viewer_on(qtbot, tmp_path, _file_vit(tmp_path))
    try:
        box = app.window.method_panel.method_box
        position = box.findData("rollout")
        assert box.itemText(position) == METHODS.title("rollout")
        assert "class-agnostic" in box.itemData(position, Qt.ItemDataRole.ToolTipRole)
        wait_for_heatmap(qtbot, app)
        box.setCurrentIndex(position)
        assert app.session.method_kind == "rollout"
        relevance = wait_for_heatmap(qtbot, app)
        assert app.session.explanation.method.kind == "rollout"
        assert relevance.shape == (3, 224, 224) and (relevance >= 0).all()
        note = app.window.main_view.note.text()
        assert "class-agnostic" in note and "conserved" not in note
    finally:
        app.shutdown()


def test_the_app_shows_why_rollout_does_not_fit_a_cnn(qtbot, viewer):
    before = len(viewer.reporter.errors())
    viewer.session.set_method_kind("rollout")
    error = new_error(qtbot, viewer, before)
    assert "Vision Transformer" in error.text and "Method and device" in error.hint
    bar = viewer.window.message_bar
    assert not bar.isHidden() and bar.message is error
    assert viewer.session.status.state == "failed"
