"""Speed of concept heatmaps (conditional relevance) and of indexing reference images.

First the completeness error in float64 (the conditional heatmaps of all channels of a layer
against the plain heatmap, the largest difference relative to its largest value) on the demo, VGG16,
ResNet18, the demo ViT and Swin-T (random weights where not bundled), one layer each: the tests ask
for at most 1e-6.  Then for the demo, the demo ViT and resnet18 it prints, per layer: one plain LRP
pass, conditional
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
from lrp_desktop_core.explain import Method, explain, model_dtype
from lrp_desktop_core.models import LoadedModel, demo_samples, get_spec, load_model
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
    """Compute the other way: one forward pass, one backward pass of the whole graph per channel."""
    plain = plain_pass(model, image, rulemap, layer, None)
    target = int(plain.targets[0])
    heatmaps = []
    with _tapped(model, rulemap, layer, plain.axis) as tap:
        outputs = tap.outputs
        leaf = image.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(leaf)
            start = torch.zeros_like(logits)
            start[0, target] = logits[0, target].detach()
            shape = [1] * outputs[0].dim()
            shape[plain.axis] = -1
            keep = torch.zeros(outputs[0].shape[plain.axis], dtype=image.dtype).view(shape)
            for channel in range(channels):
                keep.zero_()
                keep.view(-1)[channel] = 1
                masked = [o.register_hook(lambda g: g * keep) for o in outputs]
                (heatmap,) = torch.autograd.grad(logits, leaf, start, retain_graph=True)
                for handle in masked:
                    handle.remove()
                heatmaps.append(heatmap)
    return torch.cat(heatmaps)


def completeness_error(model: nn.Module, rulemap: RuleMap, layer: str, size: int) -> float:
    """Return how far the heatmaps of all channels of ``layer`` are from the plain heatmap."""
    image = torch.randn(1, 3, size, size, dtype=model_dtype(model))
    every = concept_heatmaps(model, image, rulemap, layer, "all", batch_size=64)
    plain = every.overview.relevance[0]  # in the model's type (explain() returns float32)
    return float(np.abs(every.relevance.sum(axis=0) - plain).max() / np.abs(plain).max())


def completeness(demo: LoadedModel, vit: LoadedModel) -> None:
    """Print the completeness error in float64 on one layer of each family."""
    torch.manual_seed(0)
    cases = [
        ("demo", demo.model, demo.spec, "features.stage3.conv", 64),
        ("vgg16", torchvision.models.vgg16(), get_spec("vgg16"), "features.9", 64),
        ("resnet18", torchvision.models.resnet18(), get_spec("resnet18"), "layer2.1", 64),
        ("demo_vit", vit.model, vit.spec, "encoder.layers.encoder_layer_1", 64),
        ("swin_t", torchvision.models.swin_t(), get_spec("swin_t"), "features.3.1", 64),
    ]
    print("completeness in float64 (max |sum of all channels' heatmaps - plain| / max |plain|):")
    for name, model, spec, layer, size in cases:
        model = model.double().eval()
        rulemap = RuleMap.recommended(model, spec)
        error = completeness_error(model, rulemap, layer, size)
        channels = plain_pass(
            model, torch.randn(1, 3, size, size, dtype=torch.float64), rulemap, layer, None
        ).layer_relevance.shape[1]
        print(f"  {name:9s} {layer:32s} {channels:4d} channels  {error:.1e}")
        model.float()


def bench_layer(
    model: nn.Module, rulemap: RuleMap, layer: str, size: int, batch: int, repeats: int
) -> None:
    image = torch.randn(1, 3, size, size)
    channels = plain_pass(model, image, rulemap, layer, None).layer_relevance.shape[1]
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

    demo, vit = load_model("demo"), load_model("demo_vit")
    completeness(demo, vit)
    demo_rules = RuleMap.recommended(demo.model, demo.spec)
    print("demo (64 x 64):")
    for layer in ("features.stage2.conv", "features.residual.sum", "features.stage3.conv"):
        bench_layer(demo.model, demo_rules, layer, 64, args.batch, args.repeats)
    vit_rules = RuleMap.recommended(vit.model, vit.spec)
    print("demo ViT (64 x 64):")
    for layer in ("encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"):
        bench_layer(vit.model, vit_rules, layer, 64, args.batch, args.repeats)

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
