"""Reference images of a layer's channels by relevance maximisation (RelMax), stored on disk.

For a folder of images, every channel of a layer gets the ``top_n`` images in which it receives the
most relevance (Achtibat et al. 2023, "From attribution maps to human-understandable explanations
through Concept Relevance Propagation"), and, beside them, the images in which it is most active.
An image's score is the channel's largest relevance (or activation) at one position of the layer;
its region is where the relevance of that position lands in the input: the bounding box of the
conditional heatmap masked to that channel and position (see :mod:`.concepts`).

An index is stored per model (a hash of its parameters and buffers), layer, rule map fingerprint,
image list and ``top_n``; asking again reads it from disk.  Indexing has two phases, the scan of
all images in batches and then the regions of the references, one image at a time; both poll a
cancel callback between steps and store their progress after each (atomically), so an
interrupted run resumes where it stopped, in either phase.  The finished index is written last,
so a store holds either a finished index or a partial one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .canonizers import _tensor_state
from .concepts import _prepared, check_layer, conditional_relevance, plain_pass, token_grid
from .explain import raise_if_cancelled
from .images import ImageLoadError, load_image

if TYPE_CHECKING:
    from .models import ModelSpec
    from .rulemap import RuleMap

RANKINGS = ("relevance", "activation")
"""What reference images can be chosen by."""

REGION_SHARE = 0.05
"""A region holds the input pixels with at least this share of its heatmap's largest value."""

REGION_BATCH = 64
"""Conditional heatmaps per backward pass when finding regions (they need no forward pass each)."""

SCAN_SHARE = 0.5
"""The share of the progress the scan of all images reports; finding regions reports the rest."""

_FINISHED, _PARTIAL, _META = "references.npz", "partial.npz", "index.json"

_HASHES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()
"""Each model's last hash, with the state of the tensors it was computed from."""


@dataclass(frozen=True)
class Reference:
    """One reference image of a channel.

    Attributes
    ----------
    path : Path
        The image file.
    score : float
        The channel's largest relevance (or activation) at one position of the layer.
    box : tuple of int
        ``(top, left, bottom, right)`` of the region in the model's input pixels (bottom and right
        exclusive).
    """

    path: Path
    score: float
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class ReferenceIndex:
    """The reference images of every channel of one layer.

    Attributes
    ----------
    layer : str
        The layer's name.
    paths : tuple of Path
        The images indexed, sorted.
    images, scores, boxes : dict of str to np.ndarray
        Per ranking in :data:`RANKINGS`: the image numbers (into ``paths``; -1 where fewer images
        than ``top_n`` exist) ``(C, top_n)``, their scores ``(C, top_n)`` and regions
        ``(C, top_n, 4)``, best first.
    skipped : tuple of Path
        Images that could not be loaded.
    computed : int
        Images scanned by the call that returned this index (0 when it came from the store).
    """

    layer: str
    paths: tuple[Path, ...]
    images: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    skipped: tuple[Path, ...] = ()
    computed: int = 0

    @property
    def channels(self) -> int:
        """The layer's number of channels."""
        return len(self.images["relevance"])

    def references(self, channel: int, by: str = "relevance") -> list[Reference]:
        """Return the reference images of ``channel``, best first, ranked ``by`` a ranking."""
        if by not in RANKINGS:
            raise ValueError(f"rank by one of {', '.join(RANKINGS)}, not {by!r}")
        return [
            Reference(self.paths[image], float(score), tuple(int(v) for v in box))
            for image, score, box in zip(
                self.images[by][channel], self.scores[by][channel], self.boxes[by][channel]
            )
            if image >= 0
        ]


def default_store() -> Path:
    """Return the folder reference indexes are kept in by default (in the user's cache)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lrp-desktop" / "references"


def model_hash(model: nn.Module) -> str:
    """Return a SHA-256 of the model's class, parameter and buffer names, shapes and values.

    The hash is kept with the model while every parameter and buffer is the same tensor with the
    same storage and version, so asking again costs no pass over the weights: an in-place change
    (an optimiser step, ``load_state_dict``, an edit under ``torch.no_grad()``) raises a tensor's
    version, and a tensor put in place of another has another storage, so either gives a new hash.
    Writes through ``tensor.data``, which torch does not count, are not seen.
    """
    tensors = model.state_dict(keep_vars=True)
    state = tuple((name, *_tensor_state(value)) for name, value in tensors.items())
    cached = _HASHES.get(model)
    if cached is not None and cached[0] == state:
        return cached[1]
    digest = _digest(model)
    _HASHES[model] = (state, digest)
    return digest


def _digest(model: nn.Module) -> str:
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, value in model.state_dict().items():
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def index_folder(
    store: Path,
    model_key: str,
    layer: str,
    rulemap: RuleMap,
    paths: Sequence[Path],
    top_n: int,
    axis: int | None = None,
) -> Path:
    """Return the folder of the index for these settings inside ``store``."""
    identity: list = [model_key, layer, rulemap.fingerprint(), top_n]
    if axis is not None:  # a channel axis named by the caller, not the one found
        identity.append(["axis", axis])
    for path in sorted(Path(p).resolve() for p in paths):
        stat = path.stat() if path.exists() else None
        identity.append([str(path), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0])
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]
    return Path(store) / digest


def stored_references(folder: Path) -> ReferenceIndex | None:
    """Return the finished index stored in ``folder`` (see :func:`index_folder`), or None."""
    finished = Path(folder) / _FINISHED
    if not finished.is_file() or not (Path(folder) / _META).is_file():
        return None
    meta = json.loads((Path(folder) / _META).read_text(encoding="utf-8"))
    with np.load(finished) as arrays:
        return ReferenceIndex(
            layer=meta["layer"],
            paths=tuple(Path(p) for p in meta["paths"]),
            images={by: arrays[f"{by}_images"] for by in RANKINGS},
            scores={by: arrays[f"{by}_scores"] for by in RANKINGS},
            boxes={by: arrays[f"{by}_boxes"] for by in RANKINGS},
            skipped=tuple(Path(p) for p in meta["skipped"]),
        )


def index_references(
    model: nn.Module,
    spec: ModelSpec,
    rulemap: RuleMap,
    layer: str,
    paths: Sequence[Path],
    *,
    store: Path | None = None,
    model_key: str | None = None,
    top_n: int = 8,
    batch_size: int = 16,
    axis: int | None = None,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> ReferenceIndex:
    """Find every channel's reference images among ``paths``, or read them from the store.

    Parameters
    ----------
    model : nn.Module
        The classifier; returned unchanged, also when cancelled.
    spec : ModelSpec
        Its preprocessing.
    rulemap : RuleMap
        The rules; each image explains its top class.
    layer : str
        A module name of the canonized model (see :func:`~.concepts.layer_names`).
    paths : sequence of Path
        The images (e.g. :func:`~.cli.collect_images` of a folder, which leaves out masks).
    store : Path, optional
        Where indexes are kept; :func:`default_store` by default.
    model_key : str, optional
        Identifies the model's weights; :func:`model_hash` by default.
    top_n : int
        Reference images per channel and ranking.
    batch_size : int
        Images per forward pass; progress is stored after each batch.
    axis : int, optional
        The axis of the layer's output that holds its channels; found by
        :mod:`~.channel_axis` when omitted.
    cancel : callable, optional
        Polled between batches and between the images whose regions are found; when it returns
        True, :class:`~.explain.ExplainCancelled` is raised and the next call resumes from the
        last stored step.
    progress : callable, optional
        Called with the finished share (0 to 1): the scan reports up to :data:`SCAN_SHARE`.

    Raises
    ------
    LayerNotFoundError
        When the canonized model has no module of that name.
    """
    if top_n < 1 or batch_size < 1:
        raise ValueError("top_n and batch_size must be at least 1")
    ordered = sorted(Path(p) for p in paths)
    key = model_key or model_hash(model)
    folder = index_folder(store or default_store(), key, layer, rulemap, ordered, top_n, axis)
    stored = stored_references(folder)
    if stored is not None:
        return stored
    check_layer(model, rulemap, layer)  # a bad name fails before any image is loaded
    folder.mkdir(parents=True, exist_ok=True)
    state = _load_partial(folder)
    start = int(state.pop("done", 0))
    skipped = list(state.pop("skipped", []))
    for first in range(start, len(ordered), batch_size):
        raise_if_cancelled(cancel)
        group = ordered[first : first + batch_size]
        loaded, failed = _load_batch(group, spec)
        skipped += failed
        if loaded:
            numbers = np.array([first + group.index(path) for path, _ in loaded])
            batch = _prepared(model, torch.stack([tensor for _, tensor in loaded]))
            result = plain_pass(model, batch, rulemap, layer, None, axis=axis, to_input=False)
            state = _merged(state, result.layer_relevance, result.activation, numbers, top_n)
            state["layer_shape"] = np.array(result.activation.shape[1:])
        _save(folder / _PARTIAL, {**state, "done": first + len(group), "skipped": skipped})
        if progress is not None:
            progress(SCAN_SHARE * (first + len(group)) / len(ordered))
    if "relevance_images" not in state:
        raise ImageLoadError(f"none of the {len(ordered)} images could be loaded")
    state = _with_regions(
        _Setting(model, spec, rulemap, layer, axis),
        ordered,
        state,
        lambda kept: _save(folder / _PARTIAL, {**kept, "done": len(ordered), "skipped": skipped}),
        cancel,
        progress,
    )
    meta = {"layer": layer, "paths": [str(p) for p in ordered], "top_n": top_n}
    _write_atomically(folder / _META, json.dumps({**meta, "skipped": skipped}).encode())
    del state["regions_done"]
    _save(folder / _FINISHED, state)
    (folder / _PARTIAL).unlink(missing_ok=True)
    if progress is not None:
        progress(1.0)
    finished = stored_references(folder)
    assert finished is not None
    return replace(finished, computed=len(ordered) - start)


def _load_batch(
    group: Sequence[Path], spec: ModelSpec
) -> tuple[list[tuple[Path, torch.Tensor]], list[str]]:
    loaded, failed = [], []
    for path in group:
        try:
            loaded.append((path, load_image(path, spec).tensor))
        except ImageLoadError:
            failed.append(str(path))
    return loaded, failed


def _merged(
    state: dict[str, np.ndarray],
    relevance: torch.Tensor,
    activation: torch.Tensor,
    numbers: np.ndarray,
    top_n: int,
) -> dict[str, np.ndarray]:
    """Merge a batch's best position per channel into the running top ``top_n`` per ranking."""
    merged = {}
    for by, values in (("relevance", relevance), ("activation", activation)):
        flat = values.detach().double().reshape(*values.shape[:2], -1)  # (B, C, positions)
        best, where = flat.max(dim=2)
        scores = best.T.cpu().numpy()  # (C, B)
        positions = where.T.cpu().numpy()
        images = np.broadcast_to(numbers, scores.shape)
        if f"{by}_scores" in state:
            scores = np.concatenate([state[f"{by}_scores"], scores], axis=1)
            positions = np.concatenate([state[f"{by}_positions"], positions], axis=1)
            images = np.concatenate([state[f"{by}_images"], images], axis=1)
        missing = images < 0
        order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, images), -scores), axis=1)
        order = order[:, :top_n]
        kept_images = np.take_along_axis(images, order, axis=1)
        pad = top_n - kept_images.shape[1]
        merged[f"{by}_scores"] = _padded(np.take_along_axis(scores, order, axis=1), pad, -np.inf)
        merged[f"{by}_positions"] = _padded(np.take_along_axis(positions, order, axis=1), pad, 0)
        merged[f"{by}_images"] = _padded(kept_images, pad, -1)
    return merged


def _padded(values: np.ndarray, pad: int, fill: float) -> np.ndarray:
    return np.pad(values, ((0, 0), (0, pad)), constant_values=fill) if pad > 0 else values


@dataclass(frozen=True)
class _Setting:
    """What explains an image at the layer: the model, its preprocessing, rules, layer and axis."""

    model: nn.Module
    spec: ModelSpec
    rulemap: RuleMap
    layer: str
    axis: int | None


def _with_regions(
    setting: _Setting,
    ordered: Sequence[Path],
    state: dict,
    save: Callable[[dict], None],
    cancel: Callable[[], bool] | None,
    progress: Callable[[float], None] | None,
) -> dict:
    """Return ``state`` with each reference's region, going on from the images already done.

    By relevance: the box around the heatmap of the reference's channel and position alone.  By
    activation (and where that heatmap is empty): the input pixels under that position.  The
    images are done one at a time; after each the state goes to ``save``.
    """
    layer_shape = tuple(int(size) for size in state["layer_shape"])
    if "regions_done" not in state:
        input_size = setting.spec.input_size
        for by in RANKINGS:
            state[f"{by}_boxes"] = _cell_boxes(
                state[f"{by}_positions"], layer_shape[1:], input_size
            )
        state["regions_done"] = 0
    images, positions = state["relevance_images"], state["relevance_positions"]
    todo = np.unique(images[images >= 0])
    per_channel = int(np.prod(layer_shape[1:], dtype=np.int64))
    model = setting.model
    for number in range(int(state["regions_done"]), len(todo)):
        raise_if_cancelled(cancel)
        channels, ranks = np.nonzero(images == todo[number])
        batch = _prepared(model, load_image(ordered[todo[number]], setting.spec).tensor[None])
        plain = plain_pass(
            model, batch, setting.rulemap, setting.layer, None, axis=setting.axis, to_input=False
        )
        masks = batch.new_zeros((len(channels), per_channel * layer_shape[0]))
        masks[np.arange(len(channels)), channels * per_channel + positions[channels, ranks]] = 1
        heatmaps = conditional_relevance(
            model,
            batch,
            setting.rulemap,
            plain,
            masks.reshape(-1, *layer_shape),
            batch_size=REGION_BATCH,
        )
        for channel, rank, heatmap in zip(channels, ranks, heatmaps):
            box = _bounding_box(heatmap.abs().sum(dim=0))
            if box is not None:
                state["relevance_boxes"][channel, rank] = box
        state["regions_done"] = number + 1
        save(state)
        if progress is not None:
            progress(SCAN_SHARE + (1 - SCAN_SHARE) * (number + 1) / len(todo))
    return state


def _cell_boxes(
    positions: np.ndarray, spatial: tuple[int, ...], input_size: tuple[int, int]
) -> np.ndarray:
    """Return the input pixels under each flat layer position, ``positions.shape + (4,)``.

    A sequence of tokens that forms a square grid of patches (see :func:`~.concepts.token_grid`)
    is that grid; its class token, and a layer with no 2-d map, stand for the whole image.
    """
    height, width = input_size
    whole = np.broadcast_to(np.array([0, 0, height, width]), (*positions.shape, 4))
    grid = token_grid(spatial[0]) if len(spatial) == 1 else None
    if grid is not None:
        leading, side = grid
        cells = _cell_boxes(np.maximum(positions - leading, 0), (side, side), input_size)
        return np.where((positions < leading)[..., None], whole, cells)
    if len(spatial) != 2:
        return whole.copy()
    rows, cols = np.divmod(positions, spatial[1])
    return np.stack(
        [
            rows * height // spatial[0],
            cols * width // spatial[1],
            -(-(rows + 1) * height // spatial[0]),
            -(-(cols + 1) * width // spatial[1]),
        ],
        axis=-1,
    )


def _bounding_box(magnitude: torch.Tensor) -> tuple[int, int, int, int] | None:
    """Return the box around the pixels with at least :data:`REGION_SHARE` of the largest value."""
    largest = float(magnitude.max())
    if not largest > 0:
        return None
    rows, cols = torch.nonzero(magnitude >= REGION_SHARE * largest, as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def _load_partial(folder: Path) -> dict:
    partial = folder / _PARTIAL
    if not partial.is_file():
        return {}
    with np.load(partial) as arrays:
        state = {name: arrays[name] for name in arrays.files}
    state["skipped"] = [str(p) for p in state.get("skipped", [])]
    return state


def _save(path: Path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` atomically, so an interruption leaves the last whole copy."""
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, **{name: np.asarray(value) for name, value in arrays.items()})
    os.replace(temporary, path)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so it is there whole or not at all."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
