"""Tests of the faithfulness (region perturbation) and localisation scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lrp_desktop_core.evaluate import (
    aopc,
    fill_values,
    localisation_scores,
    region_perturbation,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from lrp_desktop_core.explain import ExplainCancelled

BIAS = 0.5


def linear_model() -> nn.Module:
    """Return a linear classifier on 1 x 4 x 4 inputs: class 0 sums the pixels, class 1 negates."""
    linear = nn.Linear(16, 2).double()
    with torch.no_grad():
        linear.weight[0] = 1.0
        linear.weight[1] = -1.0
        linear.bias[:] = BIAS
    return nn.Sequential(nn.Flatten(), linear)


def quadrant_input() -> torch.Tensor:
    """Four 2 x 2 regions with constant values; their contributions to class 0 are 4, -2, 1, 3."""
    values = torch.tensor([[1.0, -0.5], [0.25, 0.75]], dtype=torch.float64)
    return values.repeat_interleave(2, 0).repeat_interleave(2, 1)[None, None]


def test_aopc_counts_step_zero():
    curves = np.array([[6.5, 2.5, -0.5, -1.5, 0.5]])
    np.testing.assert_allclose(aopc(curves), [(0 + 4 + 7 + 8 + 6) / 5])
    np.testing.assert_allclose(aopc(curves, steps=2), [(0 + 4 + 7) / 3])
    with pytest.raises(ValueError, match="steps"):
        aopc(curves, steps=5)


def test_linear_model_curves_match_hand_computation():
    x = quadrant_input()
    relevance = x * 1.0  # exact contributions of a linear model with unit weights
    result = region_perturbation(linear_model(), x, relevance, 0, region_size=2, fill="zeros")
    assert result.steps == 4
    np.testing.assert_allclose(result.morf, [[6.5, 2.5, -0.5, -1.5, 0.5]])
    np.testing.assert_allclose(result.lerf, [[6.5, 8.5, 7.5, 4.5, 0.5]])
    np.testing.assert_allclose(result.morf_aopc, [5.0])
    np.testing.assert_allclose(result.lerf_aopc, [1.0])
    # the random heatmap removes the same four regions in some order
    assert result.random[0, 0] == 6.5
    assert result.random[0, -1] == pytest.approx(BIAS)
    assert sorted(-np.diff(result.random[0])) == pytest.approx([-2.0, 1.0, 3.0, 4.0])
    assert result.summary()["morf_aopc"] == pytest.approx(5.0)


def test_random_baseline_is_seeded():
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    runs = [
        region_perturbation(linear_model(), x, x, 0, region_size=1, seed=seed).random
        for seed in (7, 7, 8)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_several_regions_per_step_and_targets_per_sample():
    x = torch.cat([quadrant_input(), -quadrant_input()])
    relevance = torch.cat([x[:1], -x[1:]])  # class 1 negates the input
    result = region_perturbation(
        linear_model(), x, relevance, [0, 1], region_size=2, regions_per_step=2, fill="zeros"
    )
    np.testing.assert_allclose(result.morf, [[6.5, -0.5, 0.5], [6.5, -0.5, 0.5]])


def test_mean_fill_replaces_regions_by_the_channel_mean():
    x = quadrant_input()
    result = region_perturbation(linear_model(), x, x, 0, region_size=2, fill="mean", steps=1)
    # the mean pixel is 6 / 16 = 0.375, so region 0 now contributes 4 * 0.375 instead of 4
    np.testing.assert_allclose(result.morf, [[6.5, 6.5 - 4 + 1.5]])


def test_borders_of_a_size_not_divisible_by_the_region_size():
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 3).double())
    heat = torch.randn(2, 5, 5)
    result = region_perturbation(model, x, heat, [0, 2], region_size=2, fill="zeros")
    assert result.morf.shape == (2, 10)  # 3 x 3 regions
    with torch.no_grad():
        empty = model(torch.zeros(1, 1, 5, 5, dtype=torch.float64))[0, [0, 2]].numpy()
    for curve in (result.morf, result.lerf, result.random):
        np.testing.assert_allclose(curve[:, -1], empty)


def test_one_forward_per_step_for_the_whole_batch():
    model = linear_model()
    batch_sizes = []
    model.register_forward_hook(lambda module, args, output: batch_sizes.append(len(output)))
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    region_perturbation(model, x, x, 0, region_size=2, steps=3)
    assert batch_sizes == [4, 12, 12, 12]
    batch_sizes.clear()
    region_perturbation(model, x, x, 0, region_size=2, steps=1, batch_size=5)
    assert batch_sizes == [4, 5, 5, 2]


def test_cancel_and_progress():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    reports = []
    region_perturbation(linear_model(), x, x, 0, region_size=1, steps=5, progress=reports.append)
    assert reports == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    polls = []

    def cancel_on_third_poll():
        polls.append(None)
        return len(polls) >= 3

    with pytest.raises(ExplainCancelled):
        region_perturbation(linear_model(), x, x, 0, region_size=1, cancel=cancel_on_third_poll)
    assert len(polls) == 3


def test_a_model_in_training_mode_is_left_unchanged():
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(16, 2)).train()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    x = torch.randn(2, 1, 4, 4)
    region_perturbation(model, x, x, 0, region_size=2, steps=2)
    assert model.training and model[0].training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("fill", ["uniform", "blur"])
def test_fills_stay_in_the_image_range(fill):
    images = torch.rand(2, 3, 12, 12) * 4 - 1
    filled = fill_values(images, fill, region_size=4, rng=np.random.default_rng(1))
    assert filled.shape == images.shape
    low = images.amin(dim=(2, 3), keepdim=True) - 1e-6
    high = images.amax(dim=(2, 3), keepdim=True) + 1e-6
    assert bool(((filled >= low) & (filled <= high)).all())
    assert not torch.equal(filled, images)


def test_blur_keeps_a_constant_image():
    images = torch.full((1, 2, 9, 7), 0.3)
    torch.testing.assert_close(fill_values(images, "blur"), images)


def test_bad_arguments_are_named():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="fill"):
        region_perturbation(linear_model(), x, x, 0, fill="noise")
    with pytest.raises(ValueError, match="relevance must have shape"):
        region_perturbation(linear_model(), x, torch.zeros(1, 3, 3), 0)
    with pytest.raises(ValueError, match="steps"):
        region_perturbation(linear_model(), x, x, 0, region_size=2, steps=5)


def test_localisation_scores_by_hand():
    relevance = np.array([[[3.0, -1.0], [1.0, 0.0]]])
    corner = np.array([[True, False], [False, False]])
    diagonal = np.array([[False, True], [True, False]])
    np.testing.assert_allclose(relevance_mass_accuracy(relevance, corner), [0.75])
    np.testing.assert_allclose(relevance_rank_accuracy(relevance, corner), [1.0])
    np.testing.assert_allclose(relevance_mass_accuracy(relevance, diagonal), [0.25])
    np.testing.assert_allclose(relevance_rank_accuracy(relevance, diagonal), [0.5])


def test_localisation_sums_channels_and_takes_masks_per_sample():
    relevance = torch.zeros(2, 3, 2, 2)
    relevance[0, :, 1, 1] = 1.0
    relevance[1, 0, 0, 0] = 2.0
    relevance[1, 1, 1, 1] = 1.0
    masks = np.zeros((2, 2, 2), dtype=bool)
    masks[:, 1, 1] = True
    scores = localisation_scores(relevance, masks)
    np.testing.assert_allclose(scores.mass_accuracy, [1.0, 1 / 3])
    np.testing.assert_allclose(scores.rank_accuracy, [1.0, 0.0])


def test_localisation_undefined_cases_give_nan():
    negative = -np.ones((1, 2, 2))
    mask = np.ones((2, 2), dtype=bool)
    assert np.isnan(relevance_mass_accuracy(negative, mask)[0])
    assert np.isnan(relevance_rank_accuracy(negative, np.zeros((2, 2), dtype=bool))[0])
    with pytest.raises(ValueError, match="mask shape"):
        relevance_mass_accuracy(negative, np.ones((3, 3), dtype=bool))


@pytest.fixture(scope="module")
def demo():
    """Return the bundled demo model with its samples, object masks and true classes."""
    from lrp_desktop_core.evaluate import object_mask
    from lrp_desktop_core.images import load_image
    from lrp_desktop_core.models import demo_samples, load_model

    loaded = load_model()
    paths = demo_samples()
    inputs = torch.stack([load_image(path, loaded.spec).tensor for path in paths])
    masks = np.stack([object_mask(path, loaded.spec) for path in paths])
    names = list(loaded.spec.class_names)
    targets = [names.index(path.stem.rsplit("_", 1)[0]) for path in paths]
    return loaded, inputs, masks, targets


def test_recommended_lrp_beats_random_and_gradient_on_the_demo(demo):
    from lrp_desktop_core.explain import Method, explain
    from lrp_desktop_core.rulemap import RuleMap

    loaded, inputs, masks, targets = demo
    rulemap = RuleMap.recommended(loaded.model, loaded.spec)
    assert rulemap.preset == "epsilon_gamma_box"
    lrp = explain(loaded.model, inputs, Method("lrp", rulemap), targets).relevance
    gradient = explain(loaded.model, inputs, Method("gradient"), targets).relevance
    random = np.random.default_rng(0).normal(size=lrp.shape)

    curves = region_perturbation(loaded.model, inputs, lrp, targets, region_size=8, steps=16)
    assert curves.morf_aopc.mean() > curves.random_aopc.mean()
    assert curves.morf_aopc.mean() > curves.lerf_aopc.mean()
    lrp_scores = localisation_scores(lrp, masks)
    random_scores = localisation_scores(random, masks)
    gradient_scores = localisation_scores(gradient, masks)
    assert lrp_scores.mass_accuracy.mean() > random_scores.mass_accuracy.mean()
    assert lrp_scores.rank_accuracy.mean() > random_scores.rank_accuracy.mean()
    assert lrp_scores.mass_accuracy.mean() > gradient_scores.mass_accuracy.mean()
