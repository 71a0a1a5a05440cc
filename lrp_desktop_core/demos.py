"""The catalogue of bundled demo models, small networks trained on :mod:`.shapes`.

They ship with their weights, so everything works offline.

Each :class:`BundledDemo` says how to build its network from the metadata of its weights file;
:mod:`.models` turns it into a registry spec and :mod:`.train_demo` trains it. All demos share the
sample images in :data:`~.demo_net.DEMO_SAMPLES_DIR`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .demo_net import DEMO_DIR, DEMO_WEIGHTS, build_demo_net
from .demo_vit import DemoViTConfig, build_demo_vit

__all__ = ["DEMOS", "BundledDemo"]


@dataclass(frozen=True)
class BundledDemo:
    """One bundled demo model.

    Attributes
    ----------
    name : str
        Registry name, also stored as ``architecture`` in the weights' metadata.
    title : str
        Human-readable name for menus.
    description : str
        A few words on the network, for choosers.
    weights : Path
        The bundled weights file (safetensors with metadata).
    build : callable
        ``build(num_classes, metadata)`` returns a fresh network of the architecture that
        ``metadata`` (the weights file's) describes.
    architecture : dict of str to str
        The metadata entries that describe the architecture :mod:`.train_demo` builds; ``build``
        reads them back.
    """

    name: str
    title: str
    description: str
    weights: Path
    build: Callable[[int, Mapping[str, str]], nn.Module] = field(repr=False)
    architecture: Mapping[str, str] = field(default_factory=dict)


def _build_cnn(num_classes: int, metadata: Mapping[str, str]) -> nn.Module:
    """Build the demo CNN (its architecture is fixed; ``metadata`` says nothing about it)."""
    return build_demo_net(num_classes)


def _build_vit(num_classes: int, metadata: Mapping[str, str]) -> nn.Module:
    """Build the demo ViT with the hyperparameters stored in ``metadata``."""
    return build_demo_vit(num_classes, DemoViTConfig.from_metadata(metadata))


DEMOS: dict[str, BundledDemo] = {
    demo.name: demo
    for demo in (
        BundledDemo(
            name="demo",
            title="Shapes demo (bundled, works offline)",
            description="small CNN on synthetic shapes",
            weights=DEMO_WEIGHTS,
            build=_build_cnn,
        ),
        BundledDemo(
            name="demo_vit",
            title="Shapes ViT demo (bundled, works offline)",
            description="small Vision Transformer on synthetic shapes",
            weights=DEMO_DIR / "demo_vit.safetensors",
            build=_build_vit,
            architecture=DemoViTConfig().to_metadata(),
        ),
    )
}
"""The bundled demos by registry name, the default model (``"demo"``) first."""
