"""Faithfulness of heatmaps on a bundled demo: region perturbation per method and fill.

On ``--count`` held-out images of the synthetic shapes (the data set the demo's accuracy is
measured on, so none was seen in training), each method explains the true class; then
:func:`lrp_desktop_core.evaluate.region_perturbation` removes ``--region-size`` px regions in the
heatmap's order and tracks that class's logit. The table gives, averaged over the images, the
AOPC of removing the most relevant regions first (MoRF, higher is better), the least relevant
first (LeRF, lower is better), their difference (higher is better) and the same for a seeded
random heatmap (the baseline every method must beat), per fill of the removed regions.

Methods: the LRP presets for transformers (``vit_cp``, ``vit_attnlrp``) where the model has
attention, else the recommended preset; gradient times input; the plain gradient; attention
rollout where the model allows it.

Run: ``python bench/faithfulness.py [--model demo_vit] [--count 200] [--fills blur,zeros]``
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from lrp_desktop_core import shapes
from lrp_desktop_core.evaluate import FILLS, PerturbationResult, region_perturbation
from lrp_desktop_core.explain import Method, UnsupportedModelError, explain
from lrp_desktop_core.models import load_model
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rollout import check_rollout_model
from lrp_desktop_core.rulemap import RuleMap
from lrp_desktop_core.train_demo import HELD_OUT_SEED, to_tensor

ATTENTION_PRESETS = ("vit_cp", "vit_attnlrp")


def held_out_inputs(spec, count: int) -> tuple[torch.Tensor, np.ndarray]:
    """Return the first ``count`` held-out images, normalised for the model, and their labels."""
    batch = shapes.generate(count, seed=HELD_OUT_SEED)
    return to_tensor(batch.images, torch.tensor(spec.mean), torch.tensor(spec.std)), batch.labels


def heatmaps(model, spec, inputs: torch.Tensor, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Return the relevance of every compared method, keyed by its row name."""
    recommendation = recommend(model)
    presets = (
        ATTENTION_PRESETS
        if recommendation.preset in ATTENTION_PRESETS
        else (recommendation.preset,)
    )
    maps = {
        f"LRP {preset}": explain(
            model, inputs, Method("lrp", RuleMap.recommended(model, spec, preset)), labels
        ).relevance
        for preset in presets
    }
    gradient = explain(model, inputs, Method("gradient"), labels).relevance
    maps["gradient x input"] = gradient * inputs.numpy()
    maps["gradient"] = gradient
    try:
        check_rollout_model(model)
    except UnsupportedModelError:
        return maps
    maps["attention rollout"] = explain(model, inputs, Method("rollout"), labels).relevance
    return maps


def row(name: str, fill: str, morf: np.ndarray, lerf: np.ndarray) -> str:
    return (
        f"| {name} | {fill} | {morf.mean():.3f} | {lerf.mean():.3f} | {(morf - lerf).mean():.3f} |"
    )


def table(model_name: str, count: int, fills: list[str], region_size: int) -> str:
    """Return the Markdown table of the module documentation."""
    torch.manual_seed(0)
    loaded = load_model(model_name)
    model, spec = loaded.model, loaded.spec
    inputs, labels = held_out_inputs(spec, count)
    maps = heatmaps(model, spec, inputs, labels)
    lines = [
        f"{model_name}: {count} held-out images, {region_size} px regions\n",
        "| method | fill | MoRF AOPC | LeRF AOPC | MoRF - LeRF |",
        "|---|---|---:|---:|---:|",
    ]
    for fill in fills:
        result: PerturbationResult | None = None
        for name, relevance in maps.items():
            result = region_perturbation(
                model, inputs, relevance, labels, region_size=region_size, fill=fill
            )
            lines.append(row(name, fill, result.morf_aopc, result.lerf_aopc))
        # one seeded random heatmap for every method; its reverse order is random as well, so
        # its LeRF is its MoRF and the difference 0
        lines.append(row("random", fill, result.random_aopc, result.random_aopc))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo_vit", help="a bundled demo's registry name")
    parser.add_argument("--count", type=int, default=200, help="held-out images")
    parser.add_argument("--fills", default="blur,zeros", help=f"comma-separated, of {FILLS}")
    parser.add_argument("--region-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(table(args.model, args.count, args.fills.split(","), args.region_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
