"""Tests of the bundled ViT demo: weights file, accuracy, LRP set-up, CLI, app, training seeds."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from test_app_support import wait_for_heatmap
from torch import nn

from lrp_desktop.model_dialog import ModelChoice, ModelDialog
from lrp_desktop_core import shapes
from lrp_desktop_core.audit import audit_rulemap
from lrp_desktop_core.cli import main as explain_main
from lrp_desktop_core.demo_vit import DemoViTConfig
from lrp_desktop_core.demos import DEMOS
from lrp_desktop_core.models import ModelLoadError, demo_samples, get_spec, list_models, load_model
from lrp_desktop_core.recommend import ATTENTION_PRESET, recommend
from lrp_desktop_core.rulemap import RuleMap
from lrp_desktop_core.rules import Pass
from lrp_desktop_core.train_demo import HELD_OUT_SEED, TRAIN_SEED, TRAINING, initial_model

pytest_plugins = ["test_app_support"]

HELD_OUT_TEST_SEED = 20240917  # differs from the training, held-out and sample seeds (0, 1, 2)
DEMO_VIT = DEMOS["demo_vit"]


@pytest.fixture(scope="module")
def vit():
    return load_model("demo_vit")


@pytest.fixture(scope="module")
def metadata() -> dict[str, str]:
    with safe_open(str(DEMO_VIT.weights), framework="pt") as handle:
        return handle.metadata()


def test_registry_lists_it_after_the_cnn_demo(vit):
    assert list_models()[:2] == ["demo", "demo_vit"]
    assert vit.spec.title == "Shapes ViT demo (bundled, works offline)"
    assert vit.spec.class_names == shapes.SHAPES and vit.spec.input_size == (64, 64)
    assert vit.weights_path == DEMO_VIT.weights and vit.weights_sha256


def test_weights_file_is_small_and_records_accuracy_seeds_and_architecture(vit, metadata):
    assert DEMO_VIT.weights.stat().st_size < 2_000_000
    assert metadata["architecture"] == "demo_vit"
    assert float(metadata["held_out_accuracy"]) >= 0.95
    assert int(metadata["train_seed"]) == TRAIN_SEED
    assert int(metadata["held_out_seed"]) == HELD_OUT_SEED
    assert int(metadata["torch_seed"]) == TRAINING["demo_vit"].torch_seed
    assert DemoViTConfig.from_metadata(metadata) == DemoViTConfig()
    assert vit.spec.mean == tuple(json.loads(metadata["mean"]))
    assert vit.spec.std == tuple(json.loads(metadata["std"]))


def test_a_missing_weights_file_says_how_to_recreate_it(tmp_path, monkeypatch):
    missing = dataclasses.replace(DEMO_VIT, weights=tmp_path / "demo_vit.safetensors")
    monkeypatch.setitem(DEMOS, "demo_vit", missing)
    get_spec.cache_clear()
    try:
        with pytest.raises(ModelLoadError, match="train_demo --model demo_vit"):
            load_model("demo_vit")
    finally:
        get_spec.cache_clear()


def test_reaches_95_percent_on_fresh_held_out_images(vit):
    batch = shapes.generate(200, seed=HELD_OUT_TEST_SEED)
    inputs = torch.stack([vit.spec.preprocess(Image.fromarray(image)) for image in batch.images])
    with torch.no_grad():
        predictions = torch.cat([vit.model(chunk).argmax(1) for chunk in inputs.split(100)])
    assert (predictions.numpy() == batch.labels).mean() >= 0.95


def test_recommendation_is_the_attention_preset_and_fully_supported(vit):
    recommendation = recommend(vit.model)
    assert recommendation.supported, recommendation.unsupported
    assert (recommendation.preset, recommendation.canonizer) == (ATTENTION_PRESET, "torchvision")


def test_every_rule_of_the_recommended_map_runs_and_the_audit_is_clean(vit):
    rulemap = RuleMap.recommended(vit.model, vit.spec)
    report = audit_rulemap(vit.model, rulemap, (1, 3, 64, 64))
    assert report.ok, report.warnings

    image = vit.spec.preprocess(Image.open(demo_samples()[0])).unsqueeze(0).requires_grad_()
    composite = rulemap.to_composite()
    calls: dict[int, int] = {}
    with composite.context(vit.model) as model:
        hooks = list(composite.hooks)
        for hook in hooks:
            hook.backward = counted(hook.backward, calls, id(hook))
        logits = model(image)
        logits[0, logits.argmax()].backward()
    assert len(hooks) > 20
    silent = [hook for hook in hooks if id(hook) not in calls]
    # a merged batch norm returns its input: its Pass rule leaves it unhooked (nothing to do)
    merged = [module for module in vit.model.modules() if isinstance(module, nn.BatchNorm2d)]
    assert all(isinstance(hook, Pass) for hook in silent) and len(silent) == len(merged) == 3
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def counted(backward, calls: dict[int, int], key: int):
    """Wrap a hook's ``backward`` so that ``calls[key]`` counts its calls."""

    def wrapper(*args, **kwargs):
        calls[key] = calls.get(key, 0) + 1
        return backward(*args, **kwargs)

    return wrapper


def test_the_command_line_explains_a_sample_with_it(tmp_path):
    sample, out = demo_samples()[0], tmp_path / "out"
    assert explain_main([str(sample), "--model", "demo_vit", "--out", str(out)]) == 0
    with Image.open(out / f"{sample.stem}_overlay.png") as overlay:
        assert overlay.size == (64, 64)
    record = json.loads((out / f"{sample.stem}.json").read_text())
    assert record["model"] == "demo_vit" and record["canonizer"] == "torchvision"
    assert record["rulemap"]["preset"] == ATTENTION_PRESET and record["warnings"] == []


def test_the_model_dialog_offers_it(qtbot, tmp_path):
    dialog = ModelDialog(tmp_path)
    qtbot.addWidget(dialog)
    assert dialog.choice() == ModelChoice("demo")
    dialog.demo_name.setCurrentIndex(dialog.demo_name.findData("demo_vit"))
    assert dialog.choice() == ModelChoice("demo_vit")
    assert "demo_vit" not in dialog.names  # not offered again as a torchvision classifier


def test_the_app_switches_to_it_and_shows_a_heatmap(qtbot, viewer, monkeypatch):
    def choose_vit(dialog: ModelDialog) -> ModelDialog.DialogCode:
        dialog.demo_name.setCurrentIndex(dialog.demo_name.findData("demo_vit"))
        dialog.done(ModelDialog.DialogCode.Accepted)  # as OK does: stops the support checks
        return ModelDialog.DialogCode.Accepted

    monkeypatch.setattr(ModelDialog, "exec", choose_vit)
    viewer.window.actions.choose_model.trigger()
    qtbot.waitUntil(lambda: viewer.session.model.spec.name == "demo_vit", timeout=60_000)
    relevance = wait_for_heatmap(qtbot, viewer)
    assert relevance.shape[-2:] == (64, 64) and relevance.any()
    assert viewer.session.rulemap.preset == ATTENTION_PRESET


def test_training_starts_from_seeded_weights():
    settings = TRAINING["demo_vit"]
    first, again = initial_model(DEMO_VIT, settings), initial_model(DEMO_VIT, settings)
    other = initial_model(DEMO_VIT, dataclasses.replace(settings, torch_seed=1))
    first_state, again_state, other_state = (m.state_dict() for m in (first, again, other))
    assert all(torch.equal(first_state[key], again_state[key]) for key in first_state)
    assert not all(torch.equal(first_state[key], other_state[key]) for key in first_state)
    assert sum(p.numel() for p in first.parameters()) * 4 < 2_000_000
