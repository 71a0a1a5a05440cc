"""Worker requests for the layer view: a layer's concept heatmaps and its reference images.

Both run in the model's worker thread (see :mod:`.requests`), report progress, stop when
cancelled, and return numpy results only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrp_desktop_core.channel_method import concept_explanation
from lrp_desktop_core.concepts import Concepts, LayerNotFoundError, concept_heatmaps
from lrp_desktop_core.explain import Explanation, Method
from lrp_desktop_core.images import image_files
from lrp_desktop_core.relmax import ReferenceIndex, index_references
from lrp_desktop_core.rulemap import RuleMap

from .requests import WorkerContext
from .worker import Job, UserFacingError

LAYER_HINT = "Choose another layer in the rules tree."


@dataclass(frozen=True)
class ConceptsResult:
    """A layer's concepts on one image, with the picture they belong to.

    Attributes
    ----------
    path
        The image.
    concepts
        The core's result: channels by relevance, their conditional heatmaps, the layer overview.
    display
        The image as the model sees it.
    method
        The LRP method (rules) the heatmaps were computed with.
    """

    path: Path
    concepts: Concepts
    display: np.ndarray
    method: Method

    def explanation(self, row: int | None = None) -> Explanation:
        """Return the plain heatmap, or the conditional heatmap of ``row``, as an explanation."""
        return concept_explanation(self.concepts, self.method, row)


@dataclass(frozen=True)
class ConceptsRequest:
    """Compute the conditional heatmaps of a layer's top channels on one image."""

    path: Path
    rulemap: RuleMap
    layer: str
    channels: int | str
    target: int | None
    title: str = "Concepts"

    def run(self, context: WorkerContext, job: Job) -> ConceptsResult:
        """Run on the model's device; a layer the model lacks becomes a message."""
        loaded = context.require_model()
        image = context.image(self.path)
        job.check()
        try:
            concepts = concept_heatmaps(
                loaded.model,
                image.tensor[None],
                self.rulemap,
                self.layer,
                self.channels,
                self.target,
                cancel=job.cancelled,
                progress=lambda share: job.progress(share, f"Concepts of {self.layer}"),
            )
        except LayerNotFoundError as error:
            raise UserFacingError(str(error), LAYER_HINT) from error
        return ConceptsResult(self.path, concepts, image.display, Method("lrp", self.rulemap))


@dataclass(frozen=True)
class ReferencesRequest:
    """Find (or read from the store) the reference images of every channel of a layer."""

    folder: Path
    rulemap: RuleMap
    layer: str
    store: Path | None = None
    title: str = "Indexing reference images"

    def run(self, context: WorkerContext, job: Job) -> ReferenceIndex:
        """Index the folder's images; cancelling keeps what was done for the next run."""
        loaded = context.require_model()
        try:
            return index_references(
                loaded.model,
                loaded.spec,
                self.rulemap,
                self.layer,
                image_files(self.folder),
                store=self.store,
                cancel=job.cancelled,
                progress=lambda share: job.progress(share, f"Indexing {self.folder.name}"),
            )
        except LayerNotFoundError as error:
            raise UserFacingError(str(error), LAYER_HINT) from error
