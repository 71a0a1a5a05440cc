"""The bundled demo Vision Transformer: a small torchvision ``VisionTransformer`` for the shapes.

It is torchvision's own class with small hyperparameters, so the ``"torchvision"`` canonizer set of
:mod:`.vit` makes every operation of it a module with a rule, as for the registry's ViTs. The
patches are embedded by a small convolutional stem (torchvision's ``conv_stem_configs``, after
Xiao et al., "Early convolutions help transformers see better", 2021) instead of one strided
convolution: in trial runs on the same data the plain patch embedding classified about a third of
the held-out images after three epochs, the stem 97 %. The hyperparameters are stored in the
weights' metadata (:meth:`DemoViTConfig.to_metadata`), and the model is rebuilt from there
(:func:`build_demo_vit`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .demo_net import DEMO_INPUT_SIZE

if TYPE_CHECKING:
    from torchvision.models.vision_transformer import VisionTransformer


@dataclass(frozen=True)
class DemoViTConfig:
    """Hyperparameters of the demo ViT (the defaults are those of the bundled weights).

    Attributes
    ----------
    image_size : int
        Height and width of the input in pixels.
    patch_size : int
        Height and width of one patch (token) in pixels.
    num_layers : int
        Number of encoder blocks.
    num_heads : int
        Attention heads per block.
    hidden_dim : int
        Width of the tokens.
    mlp_dim : int
        Width of the hidden layer of each block's MLP.
    stem_channels : tuple of int
        Output channels of the stem's 3x3 convolutions (each with BatchNorm and ReLU, stride 2);
        ``2 ** len(stem_channels)`` must equal ``patch_size``. Empty: the plain patch embedding.

    Notes
    -----
    With the defaults the network has about 0.18 M parameters (under 1 MB in float32) and a
    64 x 64 image becomes 64 patch tokens plus the class token.
    """

    image_size: int = DEMO_INPUT_SIZE
    patch_size: int = 8
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: int = 64
    mlp_dim: int = 128
    stem_channels: tuple[int, ...] = (24, 48, 64)

    def __post_init__(self) -> None:
        if self.stem_channels and 2 ** len(self.stem_channels) != self.patch_size:
            raise ValueError(
                f"a stem of {len(self.stem_channels)} stride-2 convolutions makes patches of "
                f"{2 ** len(self.stem_channels)} pixels, not {self.patch_size}"
            )

    def to_metadata(self) -> dict[str, str]:
        """Return the hyperparameters as safetensors metadata (JSON in string values)."""
        return {
            f"vit_{name}": json.dumps(value) for name, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> DemoViTConfig:
        """Read the hyperparameters written by :meth:`to_metadata`; missing ones keep defaults."""
        values = {}
        for field in dataclasses.fields(cls):
            if f"vit_{field.name}" in metadata:
                value = json.loads(metadata[f"vit_{field.name}"])
                values[field.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


def build_demo_vit(
    num_classes: int = 5, config: DemoViTConfig = DemoViTConfig()
) -> VisionTransformer:
    """Return a freshly initialised demo ViT (in training mode, random weights).

    Parameters
    ----------
    num_classes : int, optional
        Number of output logits (five shapes by default).
    config : DemoViTConfig, optional
        The hyperparameters.
    """
    from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

    kwargs = dataclasses.asdict(config)
    stem = [
        ConvStemConfig(out_channels=channels, kernel_size=3, stride=2)
        for channels in kwargs.pop("stem_channels")
    ]
    return VisionTransformer(num_classes=num_classes, conv_stem_configs=stem or None, **kwargs)
