"""Tests of the bundled demo: synthetic data, architecture rules, accuracy and sample masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lrp_desktop_core import shapes
from lrp_desktop_core.demo_net import DEMO_SAMPLES_DIR, DEMO_WEIGHTS, ResidualBlock, build_demo_net
from lrp_desktop_core.layer import Sum
from lrp_desktop_core.models import demo_mask, demo_samples, get_spec, load_model
from lrp_desktop_core.recommend import recommend

HELD_OUT_TEST_SEED = 20240917  # differs from the training, held-out and sample seeds (0, 1, 2)


@pytest.fixture(scope="module")
def demo():
    return load_model("demo")


def test_generation_is_deterministic_and_seed_dependent():
    first, again = shapes.render(5, 3), shapes.render(5, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first[:2], again[:2], strict=True))
    other = shapes.render(6, 3)
    assert not np.array_equal(first[0], other[0])
    batch = shapes.generate(10, seed=5)
    assert np.array_equal(batch.images[3], first[0]) and np.array_equal(batch.masks[3], first[1])
    assert batch.labels.tolist() == [i % len(shapes.SHAPES) for i in range(10)]


def test_masks_cover_the_shape_in_its_colour():
    for index in range(len(shapes.SHAPES)):
        image, mask, _ = shapes.render(11, index)
        assert 0.02 < mask.mean() < 0.6
        inside = image[mask].astype(float)
        colour = np.median(inside, axis=0)
        palette = np.array(list(shapes.COLOURS.values()), dtype=float)
        assert np.linalg.norm(palette - colour, axis=1).min() < 25
        # the shape's colour is spread evenly inside the mask, unlike the cluttered outside
        assert np.abs(inside - colour).mean() < np.abs(image[~mask] - colour).mean()


def test_architecture_suits_lrp():
    model = build_demo_net()
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters < 400_000
    assert (parameters + sum(b.numel() for b in model.buffers())) * 4 < 2_000_000
    sequentials = [m for m in model.modules() if isinstance(m, nn.Sequential)]
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            parent = next(s for s in sequentials if any(c is module for c in s.children()))
            children = list(parent.children())
            follower = children[[c is module for c in children].index(True) + 1]
            assert isinstance(follower, nn.BatchNorm2d)
        if isinstance(module, nn.ReLU):
            assert not module.inplace
    assert sum(isinstance(m, Sum) for m in model.modules()) == 1
    assert isinstance(model.head[0], nn.AdaptiveAvgPool2d)
    assert isinstance(model.head[-1], nn.Linear)


def test_residual_block_adds_shortcut_and_branch_through_sum():
    block = ResidualBlock(4).eval()
    x = torch.randn(2, 4, 8, 8)
    seen = []
    block.sum.register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    torch.testing.assert_close(block(x), torch.relu(x + block.branch(x)))
    assert seen == [(2, 4, 8, 8, 2)]


def test_demo_spec_and_weights_file(demo):
    spec = demo.spec
    assert spec.class_names == shapes.SHAPES
    assert spec.input_size == (64, 64)
    recommendation = recommend(demo.model)
    assert (recommendation.preset, recommendation.canonizer) == (
        "epsilon_gamma_box",
        "merge_batchnorm",
    )
    assert DEMO_WEIGHTS.stat().st_size < 2_000_000
    low, high = spec.input_bounds()
    black = spec.preprocess(Image.new("RGB", (64, 64)))
    torch.testing.assert_close(black, low[0].expand_as(black))
    assert (high > low).all()
    assert get_spec("demo") is get_spec("demo")


def test_demo_reaches_95_percent_on_fresh_held_out_images(demo):
    batch = shapes.generate(300, seed=HELD_OUT_TEST_SEED)
    inputs = torch.stack([demo.spec.preprocess(Image.fromarray(image)) for image in batch.images])
    with torch.no_grad():
        predictions = torch.cat([demo.model(chunk).argmax(1) for chunk in inputs.split(100)])
    accuracy = (predictions.numpy() == batch.labels).mean()
    assert accuracy >= 0.95


def test_samples_are_the_recorded_images_with_their_masks():
    record = json.loads((DEMO_SAMPLES_DIR / "samples.json").read_text(encoding="utf-8"))
    samples = demo_samples()
    assert len(samples) >= 8 and sorted(record) == sorted(p.name for p in samples)
    assert {entry["label"] for entry in record.values()} == set(shapes.SHAPES)
    for path in samples:
        entry = record[path.name]
        image, mask, label = shapes.render(entry["seed"], entry["index"])
        assert path.stem.startswith(shapes.SHAPES[label]) and entry["label"] == shapes.SHAPES[label]
        with Image.open(path) as stored:
            assert np.array_equal(np.asarray(stored.convert("RGB")), image)
        assert np.array_equal(demo_mask(path), mask)
