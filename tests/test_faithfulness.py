"""On the bundled ViT demo the recommended LRP preset is more faithful than the baselines.

Faithfulness is measured as ``bench/faithfulness.py`` does, on fewer held-out images: removing the
regions that a heatmap ranks most relevant first (MoRF) must hurt the explained logit more than
removing the least relevant first (LeRF), and the gap of ``vit_cp`` must be larger than that of
gradient x input, the plain gradient, attention rollout and a random heatmap.
"""

from __future__ import annotations

import pytest
import torch

from lrp_desktop_core import shapes
from lrp_desktop_core.evaluate import region_perturbation
from lrp_desktop_core.explain import Method, explain
from lrp_desktop_core.models import load_model
from lrp_desktop_core.rulemap import RuleMap
from lrp_desktop_core.train_demo import HELD_OUT_SEED, to_tensor

COUNT = 48


@pytest.fixture(scope="module")
def aopcs() -> dict[str, tuple[float, float]]:
    """Return (MoRF AOPC, LeRF AOPC) per method and of the random heatmap.

    Both are averaged over the images, removed regions blurred.
    """
    loaded = load_model("demo_vit")
    model, spec = loaded.model, loaded.spec
    batch = shapes.generate(COUNT, seed=HELD_OUT_SEED)
    inputs = to_tensor(batch.images, torch.tensor(spec.mean), torch.tensor(spec.std))
    labels = batch.labels
    lrp = Method("lrp", RuleMap.recommended(model, spec, "vit_cp"))
    gradient = explain(model, inputs, Method("gradient"), labels).relevance
    maps = {
        "vit_cp": explain(model, inputs, lrp, labels).relevance,
        "gradient x input": gradient * inputs.numpy(),
        "gradient": gradient,
        "rollout": explain(model, inputs, Method("rollout"), labels).relevance,
    }
    result = {}
    for name, relevance in maps.items():
        curves = region_perturbation(model, inputs, relevance, labels, fill="blur")
        result[name] = (float(curves.morf_aopc.mean()), float(curves.lerf_aopc.mean()))
    random = float(curves.random_aopc.mean())  # the same seeded random heatmap for every method
    result["random"] = (random, random)
    return result


@pytest.mark.parametrize("baseline", ["gradient x input", "gradient", "rollout"])
def test_vit_cp_separates_relevant_from_irrelevant_regions_better_than(aopcs, baseline):
    (morf, lerf), (baseline_morf, baseline_lerf) = aopcs["vit_cp"], aopcs[baseline]
    assert morf - lerf > baseline_morf - baseline_lerf, aopcs


def test_vit_cp_beats_a_random_heatmap_both_ways(aopcs):
    (morf, lerf), (random, _) = aopcs["vit_cp"], aopcs["random"]
    assert morf > random > lerf, aopcs
