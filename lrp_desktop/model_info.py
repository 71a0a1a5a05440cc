"""What the GUI knows of the model the worker holds; free of Qt, so the worker side can build it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrp_desktop_core.models import WeightsSource
from lrp_desktop_core.rulemap import canonized_leaves


@dataclass(frozen=True)
class ModelInfo(WeightsSource):
    """What the GUI knows of the model the worker holds.

    Its ``weights`` and ``title`` are those of :class:`~lrp_desktop_core.models.WeightsSource`.

    Attributes
    ----------
    key
        Unique per load; part of every cache key.
    spec
        The model's ``ModelSpec`` (title, input size, class names).
    source
        What was loaded ("demo", a torchvision name, or a file path).
    weights_path, weights_sha256
        The weights file and its hash, when weights came from a file.
    skeleton
        A copy of the model on the "meta" device: its structure without any numbers, for the
        rule tree and rule maps (the real model never leaves the worker).
    n_parameters
        Number of parameters.
    device
        Where the real model is.
    recommendation
        The LRP set-up that suits the model's structure (``recommend.Recommendation``).
    pretrained, seed
        The name of published weights, or the seed of random weights.
    rulemap
        The recommended rule map (``RuleMap.recommended``), worked out by the worker when it
        loaded the model so that the window does not wait for it; None where the model's
        structure defeats rule maps, and ``rulemap_problem`` says why.
    rulemap_problem
        Why there is no rule map, else None.
    leaves
        The skeleton's leaf layers per canonizer set, as :meth:`canonized_leaves` worked them
        out (the worker fills in the rule map's set before the window sees the model).
    structure_skeleton
        A second copy of ``skeleton``, made by the worker, for the thread that checks rule maps:
        canonizing changes a skeleton while it lasts, so that thread and the window never share
        one.
    """

    key: str
    spec: Any
    source: str
    weights_path: Path | None
    weights_sha256: str | None
    skeleton: Any
    n_parameters: int
    device: str
    recommendation: Any
    pretrained: str | None = None
    seed: int | None = None
    rulemap: Any = None
    rulemap_problem: str | None = None
    leaves: dict[str, list[tuple[str, Any]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    structure_skeleton: Any = field(default=None, compare=False, repr=False)

    def canonized_leaves(self, canonizer: str) -> list[tuple[str, Any]]:
        """Return the skeleton's named leaf layers under ``canonizer``, worked out once per set.

        The skeleton's structure never changes, so the answer of ``rulemap.canonized_leaves``
        (which canonizes a model and restores it) holds for the whole load.
        """
        if canonizer not in self.leaves:
            self.leaves[canonizer] = canonized_leaves(self.skeleton, canonizer)
        return self.leaves[canonizer]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's class names."""
        return tuple(self.spec.class_names)
