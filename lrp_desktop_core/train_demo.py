"""Train the bundled demo classifier on the synthetic shapes and write it to ``resources/demo``.

Run ``python -m lrp_desktop_core.train_demo`` (a few minutes on two CPU cores). Everything is
seeded, so a rerun on the same software versions gives the same weights. The script writes

* ``demo_net.safetensors``: the weights, with the class names, the input normalisation (mean and
  std), the seeds and the measured held-out accuracy in the file's metadata;
* ``samples/<shape>_<nn>.png`` and ``samples/<shape>_<nn>_mask.png``: sample images and their object
  masks, and ``samples/samples.json`` recording the data-set seed and index each sample came from.
"""

from __future__ import annotations

import argparse
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
from .demo_net import DEMO_DIR, build_demo_net

logger = logging.getLogger(__name__)

TRAIN_SEED = 0
"""Data-set seed of the training images."""

HELD_OUT_SEED = 1
"""Data-set seed of the held-out images used to report accuracy."""

SAMPLES_SEED = 2
"""Data-set seed of the bundled sample images."""


@dataclass(frozen=True)
class TrainingSettings:
    """Settings of one training run (the defaults are the ones the bundled weights used)."""

    train_count: int = 5000
    held_out_count: int = 1000
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    samples_per_class: int = 2
    torch_seed: int = 0


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


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the fraction of ``inputs`` that ``model`` (put into eval mode) classifies right."""
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(batch).argmax(dim=1) for batch in inputs.split(250)])
    return float((predictions == labels).float().mean())


def train(settings: TrainingSettings) -> tuple[nn.Module, dict[str, str]]:
    """Train the demo network and return it (eval mode) with the metadata to store beside it."""
    torch.manual_seed(settings.torch_seed)
    started = time.perf_counter()
    data = shapes.generate(settings.train_count, seed=TRAIN_SEED)
    held_out = shapes.generate(settings.held_out_count, seed=HELD_OUT_SEED)
    mean, std = channel_statistics(data.images)
    inputs, labels = to_tensor(data.images, mean, std), torch.from_numpy(data.labels)
    held_out_inputs = to_tensor(held_out.images, mean, std)
    held_out_labels = torch.from_numpy(held_out.labels)
    logger.info("generated %d images in %.1f s", len(labels), time.perf_counter() - started)

    model = build_demo_net(num_classes=len(shapes.SHAPES))
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
            optimizer.zero_grad()
            loss = loss_function(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
        held_out_accuracy = accuracy(model, held_out_inputs, held_out_labels)
        logger.info(
            "epoch %d/%d: loss %.4f, held-out accuracy %.4f (%.0f s)",
            epoch + 1, settings.epochs, total_loss / len(labels), held_out_accuracy,
            time.perf_counter() - started,
        )

    seconds = time.perf_counter() - started
    logger.info("held-out accuracy %.4f after %.0f s", held_out_accuracy, seconds)
    metadata = {
        "architecture": "demo",
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
        "torch_version": torch.__version__,
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
    """Train, save the weights and write the samples; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="folder to write to")
    parser.add_argument("--epochs", type=int, default=TrainingSettings.epochs)
    parser.add_argument("--train-count", type=int, default=TrainingSettings.train_count)
    parser.add_argument("--lr", type=float, default=TrainingSettings.learning_rate)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads for torch (1 is reproducible and copes best with a busy machine)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    settings = TrainingSettings(
        epochs=args.epochs, train_count=args.train_count, learning_rate=args.lr
    )
    model, metadata = train(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "demo_net.safetensors"
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(weights), metadata=metadata)
    logger.info("wrote %s (%d bytes)", weights, weights.stat().st_size)
    samples = write_samples(args.out / "samples", settings.samples_per_class)
    logger.info("wrote %d samples to %s", len(samples), args.out / "samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
