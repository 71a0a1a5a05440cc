"""What the worker threads can be asked to do, and the state they keep between requests.

Each request's ``run`` executes in a worker thread (see :mod:`.worker`) and returns plain Python
and numpy results. The model worker's :class:`WorkerContext` holds the loaded model on its device
and the images prepared for it; only that thread touches the model, so it also audits the
relevance path of each rule map (one instrumented forward pass, cached by the engine). A second,
light thread keeps a copy of the model's skeleton (:class:`StructureContext`) and checks rule maps
against it, so rule edits never wait for an explanation and never stall the window.
"""

from __future__ import annotations

import copy
import itertools
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrp_desktop_core import evaluate
from lrp_desktop_core.audit import AuditFinding, audit_rulemap
from lrp_desktop_core.channel_method import ChannelMethod, explain_channel
from lrp_desktop_core.coverage import LayerRule, rule_coverage
from lrp_desktop_core.explain import (
    DeviceOutOfMemoryError,
    Explanation,
    Method,
    NonFiniteError,
    UnsupportedModelError,
    explain,
)
from lrp_desktop_core.images import ImageLoadError, LoadedImage, load_image
from lrp_desktop_core.models import LoadedModel, load_model
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RuleMap
from lrp_desktop_core.weightfiles import ModelLoadError, archive_imports, pickle_imports

from .cache import ExplainKey, image_identity
from .devices import check_device
from .model_info import ModelInfo
from .worker import Job, UserFacingError

_LOAD_COUNTER = itertools.count(1)
OUT_OF_MEMORY_HINT = (
    "Switch to the CPU (Compute > Device), use a smaller model, or close other "
    "programs that use the GPU."
)


@dataclass
class WorkerContext:
    """The worker's state: the model on its device and the images prepared for it."""

    loaded: LoadedModel | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    model_key: str = ""
    images: dict[tuple[str, int, int, int], LoadedImage] = field(default_factory=dict)

    def require_model(self) -> LoadedModel:
        """Return the loaded model, or raise a message saying one must be chosen first."""
        if self.loaded is None:
            raise UserFacingError("No model is loaded.", "Choose a model (File > Choose model).")
        return self.loaded

    def image(self, path: Path) -> LoadedImage:
        """Return ``path`` prepared for the current model (read once, then kept)."""
        spec = self.require_model().spec
        identity = image_identity(path)
        if identity not in self.images:
            self.images[identity] = load_image(path, spec)
        return self.images[identity]


def describe_error(error: Exception) -> str:
    """Return advice for an error whose message does not already say what to do."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return OUT_OF_MEMORY_HINT
    if isinstance(error, ImageLoadError):
        return "Choose a readable image file (PNG, JPEG, BMP, TIFF, WebP, ...)."
    if isinstance(error, FileNotFoundError):
        return "Check the path; the file may have been moved or deleted."
    if isinstance(error, UnsupportedModelError):
        return 'Choose another method under "Method and device".'
    return ""


def _free_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _on_device(model: torch.nn.Module, device: torch.device) -> None:
    """Move ``model`` to ``device``; out of memory puts it back on the CPU with a clear error."""
    try:
        model.to(device)
    except torch.cuda.OutOfMemoryError as error:
        model.to("cpu")
        _free_gpu_memory()
        raise UserFacingError(
            f"The model does not fit into the memory of {device}.", OUT_OF_MEMORY_HINT
        ) from error


@dataclass(frozen=True)
class TrustNeeded:
    """The answer to loading a file that holds code: it needs the user's consent first.

    Attributes
    ----------
    request
        The load request to repeat with ``trust=True`` once the user agrees.
    imports
        What loading the file would import (and so run).
    text
        The loader's explanation.
    """

    request: LoadModelRequest
    imports: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class LoadModelRequest:
    """Load a model (the demo, a torchvision name, or a file) and put it on the device.

    Attributes
    ----------
    source
        A name from ``models.list_models()`` or the path of a model file.
    weights
        A weights file for the architecture ``source``.
    pretrained
        Use torchvision's ImageNet weights (from the cache, or downloaded with progress).
    trust
        Allow a file that runs code when loaded (only after the user agreed).
    seed
        Seed of random weights (a torchvision name without ``pretrained`` or weights).
    """

    source: str
    weights: Path | None = None
    pretrained: bool = False
    trust: bool = False
    seed: int | None = None
    title: str = "Loading the model"

    def run(self, context: WorkerContext, job: Job) -> ModelInfo | TrustNeeded:
        """Load the model, replacing the previous one; return what the GUI needs to know."""
        job.progress(0.0, f"Loading {self.source}")

        def download_progress(done: int, total: int) -> None:
            job.check()
            job.progress(
                done / total if total else 0.0,
                f"Downloading weights: {done / 2**20:.1f} of {total / 2**20:.1f} MiB",
            )

        try:
            loaded = load_model(
                self.source,
                self.weights,
                pretrained=self.pretrained,
                progress=download_progress,
                trust=self.trust,
                seed=self.seed,
            )
        except ModelLoadError as error:
            if self.trust or "trust=True" not in str(error):
                raise
            file = Path(self.weights if self.weights is not None else self.source)
            return TrustNeeded(self, tuple(_imports_of(file)), str(error))
        skeleton = _skeleton(loaded.model)
        context.loaded = None
        context.images.clear()
        _free_gpu_memory()
        _on_device(loaded.model, context.device)
        context.loaded = loaded
        context.model_key = f"{loaded.spec.name}#{next(_LOAD_COUNTER)}"
        job.progress(1.0, "Choosing the rules that suit the model")
        recommendation = recommend(skeleton)  # the structure decides; merging needs no values
        try:
            rulemap, problem = (
                RuleMap.recommended(skeleton, loaded.spec, recommendation=recommendation),
                None,
            )
        except Exception as error:  # a model whose structure defeats the rule map
            rulemap, problem = None, str(error)
        info = ModelInfo(
            key=context.model_key,
            spec=loaded.spec,
            source=self.source,
            weights_path=loaded.weights_path,
            weights_sha256=loaded.weights_sha256,
            skeleton=skeleton,
            n_parameters=sum(p.numel() for p in loaded.model.parameters()),
            device=str(context.device),
            recommendation=recommendation,
            pretrained=loaded.pretrained,
            seed=loaded.seed,
            rulemap=rulemap,
            rulemap_problem=problem,
            structure_skeleton=copy.deepcopy(skeleton),
        )
        if rulemap is not None:
            info.canonized_leaves(rulemap.canonizer)  # here, not in the window's rule tree
        return info


def _skeleton(model: torch.nn.Module) -> torch.nn.Module:
    """Return a copy of ``model`` without numbers, on the "meta" device.

    A TorchScript model cannot move to the meta device; its copy keeps its values (LRP cannot
    hook it anyway, and explaining with LRP says so).
    """
    skeleton = copy.deepcopy(model)
    return skeleton if isinstance(model, torch.jit.ScriptModule) else skeleton.to("meta")


def _imports_of(path: Path) -> list[str]:
    """Return what a pickled or TorchScript file would import when loaded."""
    if zipfile.is_zipfile(path):
        return archive_imports(path)
    return pickle_imports(path.read_bytes())


@dataclass(frozen=True)
class SetDeviceRequest:
    """Move the model to another device ("cpu", "cuda", "cuda:N")."""

    device: str
    title: str = "Switching the device"

    def run(self, context: WorkerContext, job: Job) -> str:
        """Move the model and return the device it is on now."""
        try:
            device = check_device(self.device)
        except ValueError as error:
            raise UserFacingError(str(error), "Choose the CPU or a listed CUDA device.") from error
        if context.loaded is not None:
            _on_device(context.loaded.model, device)
            if device.type == "cpu":
                _free_gpu_memory()
        context.device = device
        return str(device)


@dataclass(frozen=True)
class ImageResult:
    """An image as the model sees it."""

    path: Path
    display: np.ndarray


@dataclass(frozen=True)
class ImageRequest:
    """Read an image for the current model and return its display version."""

    path: Path
    title: str = "Opening the image"

    def run(self, context: WorkerContext, job: Job) -> ImageResult:
        """Read (or reuse) the image and return the picture at the model's input geometry."""
        return ImageResult(self.path, context.image(self.path).display)


@dataclass(frozen=True)
class ExplainResult:
    """A finished explanation with everything needed to show and cache it.

    Attributes
    ----------
    key
        The cache key it was requested under.
    path
        The image explained.
    explanation
        The core's explanation of this one image (numpy arrays only).
    display
        The image as the model sees it.
    thread_ident
        The thread it ran on (the worker's, never the GUI's).
    """

    key: ExplainKey
    path: Path
    explanation: Explanation
    display: np.ndarray
    thread_ident: int


@dataclass(frozen=True)
class ExplainRequest:
    """Explain one image with one method for one class (None: the top class)."""

    key: ExplainKey
    path: Path
    method: Method
    target: int | None
    title: str = "Explaining"

    def run(self, context: WorkerContext, job: Job) -> ExplainResult:
        """Run the explanation on the model's device.

        Out of memory (after which the core has emptied the device's cache) and NaN or inf in
        the input, logits or relevance become errors that say what to do.
        """
        loaded = context.require_model()
        image = context.image(self.path)
        job.check()
        compute = explain_channel if isinstance(self.method, ChannelMethod) else explain
        try:
            explanation = compute(
                loaded.model,
                image.tensor[None],
                self.method,
                self.target,
                cancel=job.cancelled,
                progress=lambda share: job.progress(share, self.method.label()),
            )
        except DeviceOutOfMemoryError as error:
            raise UserFacingError(
                f"The GPU ran out of memory while explaining "
                f"{self.path.name} with {self.method.label()}.",
                OUT_OF_MEMORY_HINT,
            ) from error
        except NonFiniteError as error:
            raise UserFacingError(f"{self.path.name}: {error}") from error
        return ExplainResult(self.key, self.path, explanation, image.display, threading.get_ident())


@dataclass(frozen=True)
class AuditResult:
    """What the audit of the relevance path found for one rule map of one model.

    Attributes
    ----------
    model_key
        The model it was found on.
    fingerprint
        The rule map's fingerprint.
    findings
        ``audit.AuditFinding`` objects (plain strings and counts); empty when all is covered.
    """

    model_key: str
    fingerprint: str
    findings: tuple[AuditFinding, ...]


@dataclass(frozen=True)
class AuditRequest:
    """Find the operations on the relevance path that no rule of ``rulemap`` redistributes."""

    rulemap: RuleMap
    title: str = "Checking the relevance path"

    def run(self, context: WorkerContext, job: Job) -> AuditResult:
        """Run the audit on the real model (an input of the model's size)."""
        loaded = context.require_model()
        job.progress(0.0, self.title)
        findings: tuple[AuditFinding, ...] = ()
        if not isinstance(loaded.model, torch.jit.ScriptModule):  # not hookable: explain says so
            shape = (1, 3, *loaded.spec.input_size)
            findings = audit_rulemap(loaded.model, self.rulemap, shape).findings
        return AuditResult(context.model_key, self.rulemap.fingerprint(), findings)


@dataclass
class StructureContext:
    """The structure thread's own copy of the model skeleton (the GUI keeps another)."""

    skeleton: Any = None
    recommendation: Any = None


@dataclass(frozen=True)
class SkeletonRequest:
    """Hand the structure thread its copy of a newly loaded model's skeleton and recommendation."""

    skeleton: Any
    recommendation: Any
    title: str = "Reading the model's structure"

    def run(self, context: StructureContext, job: Job) -> None:
        """Keep the skeleton and recommendation for the requests that follow."""
        context.skeleton = self.skeleton
        context.recommendation = self.recommendation


@dataclass(frozen=True)
class CoverageResult:
    """What a rule map does at each layer (``LayerRule`` by name), for the map's fingerprint."""

    fingerprint: str
    layers: dict


@dataclass(frozen=True)
class CoverageRequest:
    """Work out, away from the GUI thread, which rule each layer gets and why."""

    rulemap: RuleMap
    title: str = "Checking the rules"

    def run(self, context: StructureContext, job: Job) -> CoverageResult:
        """Walk the skeleton with the rule map's composite."""
        return CoverageResult(self.rulemap.fingerprint(), coverage(context.skeleton, self.rulemap))


def coverage(skeleton: Any, rulemap: RuleMap) -> dict[str, LayerRule]:
    """Return, per layer of ``skeleton``, the rule ``rulemap`` gives it and why."""
    return {layer.name: layer for layer in rule_coverage(skeleton, rulemap.to_composite())}


@dataclass(frozen=True)
class PresetRequest:
    """Fill every layer with a preset's rules on the structure thread's skeleton.

    Attributes
    ----------
    spec
        The model's ``ModelSpec`` (input bounds for ZBox).
    preset
        The preset composite's name.
    canonizer
        The canonizer set the rule map is for.
    """

    spec: Any
    preset: str
    canonizer: str
    title: str = "Filling in the preset"

    def run(self, context: StructureContext, job: Job) -> RuleMap:
        """Build the preset's rule map (too slow on large models for the GUI thread)."""
        return RuleMap.recommended(
            context.skeleton,
            self.spec,
            self.preset,
            self.canonizer,
            recommendation=context.recommendation,
        )


@dataclass(frozen=True)
class PanelCurves:
    """The perturbation curves and scores of one comparison panel.

    Attributes
    ----------
    morf, lerf
        Explained logit after each removal step (most / least relevant regions first).
    random
        The same for a random order (the baseline): one per image, the very same array for
        every panel of that image, so the plot and the report show one baseline.
    morf_aopc, lerf_aopc, random_aopc
        Areas over the curves.
    mass_accuracy, rank_accuracy
        Localisation scores against the image's object mask, None without a mask.
    """

    morf: np.ndarray
    lerf: np.ndarray
    random: np.ndarray
    morf_aopc: float
    lerf_aopc: float
    random_aopc: float
    mass_accuracy: float | None
    rank_accuracy: float | None


@dataclass(frozen=True)
class EvaluationResult:
    """Curves and scores of every panel, in panel order, and the settings used."""

    panels: tuple[PanelCurves, ...]
    region_size: int
    steps: int
    fill: str = evaluate.DEFAULT_FILL


@dataclass(frozen=True)
class EvaluateRequest:
    """Perturbation curves (and localisation scores with a mask) of comparison panels.

    Attributes
    ----------
    items
        Per panel: the image, its relevance (C, H, W) and the explained class.
    region_size
        Side of the square regions removed per step, in pixels.
    steps
        Removal steps (None: every region, at most 100).
    fill
        How removed regions are filled, one of ``evaluate.FILLS``.
    """

    items: tuple[tuple[Path, np.ndarray, int], ...]
    region_size: int = evaluate.DEFAULT_REGION_SIZE
    steps: int | None = None
    fill: str = evaluate.DEFAULT_FILL
    title: str = "Evaluating"

    def run(self, context: WorkerContext, job: Job) -> EvaluationResult:
        """Perturb every panel's image along its heatmap, one batch per image."""
        loaded = context.require_model()
        by_image: dict[Path, list[int]] = {}
        for position, (path, _, _) in enumerate(self.items):
            by_image.setdefault(path, []).append(position)
        curves: dict[int, PanelCurves] = {}
        steps = 0
        for done, (path, positions) in enumerate(by_image.items()):
            image = context.image(path)
            relevance = np.stack([self.items[i][1] for i in positions])
            targets = [self.items[i][2] for i in positions]
            inputs = image.tensor[None].expand(len(positions), -1, -1, -1)

            def share(fraction: float, done: int = done, name: str = path.name) -> None:
                job.progress((done + fraction) / len(by_image), f"Perturbing {name}")

            result = evaluate.region_perturbation(
                loaded.model,
                inputs,
                relevance,
                targets,
                region_size=self.region_size,
                steps=self.steps,
                fill=self.fill,
                cancel=job.cancelled,
                progress=share,
            )
            steps = result.steps
            mask = evaluate.object_mask(path, loaded.spec)
            scores = None if mask is None else evaluate.localisation_scores(relevance, mask)
            # One random baseline per image: the first panel's random order stands for all.
            baseline, baseline_aopc = result.random[0], float(result.random_aopc[0])
            for row, position in enumerate(positions):
                curves[position] = PanelCurves(
                    result.morf[row],
                    result.lerf[row],
                    baseline,
                    float(result.morf_aopc[row]),
                    float(result.lerf_aopc[row]),
                    baseline_aopc,
                    None if scores is None else float(scores.mass_accuracy[row]),
                    None if scores is None else float(scores.rank_accuracy[row]),
                )
        return EvaluationResult(
            tuple(curves[i] for i in range(len(self.items))), self.region_size, steps, self.fill
        )
