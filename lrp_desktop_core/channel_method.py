"""One channel's conditional heatmap as an explanation, to show, compare and cache like any other.

:class:`ChannelMethod` is LRP restricted to the relevance through one channel of a layer (see
:mod:`.concepts`); :func:`explain_channel` computes it with :func:`~.explain.explain`'s signature,
and :func:`concept_explanation` turns an already computed :class:`~.concepts.Concepts` into
explanations without computing anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .concepts import Concepts, concept_heatmaps
from .explain import Explanation, Method, Target, model_device


@dataclass(frozen=True)
class ChannelMethod(Method):
    """LRP through one channel of a layer only: that channel's conditional heatmap.

    Parameters
    ----------
    kind, rulemap, params
        As :class:`~.explain.Method`; ``kind`` must be "lrp".
    layer : str
        A module name of the canonized model (see :func:`~.concepts.layer_names`).
    channel : int
        The channel (on the layer's channel axis, see :mod:`~.channel_axis`).
    """

    layer: str = ""
    channel: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind != "lrp" or not self.layer:
            raise ValueError("a channel method is 'lrp' with a layer name")

    def __hash__(self) -> int:
        return hash((Method.__hash__(self), self.layer, self.channel))

    def settings(self) -> dict[str, Any]:
        """Return the parameters of LRP with the layer and the channel."""
        return {**super().settings(), "layer": self.layer, "channel": self.channel}

    def label(self) -> str:
        """Return e.g. ``"LRP epsilon_plus, channel 7 of features.conv"``."""
        return f"{super().label()}, channel {self.channel} of {self.layer}"


def concept_explanation(concepts: Concepts, method: Method, row: int | None = None) -> Explanation:
    """Return the plain heatmap (``row`` None) or the ``row``-th channel's as an explanation.

    Parameters
    ----------
    concepts : Concepts
        A result of :func:`~.concepts.concept_heatmaps`.
    method : Method
        The LRP method (rule map) it was computed with; a channel's explanation gets the
        :class:`ChannelMethod` of that channel.
    row : int, optional
        The position in ``concepts.channels``.
    """
    overview = concepts.overview
    relevance = overview.relevance if row is None else concepts.relevance[row][None]
    relevance = relevance.astype(np.float32)
    if row is not None:
        channel = int(concepts.channels[row])
        method = ChannelMethod("lrp", method.rulemap, layer=concepts.layer, channel=channel)
    logits = torch.as_tensor(overview.logits, dtype=torch.float64)
    return Explanation(
        relevance=relevance,
        logits=overview.logits,
        probabilities=torch.softmax(logits, dim=1).float().numpy(),
        target=overview.target,
        explained_output=overview.logits[np.arange(len(overview.target)), overview.target],
        relevance_sum=relevance.reshape(len(relevance), -1).sum(axis=1, dtype=np.float64),
        seconds=0.0,
        method=method,
    )


def explain_channel(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    method: ChannelMethod,
    target: Target = None,
    *,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> Explanation:
    """Explain one input through one channel, with :func:`~.explain.explain`'s signature."""
    assert method.rulemap is not None
    start = time.perf_counter()
    concepts = concept_heatmaps(
        model,
        inputs,
        method.rulemap,
        method.layer,
        [method.channel],
        target,
        heatmap=False,  # only the channel's heatmap is returned
        cancel=cancel,
        progress=progress,
    )
    return replace(
        concept_explanation(concepts, method, row=0),
        seconds=time.perf_counter() - start,
        device=str(model_device(model)),
    )
