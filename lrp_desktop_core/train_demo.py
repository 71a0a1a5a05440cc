"""Train a bundled demo model on the synthetic shapes and write it to ``demo_data`` (package data).

Run ``python -m lrp_desktop_core.train_demo`` for the CNN demo or
``python -m lrp_desktop_core.train_demo --model demo_vit`` for the ViT demo (each a few minutes on
two CPU cores). Both use the same data-set seeds, training loop and file format; :data:`TRAINING`
holds each one's settings (the ViT trains on more images, augmented). Everything is seeded, so a
rerun on the same software versions gives the same weights. The script writes

* the demo's weights file (``demo_net.safetensors``, ``demo_vit.safetensors``), with the class
  names, the input normalisation (mean and std), the seeds, the training settings, the
  architecture's hyperparameters and the measured held-out accuracy in the file's metadata;
* ``samples/<shape>_<nn>.png`` and ``samples/<shape>_<nn>_mask.png``: sample images and their object
  masks, and ``samples/samples.json`` recording the data-set seed and index each sample came from.
  They do not depend on the model, so every demo shares them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from . import shapes
from .demo_net import DEMO_DIR
from .demos import DEMOS, BundledDemo

logger = logging.getLogger(__name__)

TRAIN_SEED = 0
"""Data-set seed of the training images."""

HELD_OUT_SEED = 1
"""Data-set seed of the held-out images used to report accuracy."""

SAMPLES_SEED = 2
"""Data-set seed of the bundled sample images."""


@dataclass(frozen=True)
class TrainingSettings:
    """Settings of one training run (the defaults are the ones the bundled CNN's weights used).

    Attributes
    ----------
    train_count, held_out_count : int
        Images of the training and of the held-out data set.
    epochs, batch_size : int
        Passes over the training images, and images per optimiser step.
    learning_rate, weight_decay : float
        Peak learning rate of the one-cycle schedule (warm-up, then cosine decay) and AdamW's
        weight decay.
    augment : bool
        Flip training images left-right and shift them by up to :data:`MAX_SHIFT` pixels, each
        at random.
    samples_per_class : int
        Sample images written per shape.
    torch_seed : int
        Seed of the initial weights, the batch order and the augmentation.
    """

    train_count: int = 5000
    held_out_count: int = 1000
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = False
    samples_per_class: int = 2
    torch_seed: int = 0


TRAINING: dict[str, TrainingSettings] = {
    "demo": TrainingSettings(),
    "demo_vit": TrainingSettings(
        train_count=10000, epochs=6, learning_rate=1e-3, weight_decay=0.05, augment=True
    ),
}
"""The settings each bundled demo (by registry name) was trained with."""

MAX_SHIFT = 4
"""Largest shift in pixels, either way along each axis, of the augmentation."""


def to_tensor(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Turn (N, H, W, 3) uint8 images into a normalised (N, 3, H, W) float32 tensor."""
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (tensor - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def channel_statistics(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Return per-channel mean and std of uint8 images on the 0..1 scale, rounded to 4 digits."""
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    mean = torch.tensor(np.round(pixels.mean(axis=0), 4), dtype=torch.float32)
    std = torch.tensor(np.round(pixels.std(axis=0), 4), dtype=torch.float32)
    return mean, std


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Return a batch (N, C, H, W) with each image flipped left-right (or not) and shifted.

    The shift moves an image by up to :data:`MAX_SHIFT` pixels along each axis; the border pixels
    are repeated into the space it leaves. Shapes stay upright, as in the data set.
    """
    count, _, height, width = images.shape
    flip = torch.rand(count, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    padded = nn.functional.pad(images, [MAX_SHIFT] * 4, mode="replicate")
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (count, 2), generator=generator).tolist()
    return torch.stack(
        [image[:, y : y + height, x : x + width] for image, (y, x) in zip(padded, offsets)]
    )


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the fraction of ``inputs`` that ``model`` (put into eval mode) classifies right."""
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(batch).argmax(dim=1) for batch in inputs.split(250)])
    return float((predictions == labels).float().mean())


def initial_model(demo: BundledDemo, settings: TrainingSettings) -> nn.Module:
    """Return the network that training of ``demo`` starts from, seeded by ``settings``."""
    torch.manual_seed(settings.torch_seed)
    return demo.build(len(shapes.SHAPES), demo.architecture)


def train(demo: BundledDemo, settings: TrainingSettings) -> tuple[nn.Module, dict[str, str]]:
    """Train a demo network and return it (eval mode) with the metadata to store beside it.

    Parameters
    ----------
    demo : BundledDemo
        Which demo to train.
    settings : TrainingSettings
        How to train it.

    Returns
    -------
    model : nn.Module
        The trained network, in eval mode.
    metadata : dict of str to str
        Class names, normalisation, seeds, settings, architecture and held-out accuracy.
    """
    model = initial_model(demo, settings)
    started = time.perf_counter()
    data = shapes.generate(settings.train_count, seed=TRAIN_SEED)
    held_out = shapes.generate(settings.held_out_count, seed=HELD_OUT_SEED)
    mean, std = channel_statistics(data.images)
    inputs, labels = to_tensor(data.images, mean, std), torch.from_numpy(data.labels)
    held_out_inputs = to_tensor(held_out.images, mean, std)
    held_out_labels = torch.from_numpy(held_out.labels)
    logger.info("generated %d images in %.1f s", len(labels), time.perf_counter() - started)

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    steps_per_epoch = -(-len(labels) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.learning_rate,
        total_steps=settings.epochs * steps_per_epoch,
        pct_start=0.15,
    )
    loss_function = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(settings.torch_seed)
    for epoch in range(settings.epochs):
        model.train()
        total_loss = 0.0
        for batch in torch.randperm(len(labels), generator=generator).split(settings.batch_size):
            batch_inputs = inputs[batch]
            if settings.augment:
                batch_inputs = augment(batch_inputs, generator)
            optimizer.zero_grad()
            loss = loss_function(model(batch_inputs), labels[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
        held_out_accuracy = accuracy(model, held_out_inputs, held_out_labels)
        logger.info(
            "epoch %d/%d: loss %.4f, held-out accuracy %.4f (%.0f s)",
            epoch + 1,
            settings.epochs,
            total_loss / len(labels),
            held_out_accuracy,
            time.perf_counter() - started,
        )

    seconds = time.perf_counter() - started
    logger.info("held-out accuracy %.4f after %.0f s", held_out_accuracy, seconds)
    metadata = {
        "architecture": demo.name,
        "class_names": json.dumps(list(shapes.SHAPES)),
        "mean": json.dumps(mean.tolist()),
        "std": json.dumps(std.tolist()),
        "input_size": str(shapes.IMAGE_SIZE),
        "train_seed": str(TRAIN_SEED),
        "train_count": str(settings.train_count),
        "epochs": str(settings.epochs),
        "held_out_seed": str(HELD_OUT_SEED),
        "held_out_count": str(settings.held_out_count),
        "held_out_accuracy": f"{held_out_accuracy:.4f}",
        "training_seconds": f"{seconds:.0f}",
        "torch_seed": str(settings.torch_seed),
        "batch_size": str(settings.batch_size),
        "learning_rate": str(settings.learning_rate),
        "weight_decay": str(settings.weight_decay),
        "augment": str(settings.augment),
        "torch_version": torch.__version__,
        **demo.architecture,
    }
    return model.eval(), metadata


def write_samples(out_dir: Path, per_class: int) -> list[Path]:
    """Write ``per_class`` sample images and masks per shape to ``out_dir``; return image paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written, record = [], {}
    for label, shape in enumerate(shapes.SHAPES):
        for number in range(1, per_class + 1):
            index = label + len(shapes.SHAPES) * (number - 1)
            image, mask, _ = shapes.render(SAMPLES_SEED, index)
            stem = f"{shape}_{number:02d}"
            Image.fromarray(image).save(out_dir / f"{stem}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(out_dir / f"{stem}_mask.png")
            record[f"{stem}.png"] = {"label": shape, "seed": SAMPLES_SEED, "index": index}
            written.append(out_dir / f"{stem}.png")
    (out_dir / "samples.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    """Train a demo, save its weights and write the samples; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(DEMOS), default="demo", help="demo to train")
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="folder to write to")
    parser.add_argument("--epochs", type=int, help="passes over the data (default: the demo's)")
    parser.add_argument("--train-count", type=int, help="training images (default: the demo's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the demo's)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (1 is reproducible and copes best with a busy machine)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    demo, settings = DEMOS[args.model], TRAINING[args.model]
    overrides = {"epochs": args.epochs, "train_count": args.train_count, "learning_rate": args.lr}
    settings = dataclasses.replace(
        settings, **{key: value for key, value in overrides.items() if value is not None}
    )
    model, metadata = train(demo, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / demo.weights.name
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(weights), metadata=metadata)
    logger.info("wrote %s (%d bytes)", weights, weights.stat().st_size)
    samples = write_samples(args.out / "samples", settings.samples_per_class)
    logger.info("wrote %d samples to %s", len(samples), args.out / "samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
