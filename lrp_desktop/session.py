"""The state of one viewing session, observed by every widget.

The :class:`Session` holds what the user is looking at: the model, the images, the rule
assignment (and what the audit of its relevance path found), the explained class, the method, the
look of the heatmap, the comparison panels and the explanations computed so far. Widgets read it
and change it through its setters; each setter emits a signal, so every observer redraws. Widgets
never talk to each other directly, and nothing here touches the model itself (that lives in the
worker thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from lrp_desktop_core.explain import Method
from lrp_desktop_core.image import DEFAULT_CLIP_PERCENTILE
from lrp_desktop_core.names import COLOUR_MAPS, HEATMAP_MODES, METHODS, OVERLAY_STYLES

from .cache import ExplainKey, ExplanationCache, explain_key
from .model_info import ModelInfo

#: How the heatmap is shown: the input alone, the coloured relevance alone, both blended, or the
#: three in one row.
LAYERS = ("input", "heatmap", "overlay", "side by side")


@dataclass(frozen=True)
class DisplaySettings:
    """How relevance is drawn; changing these never recomputes relevance.

    Attributes
    ----------
    cmap
        Colour map name (a key of ``cmap.CMAPS``, see ``names.COLOUR_MAPS``).
    opacity
        Heatmap opacity over the image in overlay mode, 0 to 1.
    mode
        One of ``names.HEATMAP_MODES``.
    clip_percentile
        Percentile of absolute relevance mapped to the ends of the colour scale (None: the
        largest value), to keep a few extreme pixels from washing out the rest.
    layer
        One of :data:`LAYERS`.
    overlay
        How the overlay lays the heatmap over the image, one of ``names.OVERLAY_STYLES``.
    """

    cmap: str = COLOUR_MAPS.default
    opacity: float = 0.6
    mode: str = "signed"
    clip_percentile: float | None = DEFAULT_CLIP_PERCENTILE
    layer: str = "overlay"
    overlay: str = OVERLAY_STYLES.default


@dataclass(frozen=True)
class PanelSpec:
    """One comparison panel: a method (with its rules) on an image.

    Attributes
    ----------
    method
        The ``explain.Method`` to show.
    image
        The image file.
    """

    method: Any
    image: Path

    def caption(self) -> str:
        """Return the panel's caption: the method and the image's file name."""
        return f"{self.method.label()} | {self.image.name}"


@dataclass
class Status:
    """What the main view's computation is doing ("idle", "running", "cancelled", "failed")."""

    state: str = "idle"
    text: str = ""
    fraction: float = 0.0


@dataclass
class ComparisonState:
    """The comparison view's panels and scale mode."""

    panels: list[PanelSpec] = field(default_factory=list)
    shared_scale: bool = True


class Session(QObject):
    """Everything the user is looking at, with a signal per kind of change."""

    model_changed = Signal()
    images_changed = Signal()
    current_image_changed = Signal()
    display_image_changed = Signal()
    rulemap_changed = Signal()
    coverage_changed = Signal()
    audit_changed = Signal()
    method_changed = Signal()
    target_changed = Signal()
    device_changed = Signal()
    display_changed = Signal()
    explanation_changed = Signal()
    status_changed = Signal()
    comparison_changed = Signal()
    scale_changed = Signal()
    panel_results_changed = Signal()
    evaluation_changed = Signal()
    layer_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model: ModelInfo | None = None
        self.images: list[Path] = []
        self.current_index: int = -1
        self.displays: dict[Path, np.ndarray] = {}
        self.rulemap: Any = None
        self.coverage: dict[str, Any] = {}
        self.coverage_fingerprint: str | None = None
        self.audits: dict[str, tuple[Any, ...]] = {}
        self.audit_fingerprint: str | None = None
        self.method_kind: str = "lrp"
        self.method_params: dict[str, dict[str, Any]] = {}
        self.target: int | None = None
        self.device: str = "cpu"
        self.display = DisplaySettings()
        self.cache = ExplanationCache()
        #: Why a panel's explanation is missing ("cancelled", "failed: ..."), by its cache key.
        self.panel_states: dict[ExplainKey, str] = {}
        self.explanation: Any = None
        self.explanation_key: ExplainKey | None = None
        self.status = Status()
        self.comparison = ComparisonState()
        self.evaluation: Any = None
        self.layer: str | None = None
        self.undo_stack = QUndoStack(self)

    # -- model --------------------------------------------------------------------------
    def set_model(self, info: ModelInfo, rulemap: Any) -> None:
        """Switch to a newly loaded model with its starting rule map; old results are dropped."""
        self.model = info
        self.device = info.device
        self.displays.clear()
        self.cache.clear()
        self.explanation = None
        self.explanation_key = None
        self.target = None
        self.rulemap = rulemap
        self.coverage, self.coverage_fingerprint = {}, None
        self.audits, self.audit_fingerprint = {}, None
        self.undo_stack.clear()
        self.comparison.panels = []
        self.evaluation = None
        self.layer = None
        self.model_changed.emit()
        self.rulemap_changed.emit()
        self.audit_changed.emit()
        self.target_changed.emit()
        self.comparison_changed.emit()
        self.evaluation_changed.emit()
        self.explanation_changed.emit()
        self.display_image_changed.emit()

    def set_device(self, device: str) -> None:
        """Record the device the worker moved the model to."""
        if device != self.device:
            self.device = device
            if self.model is not None:
                self.model = replace(self.model, device=device)
            self.device_changed.emit()

    # -- images -------------------------------------------------------------------------
    @property
    def current_image(self) -> Path | None:
        """The image shown in the main view, or None."""
        if 0 <= self.current_index < len(self.images):
            return self.images[self.current_index]
        return None

    def add_images(self, paths: list[Path], make_current: bool = True) -> None:
        """Append ``paths`` (skipping ones already listed) and show the first of them."""
        known = set(self.images)
        fresh = [Path(path) for path in paths if Path(path) not in known]
        self.images.extend(fresh)
        if fresh:
            self.images_changed.emit()
        if make_current and paths:
            self.set_current_image(self.images.index(Path(paths[0])))

    def remove_image(self, path: Path) -> None:
        """Drop ``path`` from the list (after it failed to load, say)."""
        if path not in self.images:
            return
        index = self.images.index(path)
        current = self.current_image
        self.images.remove(path)
        self.displays.pop(path, None)
        self.images_changed.emit()
        if current == path:
            self.current_index = min(index, len(self.images) - 1)
            self._current_changed()
        elif current is not None:
            self.current_index = self.images.index(current)

    def set_current_image(self, index: int) -> None:
        """Show the image at ``index`` of :attr:`images`."""
        if not 0 <= index < len(self.images):
            raise IndexError(f"no image at position {index}; {len(self.images)} are open")
        if index != self.current_index:
            self.current_index = index
            self._current_changed()

    def _current_changed(self) -> None:
        self.explanation = None
        self.explanation_key = None
        self.current_image_changed.emit()
        self.display_image_changed.emit()
        self.explanation_changed.emit()

    def set_display_image(self, path: Path, display: np.ndarray) -> None:
        """Store the model's view of ``path`` (H, W, 3 uint8)."""
        self.displays[path] = display
        if path == self.current_image:
            self.display_image_changed.emit()

    @property
    def current_display(self) -> np.ndarray | None:
        """The current image as the model sees it, once loaded."""
        path = self.current_image
        return self.displays.get(path) if path is not None else None

    # -- what is explained --------------------------------------------------------------
    def set_layer(self, layer: str | None) -> None:
        """Look inside ``layer`` (a module name of the canonized model) in the layer view."""
        if layer != self.layer:
            self.layer = layer
            self.layer_changed.emit()

    def set_rulemap(self, rulemap: Any) -> None:
        """Replace the rule map (the undo stack's commands call this; see :mod:`.undo`)."""
        self.rulemap = rulemap
        self.rulemap_changed.emit()

    def set_coverage(self, fingerprint: str, coverage: dict[str, Any]) -> None:
        """Store what the rule map with ``fingerprint`` does at each layer.

        ``coverage`` holds a ``LayerRule`` by layer name, computed in the background; an answer
        for an older rule map is kept until the current one arrives.
        """
        self.coverage, self.coverage_fingerprint = coverage, fingerprint
        self.coverage_changed.emit()

    @property
    def coverage_is_current(self) -> bool:
        """True when :attr:`coverage` belongs to the current rule map."""
        return self.rulemap is not None and self.coverage_fingerprint == self.rulemap.fingerprint()

    def set_audit(self, fingerprint: str, findings: tuple[Any, ...]) -> None:
        """Show what the audit of the relevance path found for the rule map with ``fingerprint``.

        ``findings`` are ``audit.AuditFinding`` objects, empty when every operation has a rule.
        Findings are kept per rule map for the current model, so an undo finds them again; the
        shown ones stay until those of the next rule map arrive.
        """
        self.audits[fingerprint] = tuple(findings)
        self.audit_fingerprint = fingerprint
        self.audit_changed.emit()

    @property
    def audit(self) -> tuple[Any, ...]:
        """The findings shown (empty before the first audit of a model arrives)."""
        return self.audits.get(self.audit_fingerprint, ())

    @property
    def audit_is_current(self) -> bool:
        """True when :attr:`audit` belongs to the current rule map."""
        return self.rulemap is not None and self.audit_fingerprint == self.rulemap.fingerprint()

    def set_method_kind(self, kind: str) -> None:
        """Choose the method of the main view (a name in ``names.METHODS``)."""
        if kind not in METHODS:
            raise ValueError(f"unknown method {kind!r}; choose one of {METHODS.choices()}")
        if kind != self.method_kind:
            self.method_kind = kind
            self.method_changed.emit()

    def set_method_params(self, kind: str, params: dict[str, Any]) -> None:
        """Set the settings of a non-LRP method (SmoothGrad's noise, Occlusion's window, ...)."""
        self.method_params[kind] = dict(params)
        if kind == self.method_kind:
            self.method_changed.emit()

    def set_target(self, target: int | None) -> None:
        """Explain class ``target``, or the top class when None."""
        if target is not None and self.model is not None:
            count = len(self.model.class_names)
            if not 0 <= target < count:
                raise ValueError(f"class {target} does not exist; the model has {count} classes")
        if target != self.target:
            self.target = target
            self.target_changed.emit()

    def current_method(self) -> Any:
        """Return the ``explain.Method`` of the main view, or None without a rule map."""
        if self.method_kind == "lrp":
            return None if self.rulemap is None else Method("lrp", self.rulemap)
        return Method(self.method_kind, None, self.method_params.get(self.method_kind, {}))

    def key_for(self, path: Path, method: Any, target: int | None = None) -> ExplainKey | None:
        """Return the cache key of explaining ``path`` with ``method``, or None without model."""
        if self.model is None or method is None:
            return None
        return explain_key(self.model.key, path, method, target, self.device)

    def current_key(self) -> ExplainKey | None:
        """Return the cache key of the main view's explanation (None: nothing to explain)."""
        path = self.current_image
        if path is None:
            return None
        return self.key_for(path, self.current_method(), self.target)

    # -- results ------------------------------------------------------------------------
    def set_explanation(self, explanation: Any, key: ExplainKey | None = None) -> None:
        """Show ``explanation`` (computed for ``key``), or nothing, in the main view."""
        self.explanation = explanation
        self.explanation_key = None if explanation is None else key
        self.explanation_changed.emit()

    @property
    def explanation_is_current(self) -> bool:
        """True when the shown explanation belongs to the current settings."""
        return self.explanation is not None and self.explanation_key == self.current_key()

    def set_status(self, state: str, text: str = "", fraction: float = 0.0) -> None:
        """Report what the main computation is doing."""
        self.status = Status(state, text, fraction)
        self.status_changed.emit()

    def set_display(self, **changes: Any) -> None:
        """Change how heatmaps look (fields of :class:`DisplaySettings`)."""
        display = replace(self.display, **changes)
        if display.mode not in HEATMAP_MODES:
            raise ValueError(
                f"unknown mode {display.mode!r}; choose one of {HEATMAP_MODES.choices()}"
            )
        if display.layer not in LAYERS:
            raise ValueError(f"unknown layer {display.layer!r}; choose one of {', '.join(LAYERS)}")
        if display.overlay not in OVERLAY_STYLES:
            raise ValueError(
                f"unknown overlay style {display.overlay!r}; choose one of "
                f"{OVERLAY_STYLES.choices()}"
            )
        if display != self.display:
            self.display = display
            self.display_changed.emit()

    # -- comparison ---------------------------------------------------------------------
    def add_panel(self, panel: PanelSpec) -> None:
        """Add a comparison panel (ignored if the same one is already there)."""
        if panel not in self.comparison.panels:
            self.comparison.panels.append(panel)
            self.evaluation = None
            self.comparison_changed.emit()
            self.evaluation_changed.emit()

    def remove_panel(self, index: int) -> None:
        """Remove the comparison panel at ``index``."""
        del self.comparison.panels[index]
        self.evaluation = None
        self.comparison_changed.emit()
        self.evaluation_changed.emit()

    def clear_panels(self) -> None:
        """Remove every comparison panel."""
        self.comparison.panels = []
        self.evaluation = None
        self.comparison_changed.emit()
        self.evaluation_changed.emit()

    def set_shared_scale(self, shared: bool) -> None:
        """Use one colour scale for all panels (True) or one per panel."""
        if shared != self.comparison.shared_scale:
            self.comparison.shared_scale = shared
            self.scale_changed.emit()

    def panel_key(self, panel: PanelSpec) -> ExplainKey | None:
        """Return the cache key of a comparison panel's explanation."""
        return self.key_for(panel.image, panel.method, self.target)

    def set_panel_state(self, key: ExplainKey, state: str | None) -> None:
        """Say why the explanation of ``key`` is missing (None: it is being computed)."""
        if state is None:
            self.panel_states.pop(key, None)
        else:
            self.panel_states[key] = state
        self.panel_results_changed.emit()

    def panel_state(self, panel: PanelSpec) -> str | None:
        """Return why a panel's explanation is missing ("cancelled", ...), None if computing."""
        key = self.panel_key(panel)
        return None if key is None else self.panel_states.get(key)

    def panel_result(self, panel: PanelSpec) -> Any | None:
        """Return a panel's explanation if it has been computed."""
        key = self.panel_key(panel)
        return None if key is None else self.cache.get(key)

    def set_evaluation(self, evaluation: Any) -> None:
        """Store the comparison's evaluation (curves and scores), or None."""
        self.evaluation = evaluation
        self.evaluation_changed.emit()
