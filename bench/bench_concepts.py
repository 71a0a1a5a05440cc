"""Speed of concept heatmaps (conditional relevance) and of indexing reference images.

For the demo and resnet18 (random weights) it prints, per layer: one plain LRP pass, conditional
heatmaps per second computed two ways (the engine's: one forward of ``--batch`` copies of the image,
then one backward pass per batch that starts at the layer; and one forward of the image with a
backward pass of the whole graph per channel, reusing it with ``retain_graph``), the time for 64
conditional heatmaps, and the completeness error (the heatmaps of all channels against the plain
heatmap, relative to its largest value; for layers of at most 128 channels).  Then the time to
index the demo samples (RelMax) into a fresh store, and to read the index back.

Usage::

    python bench/bench_concepts.py                    # demo, and resnet18 at 112 x 112
    python bench/bench_concepts.py --size 224 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
import torchvision
from torch import nn

from lrp_desktop_core.concepts import _tapped, concept_heatmaps, plain_pass
from lrp_desktop_core.explain import Method, explain
from lrp_desktop_core.models import demo_samples, get_spec, load_model
from lrp_desktop_core.relmax import index_references
from lrp_desktop_core.rulemap import RuleMap

COMPLETENESS_CHANNELS = 128
"""Layers with at most this many channels get the completeness check (all their heatmaps)."""


def timed(function: Callable[[], object], repeats: int) -> float:
    """Return the median wall time of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def graph_reuse(
    model: nn.Module, image: torch.Tensor, rulemap: RuleMap, layer: str, channels: int
) -> torch.Tensor:
    """The other way: one forward pass, one backward pass of the whole graph per channel."""
    plain = plain_pass(model, image, rulemap, layer, None)
    target = int(plain.targets[0])
    heatmaps = []
    with _tapped(model, rulemap, layer) as outputs:
        leaf = image.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(leaf)
            start = torch.zeros_like(logits)
            start[0, target] = logits[0, target].detach()
            shape = (1, -1, *[1] * (outputs[0].dim() - 2))
            keep = torch.zeros(outputs[0].shape[1], dtype=image.dtype).view(shape)
            for channel in range(channels):
                keep.zero_()
                keep[0, channel] = 1
                masked = [o.register_hook(lambda g: g * keep) for o in outputs]
                (heatmap,) = torch.autograd.grad(logits, leaf, start, retain_graph=True)
                for handle in masked:
                    handle.remove()
                heatmaps.append(heatmap)
    return torch.cat(heatmaps)


def bench_layer(
    model: nn.Module, rulemap: RuleMap, layer: str, size: int, batch: int, repeats: int
) -> None:
    image = torch.randn(1, 3, size, size)
    channels = len(plain_pass(model, image, rulemap, layer, None).layer_calls[0][0])
    count = min(64, channels)
    method = Method("lrp", rulemap)
    plain = timed(lambda: explain(model, image, method), repeats)
    ours = timed(
        lambda: concept_heatmaps(model, image, rulemap, layer, count, batch_size=batch), repeats
    )
    reuse = timed(lambda: graph_reuse(model, image, rulemap, layer, count), repeats)
    completeness = "-"
    if channels <= COMPLETENESS_CHANNELS:
        every = concept_heatmaps(model, image, rulemap, layer, "all", batch_size=batch)
        reference = every.overview.relevance[0].astype(np.float64)
        error = np.abs(every.relevance.astype(np.float64).sum(0) - reference).max()
        completeness = f"{error / np.abs(reference).max():.1e}"
    print(
        f"  {layer:28s} {channels:4d} ch | plain LRP {plain * 1e3:7.1f} ms | "
        f"{count} heatmaps {ours:6.2f} s ({count / ours:6.1f}/s, "
        f"{ours / plain:5.1f} plain passes) | graph reuse {reuse:6.2f} s "
        f"({count / reuse:6.1f}/s) | completeness {completeness} (float32)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112, help="resnet18 input side")
    parser.add_argument("--batch", type=int, default=16, help="heatmaps per backward pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")

    demo = load_model("demo")
    demo_rules = RuleMap.recommended(demo.model, demo.spec)
    print("demo (64 x 64):")
    for layer in ("features.stage2.conv", "features.residual.sum", "features.stage3.conv"):
        bench_layer(demo.model, demo_rules, layer, 64, args.batch, args.repeats)

    resnet = torchvision.models.resnet18().eval()
    resnet_rules = RuleMap.recommended(resnet, get_spec("resnet18"))
    print(f"resnet18, random weights ({args.size} x {args.size}):")
    for layer in ("layer1.1.canonizer_sum", "layer3.0.conv2", "layer4.1.canonizer_sum"):
        bench_layer(resnet, resnet_rules, layer, args.size, args.batch, args.repeats)

    samples = demo_samples()
    with tempfile.TemporaryDirectory() as store:

        def index() -> object:
            return index_references(
                demo.model,
                demo.spec,
                demo_rules,
                "features.stage3.conv",
                samples,
                store=store,
                batch_size=args.batch,
            )

        start = time.perf_counter()
        built = index()
        first = time.perf_counter() - start
        start = time.perf_counter()
        index()
        again = time.perf_counter() - start
    print(
        f"indexing {len(samples)} demo samples at features.stage3.conv "
        f"({built.channels} channels, top 8 by relevance and activation): {first:.2f} s; "
        f"read back from the store: {again * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
