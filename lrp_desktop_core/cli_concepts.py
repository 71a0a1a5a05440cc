"""The concept options of ``lrp-explain``: ``--layer``, ``--concepts`` and ``--index-concepts``.

``--layer NAME --concepts K|all`` writes, per image, ``<stem>_concepts.npz`` with the channels of
the layer sorted by their relevance there (``channels``), that relevance (``layer_relevance``) and
the conditional input heatmaps (``relevance``, ``(K, C, H, W)``), and lists the top channels and
their shares in the image's JSON record.  ``--index-concepts FOLDER --layer NAME`` finds every
channel's reference images in a folder (see :mod:`.relmax`) and stores them for the desktop app.
The options themselves are defined, free of torch, in :mod:`.cli_args`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .concepts import LayerNotFoundError, check_layer, concept_heatmaps
from .images import ImageLoadError
from .relmax import index_references

RECORDED_CHANNELS = 10
"""Channels listed in a JSON record (the .npz file holds all that were computed)."""


def check(args: argparse.Namespace, model: torch.nn.Module, rulemap: Any) -> str | None:
    """Return what is wrong with the concept options, or None; ``rulemap`` is None off LRP."""
    if args.layer is None:
        return "--index-concepts needs --layer" if args.index_concepts else None
    if rulemap is None:
        return "--layer applies to --method lrp only"
    if args.index_concepts is not None and not args.index_concepts.is_dir():
        return f"--index-concepts {args.index_concepts} is not a folder"
    try:
        check_layer(model, rulemap, args.layer)
    except LayerNotFoundError as error:
        return f"--layer: {error}"
    return None


def run_index(args: argparse.Namespace, loaded: Any, rulemap: Any, paths: list[Path]) -> int:
    """Build (or find) the reference-image store of ``--layer`` over ``paths``, with progress.

    Returns the exit code: 0 when stored, 1 when no image could be read or the store written.
    """
    start = time.perf_counter()

    def show(share: float) -> None:
        if not args.quiet:
            print(f"\rindexing {args.layer}: {share:4.0%}", end="", file=sys.stderr, flush=True)

    try:
        index = index_references(
            loaded.model,
            loaded.spec,
            rulemap,
            args.layer,
            paths,
            store=args.concept_store,
            axis=args.channel_axis,
            batch_size=args.batch_size,
            progress=show,
        )
    except (ImageLoadError, OSError) as error:
        print(f"\nlrp-explain: error: indexing failed: {error}", file=sys.stderr)
        return 1
    if not args.quiet and index.computed:
        print(file=sys.stderr)
    print(
        f"lrp-explain: reference images of {index.channels} channels of {args.layer} from "
        f"{len(index.paths) - len(index.skipped)} images ({index.computed} explained now, "
        f"{len(index.skipped)} unreadable) in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0


def write_concepts(
    args: argparse.Namespace,
    model: torch.nn.Module,
    rulemap: Any,
    tensor: torch.Tensor,
    target: int,
    stem: str,
) -> dict[str, Any]:
    """Compute and write ``<stem>_concepts.npz`` for one image; return the JSON record's part.

    The image's plain heatmap comes from the explanation already written, so the pass that finds
    the relevance at the layer stops there instead of going on to the input again.
    """
    concepts = concept_heatmaps(
        model,
        tensor[None],
        rulemap,
        args.layer,
        args.concepts,
        target,
        axis=args.channel_axis,
        heatmap=False,
        batch_size=args.batch_size,
    )
    np.savez_compressed(
        Path(args.out) / f"{stem}_concepts.npz",
        channels=concepts.channels,
        layer_relevance=concepts.layer_relevance,
        relevance=concepts.relevance,
    )
    shares = concepts.shares()
    return {
        "layer": concepts.layer,
        "channels_computed": len(concepts.channels),
        "layer_relevance_sum": float(concepts.overview.channels[0].sum()),
        "top_channels": [
            {"channel": int(channel), "relevance": float(value), "share": float(share)}
            for channel, value, share in list(
                zip(concepts.channels, concepts.layer_relevance, shares)
            )[:RECORDED_CHANNELS]
        ],
    }
