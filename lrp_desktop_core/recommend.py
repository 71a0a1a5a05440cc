"""What suits a model, decided from its structure: canonizers, preset, and what cannot be explained.

:func:`recommend` looks at a model's modules (their classes, subclasses included), never at the
name it was loaded by, so a user's fine-tuned network from a file gets the same treatment as the
registry's. It applies the structural canonizers once to see what they change, reverts them, and
returns a :class:`Recommendation` that says what it decided and why.

Examples
--------
>>> rec = recommend(torchvision.models.efficientnet_b0())
>>> rec.canonizer, rec.family
('torchvision', 'EfficientNet')
>>> rec.reasons[0]
'16 batch norms merged into the convolutions before them'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from .canonizers import BlockCanonizer, Canonizer, MergeBatchNorm, get_canonizers
from .layer import ChannelAffine
from .mha import attention_supported
from .names import MODEL_FAMILIES
from .torchvision_types import torchvision_imported, torchvision_types
from .types import BatchNorm

__all__ = ["ATTENTION_PRESET", "DEFAULT_PRESET", "Recommendation", "recommend"]

DEFAULT_PRESET = "epsilon_gamma_box"
"""The preset recommended for image classifiers."""

ATTENTION_PRESET = "vit_cp"
"""The preset recommended for models with multi-head attention (e.g. Vision Transformers)."""


def _families() -> tuple[tuple[type, str], ...]:
    """Return the families whose every operation on the relevance path has a module and a rule.

    They are the classes the catalogue's :data:`~.names.MODEL_FAMILIES` name (all torchvision's),
    with their titles.
    """
    if not torchvision_imported():  # then no model holds one (see .torchvision_types)
        return ()
    return tuple((entry.load(), entry.title) for entry in MODEL_FAMILIES.values())


def _unsupported_types() -> tuple[tuple[type, str], ...]:
    """Return the architectures, or blocks, whose attention no canonizer makes modules of yet.

    That is Swin V2's cosine attention: its heatmaps are wrong. ``nn.MultiheadAttention``, Vision
    Transformers, Swin Transformer V1 and MaxViT are canonized (see :mod:`.mha`, :mod:`.vit`,
    :mod:`.swin` and :mod:`.maxvit`).
    """
    return tuple(
        (swin_v2, "Swin Transformer V2 (cosine attention with a learned scale)")
        for swin_v2 in torchvision_types("models.swin_transformer", "ShiftedWindowAttentionV2")
    )


@dataclass(frozen=True)
class Recommendation:
    """The LRP set-up that suits a model, and why.

    Attributes
    ----------
    canonizer : str
        The canonizer set (a name in ``canonizers.CANONIZERS``): the smallest that makes every
        change the structural canonizers would make.
    preset : str
        The recommended preset (a name in ``composites.COMPOSITES``): :data:`ATTENTION_PRESET`
        for models with multi-head attention, else :data:`DEFAULT_PRESET`.
    family : str
        The recognised architecture, e.g. ``"EfficientNet"``, or ``"custom model"``.
    reasons : tuple of str
        What the canonizers change, one sentence each.
    unsupported : tuple of str
        Parts of the model no rule explains correctly (e.g. Swin V2's cosine attention); empty
        when the whole model is supported.
    affine_batch_norms : tuple of str
        Names of batch norms that cannot be merged into a layer (e.g. DenseNet's pre-activation
        ones); they get the Epsilon rule as the affine layers they are.
    input_transform : ChannelAffine or None
        A fixed change of input units in front of the first layer (GoogLeNet, Inception v3).
    """

    canonizer: str
    preset: str
    family: str
    reasons: tuple[str, ...]
    unsupported: tuple[str, ...]
    affine_batch_norms: tuple[str, ...]
    input_transform: ChannelAffine | None = None

    @property
    def supported(self) -> bool:
        """Whether the architecture is recognised and every part of it is explained."""
        return self.family != "custom model" and not self.unsupported

    def first_layer_bounds(
        self, low: torch.Tensor, high: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the input bounds as the first layer sees them (after any input transform)."""
        if self.input_transform is None:
            return low, high
        return self.input_transform.map_bounds(low, high)

    def summary(self) -> str:
        """Return one line for people: the family, the verdict, the canonizer and the preset."""
        if self.family == "custom model" and not self.unsupported:
            verdict = "architecture not recognised: the audit checks its relevance path"
        else:
            verdict = "fully supported" if self.supported else "not fully supported"
        return f"{self.family} ({verdict}): canonizer {self.canonizer}, preset {self.preset}"

    def to_dict(self) -> dict:
        """Return a JSON-ready record of the decision and its reasons."""
        return {
            "family": self.family,
            "supported": self.supported,
            "canonizer": self.canonizer,
            "preset": self.preset,
            "reasons": list(self.reasons),
            "unsupported": list(self.unsupported),
            "affine_batch_norms": list(self.affine_batch_norms),
        }


def recommend(model: nn.Module) -> Recommendation:
    """Decide the canonizer set and preset for ``model`` from its modules.

    The model is canonized for the look and restored before this returns, also on failure.

    Parameters
    ----------
    model : torch.nn.Module
        The model, e.g. built by name, loaded from weights or unpickled.

    Returns
    -------
    Recommendation
        The decision, with its reasons.
    """
    applied: list[Canonizer] = [
        instance
        for canonizer in get_canonizers("torchvision")
        for instance in canonizer.apply(model)
    ]
    try:
        changes = _changed_modules(applied)
        reasons = _reasons(applied)
        affine = tuple(
            name
            for name, module in model.named_modules()
            if isinstance(module, BatchNorm) and "forward" not in vars(module)
        )
        transform = next((m for m in model.modules() if isinstance(m, ChannelAffine)), None)
    finally:
        for instance in reversed(applied):
            instance.remove()
    if affine:
        reasons.append(
            f"{len(affine)} batch norm(s) cannot be merged (no layer right before them): "
            "Epsilon, as the affine layers they are"
        )
    return Recommendation(
        canonizer=_smallest_canonizer(model, changes),
        preset=ATTENTION_PRESET if _has_attention(model) else DEFAULT_PRESET,
        family=_family(model),
        reasons=tuple(reasons),
        unsupported=_unsupported(model),
        affine_batch_norms=affine,
        input_transform=transform,
    )


def _reasons(applied: list[Canonizer]) -> list[str]:
    merged = sum(isinstance(instance, MergeBatchNorm) for instance in applied)
    reasons = [f"{merged} batch norm(s) merged into the layers next to them"] if merged else []
    blocks = Counter(
        instance.description for instance in applied if isinstance(instance, BlockCanonizer)
    )
    reasons += [f"{count} x {description}" for description, count in blocks.items()]
    return reasons


def _changed_modules(applied: list[Canonizer]) -> set[int]:
    """Return the ids of the modules that the applied canonizer instances change."""
    return {
        id(instance.batch_norm if isinstance(instance, MergeBatchNorm) else instance.module)
        for instance in applied
    }


def _smallest_canonizer(model: nn.Module, changes: set[int]) -> str:
    """Name the smallest canonizer set that changes the same modules as the structural one."""
    for name in ("none", "merge_batchnorm", "resnet"):
        if name == "resnet" and not torchvision_imported():
            continue  # its blocks are torchvision's: no model holds one
        applied = [i for canonizer in get_canonizers(name) for i in canonizer.apply(model)]
        try:
            if _changed_modules(applied) == changes:
                return name
        finally:
            for instance in reversed(applied):
                instance.remove()
    return "torchvision"


def _family(model: nn.Module) -> str:
    for family_type, family in (*_unsupported_types(), *_families()):
        if isinstance(model, family_type):
            return family
    return "custom model"


def _unsupported(model: nn.Module) -> tuple[str, ...]:
    found = []
    for unsupported_type, what in _unsupported_types():
        if any(isinstance(module, unsupported_type) for module in model.modules()):
            found.append(
                f"{what}: no rule explains its attention yet, so relevance there is scaled, "
                "not redistributed; the heatmap is not reliable"
            )
    if any(
        isinstance(module, nn.MultiheadAttention) and not attention_supported(module)
        for module in model.modules()
    ):
        found.append(
            "multi-head attention with add_bias_kv or add_zero_attn: no canonizer makes its "
            "operations modules, so relevance there is scaled, not redistributed"
        )
    return tuple(found)


def _has_attention(model: nn.Module) -> bool:
    return any(
        isinstance(
            module,
            (
                nn.MultiheadAttention,
                *torchvision_types("models.maxvit", "RelativePositionalMultiHeadAttention"),
            ),
        )
        or _window_attention_supported(module)
        for module in model.modules()
    )


def _window_attention_supported(module: nn.Module) -> bool:
    """Whether ``module`` is Swin V1 window attention that :mod:`.swin` canonizes."""
    if not torchvision_imported():  # Swin is torchvision's: no model holds it
        return False
    from .swin import window_attention_supported

    return window_attention_supported(module)
