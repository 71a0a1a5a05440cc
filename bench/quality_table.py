"""Measure heatmap quality on the demo samples: every preset composite and the baselines.

For each method it reports, averaged over the bundled demo samples: the region-perturbation AOPC
(MoRF, higher is better; LeRF, lower is better) beside the random-heatmap baseline, the relevance
mass and rank accuracy against the object masks, the relevance conservation (LRP only) and the
time per batch.  The explained class is the true class named by each sample's file name.

Run: ``python bench/quality_table.py [--fill blur] [--region-size 8] [--device cpu]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lrp_desktop_core.composites import COMPOSITES
from lrp_desktop_core.evaluate import (
    DEFAULT_FILL,
    FILLS,
    localisation_scores,
    object_mask,
    region_perturbation,
)
from lrp_desktop_core.explain import Method, explain, relevance_conservation
from lrp_desktop_core.images import load_image
from lrp_desktop_core.models import demo_samples, load_model
from lrp_desktop_core.rulemap import RuleMap

BASELINES = (
    Method("gradient"),
    Method("smoothgrad", params={"n_iter": 20, "noise_level": 0.1}),
    Method("integrated_gradients", params={"n_iter": 20}),
    Method("occlusion", params={"window": 8, "stride": 8}),
)


def quality_rows(device: str, fill: str, region_size: int) -> list[list[str]]:
    """Return one table row per method (see the module documentation)."""
    loaded = load_model()
    model = loaded.model.to(device)
    paths = demo_samples()
    images = [load_image(path, loaded.spec) for path in paths]
    inputs = torch.stack([image.tensor for image in images])
    masks = np.stack([object_mask(path, loaded.spec) for path in paths])
    names = list(loaded.spec.class_names)
    targets = [names.index(path.stem.rsplit("_", 1)[0]) for path in paths]
    methods = [
        Method("lrp", RuleMap.recommended(model, loaded.spec, preset)) for preset in COMPOSITES
    ] + list(BASELINES)
    rows = []
    for method in methods:
        start = time.perf_counter()
        explanation = explain(model, inputs, method, targets)
        seconds = time.perf_counter() - start
        curves = region_perturbation(
            model, inputs, explanation.relevance, targets, region_size=region_size, fill=fill
        )
        local = localisation_scores(explanation.relevance, masks)
        conservation = (
            f"{np.median(relevance_conservation(explanation)):.3f}" if method.kind == "lrp" else "-"
        )
        rows.append(
            [
                method.label(),
                f"{curves.morf_aopc.mean():.3f}",
                f"{curves.lerf_aopc.mean():.3f}",
                f"{curves.random_aopc.mean():.3f}",
                f"{np.nanmean(local.mass_accuracy):.3f}",
                f"{np.nanmean(local.rank_accuracy):.3f}",
                conservation,
                f"{seconds:.2f}",
            ]
        )
    return rows


def main() -> None:
    """Print the quality table as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fill", choices=FILLS, default=DEFAULT_FILL)
    parser.add_argument("--region-size", type=int, default=8)
    args = parser.parse_args()
    header = [
        "method",
        "MoRF AOPC",
        "LeRF AOPC",
        "random AOPC",
        "mass acc.",
        "rank acc.",
        "R sum / logit (median)",
        "seconds",
    ]
    rows = quality_rows(args.device, args.fill, args.region_size)
    count = len(demo_samples())
    print(f"{count} demo samples, {args.region_size} px regions, fill {args.fill}, {args.device}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
