"""The glue between the session and the worker: what to compute, and what to do with results.

The controller watches the session. Whenever what the main view or a comparison panel should
show changes, it looks the explanation up in the cache and, if it is missing, asks the worker for
it, cancelling the request it replaces. Answers carry their request id; an answer to a request that
was replaced is cached but not shown. Failures become messages through the reporter, and the
session stays usable; once the cause of such a message is gone (the next run succeeds, the
panel is removed), it is withdrawn (:meth:`.Reporter.resolve`). Its :class:`~.auditing.Auditor`
has each new rule map audited on the same worker, ahead of the explanation that uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer

from lrp_desktop_core.composites import COMPOSITES
from lrp_desktop_core.evaluate import DEFAULT_FILL, DEFAULT_REGION_SIZE
from lrp_desktop_core.explain import Method
from lrp_desktop_core.images import IMAGE_SUFFIXES, image_files
from lrp_desktop_core.names import OTHER_METHODS

from .auditing import Auditor
from .cache import ExplainKey
from .reporter import Reporter
from .requests import (
    CoverageRequest,
    CoverageResult,
    EvaluateRequest,
    EvaluationResult,
    ExplainRequest,
    ExplainResult,
    ImageRequest,
    ImageResult,
    LoadModelRequest,
    PresetRequest,
    SetDeviceRequest,
    SkeletonRequest,
    TrustNeeded,
)
from .rule_editing import current_canonizer, preset_rulemap, use_preset
from .session import ModelInfo, PanelSpec, Session
from .settings import Preferences
from .worker import Failure, WorkerHost

MAX_LISTED_IMPORTS = 20


@dataclass
class _Pending:
    """What to do with the answer to one request."""

    on_result: Callable[[Any], None]
    on_failure: Callable[[Failure], None] | None = None
    on_cancel: Callable[[], None] | None = None


class Controller(QObject):
    """Turns session changes into worker requests and worker answers into session changes.

    Parameters
    ----------
    session
        The state observed and updated.
    host
        The model worker thread's host.
    structure
        The host of the thread that checks rule maps against the model's skeleton.
    reporter
        Where messages go.
    preferences
        Where recent files are remembered.
    """

    def __init__(
        self,
        session: Session,
        host: WorkerHost,
        structure: WorkerHost,
        reporter: Reporter,
        preferences: Preferences,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.host = host
        self.structure = structure
        self.reporter = reporter
        self.preferences = preferences
        self._pending: dict[int, _Pending] = {}
        self._main: tuple[int, ExplainKey] | None = None
        self._panels: dict[ExplainKey, int] = {}
        self._failed_panels: set[ExplainKey] = set()  # whose error stands until they go
        self._images: dict[Path, int] = {}
        self._evaluation: int | None = None
        #: The failures reported and not yet put right, by what failed ("main", a panel's key...).
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(0)
        self._refresh_timer.timeout.connect(self.refresh)
        for signal in (
            session.model_changed,
            session.current_image_changed,
            session.rulemap_changed,
            session.method_changed,
            session.target_changed,
            session.device_changed,
            session.comparison_changed,
        ):
            signal.connect(self._refresh_timer.start)
        self._coverage: int | None = None
        self._preset: int | None = None
        # audits a new rule map at once, ahead of the explanation the deferred refresh asks for
        self.auditor = Auditor(session, host, reporter, self)
        session.rulemap_changed.connect(self._check_rules)
        structure.finished.connect(self._on_structure_result)
        structure.failed.connect(self._on_structure_failed)
        structure.cancelled.connect(self._on_structure_cancelled)
        host.finished.connect(self._on_finished)
        host.failed.connect(self._on_failed)
        host.cancelled.connect(self._on_cancelled)
        host.progress.connect(self._on_progress)
        host.busy_changed.connect(self._on_busy_changed)

    # -- commands -----------------------------------------------------------------------
    def load_model(
        self,
        source: str,
        weights: Path | None = None,
        pretrained: bool = False,
        trust: bool = False,
        seed: int | None = None,
    ) -> int:
        """Ask the worker to load a model; the session switches once it is loaded.

        ``seed`` draws random weights reproducibly (a torchvision name without weights).
        """
        self.host.cancel_all()
        request = LoadModelRequest(
            str(source), None if weights is None else Path(weights), pretrained, trust, seed=seed
        )
        self.session.set_status("running", f"Loading {source}")
        return self._submit(request, _Pending(self._on_model_loaded, self._on_model_failed))

    def set_device(self, device: str) -> int:
        """Ask the worker to move the model to ``device``."""
        return self._submit(
            SetDeviceRequest(device), _Pending(self._on_device_set, self._on_device_failed)
        )

    def open_paths(self, paths: Iterable[Path | str]) -> list[Path]:
        """Add image files and the images of folders to the session; return what was added.

        A missing path or a folder without images is reported and skipped; whether a file is a
        readable image shows when it is first shown.
        """
        found: list[Path] = []
        for path in (Path(item).expanduser() for item in paths):
            if not path.exists():
                self.reporter.error(
                    "Could not open a file",
                    f"{path} does not exist.",
                    "Check the path; the file may have been moved or deleted.",
                )
            elif path.is_dir():
                images = image_files(path)
                if not images:
                    self.reporter.error(
                        "No images in the folder",
                        f"{path} holds no files ending in {', '.join(sorted(IMAGE_SUFFIXES))}.",
                        "Choose a folder with images.",
                    )
                found.extend(images)
                self.preferences.set_last_folder("images", path)
            else:
                found.append(path.resolve())
                self.preferences.set_last_folder("images", path)
        if found:
            self.session.add_images(found)
        return found

    def apply_preset(self, preset: str) -> int | None:
        """Fill every layer with ``preset``'s rules, keeping the current canonizer.

        The structure thread builds the rule map (on large models this takes too long for the
        GUI thread); the undoable edit is made when it arrives. Choosing again before then
        replaces the earlier choice, whose rule map is dropped. Returns the request's id, None
        (with a message) when no model is loaded.
        """
        info = self.session.model
        if info is None:
            self.reporter.error("No model to give rules to", "Load a model first.")
            return None
        if self._preset is not None:
            self.structure.cancel(self._preset)
        self._preset = self.structure.submit(
            PresetRequest(info.spec, preset, current_canonizer(self.session))
        )
        return self._preset

    @property
    def building_preset(self) -> bool:
        """True while a chosen preset's rule map is being built."""
        return self._preset is not None

    def cancel(self) -> None:
        """Stop every queued and running computation."""
        self.host.cancel_all()

    def explain_again(self) -> None:
        """Compute what is shown again where it is missing.

        After a cancel or a failure: the main view and every comparison panel.
        """
        self._main = None
        self.session.panel_states.clear()
        self.refresh()

    def add_panel(self, method: Method, image: Path | None = None) -> bool:
        """Add a comparison panel for ``method`` on ``image`` (default: the current image)."""
        image = image if image is not None else self.session.current_image
        if image is None:
            self.reporter.error("Nothing to compare", "No image is open.", "Open an image first.")
            return False
        self.session.add_panel(PanelSpec(method, image))
        return True

    def compare(self, entry: str, image: Path | None = None) -> bool:
        """Add a comparison panel for ``entry`` and return whether one was added.

        Parameters
        ----------
        entry
            "current" (the main view's method and rules), a preset composite's name (filled in
            for the model with the current canonizer), or a method kind such as "gradient".
        image
            The image; the current one when None.
        """
        if self.session.model is None:
            self.reporter.error(
                "Nothing to compare", "No model is loaded.", "Choose a model first."
            )
            return False
        try:
            method = self._comparison_method(entry)
        except (ValueError, TypeError, RuntimeError) as error:
            self.reporter.error(f"Cannot compare {entry}", str(error))
            return False
        return self.add_panel(method, image)

    def _comparison_method(self, entry: str) -> Method:
        session = self.session
        if entry == "current":
            method = session.current_method()
            if method is None:
                raise ValueError("this model has no rule map for LRP")
            return method
        if entry in COMPOSITES:
            canonizer = session.rulemap.canonizer if session.rulemap is not None else None
            return Method("lrp", preset_rulemap(session.model, entry, canonizer))
        if entry in OTHER_METHODS:
            return Method(entry, None, session.method_params.get(entry, {}))
        others = ", ".join(OTHER_METHODS)
        raise ValueError(
            f"{entry!r} is neither a preset nor a method; use 'current', a preset "
            f"({', '.join(COMPOSITES)}) or a method ({others})"
        )

    def evaluate(
        self,
        region_size: int = DEFAULT_REGION_SIZE,
        steps: int | None = None,
        fill: str = DEFAULT_FILL,
    ) -> int | None:
        """Compute perturbation curves of every comparison panel once all have their heatmap.

        Parameters
        ----------
        region_size
            Side of the square regions removed per step, in pixels.
        steps
            Removal steps; every region (at most 100 steps) when None.
        fill
            How removed regions are filled, one of ``evaluate.FILLS``.
        """
        items = []
        for panel in self.session.comparison.panels:
            result = self.session.panel_result(panel)
            if result is None:
                self.reporter.error(
                    "Cannot evaluate yet",
                    f"The panel {panel.caption()} has no heatmap yet.",
                    "Wait until every panel is shown, then evaluate again.",
                )
                return None
            items.append((panel.image, result.relevance[0], int(result.target[0])))
        if not items:
            self.reporter.error(
                "Nothing to evaluate",
                "The comparison has no panels.",
                "Add panels (Compare menu), then evaluate.",
            )
            return None
        if self._evaluation is not None:
            self.host.cancel(self._evaluation)
        self.session.set_evaluation(None)
        self._evaluation = self._submit(
            EvaluateRequest(tuple(items), region_size, steps, fill), _Pending(self._on_evaluated)
        )
        return self._evaluation

    # -- deciding what to compute -------------------------------------------------------
    def refresh(self) -> None:
        """Make sure the main view and every panel have (or get) their explanation."""
        self._refresh_timer.stop()
        self._refresh_main()
        self._refresh_panels()

    def _refresh_main(self) -> None:
        session = self.session
        path = session.current_image
        key = session.current_key()
        if path is None or key is None:
            self._drop_main()
            return
        if session.current_display is None:
            self._request_image(path)
            return
        cached = session.cache.get(key)
        if cached is not None:
            self._drop_main()
            self._resolve("main")
            session.set_explanation(cached, key)
            session.set_status("idle")
            return
        if self._main is not None and self._main[1] == key:
            return
        self._drop_main()
        request = ExplainRequest(key, path, session.current_method(), session.target)
        request_id = self._submit(
            request, _Pending(self._on_main_result, self._on_main_failed, self._on_main_cancelled)
        )
        self._main = (request_id, key)
        session.set_status("running", request.method.label(), 0.0)

    def _drop_main(self) -> None:
        if self._main is not None:
            self.host.cancel(self._main[0])
            self._main = None

    def _request_image(self, path: Path) -> None:
        if path not in self._images:
            self._images[path] = self._submit(
                ImageRequest(path),
                _Pending(self._on_image, lambda failure: self._on_image_failed(path, failure)),
            )

    def _refresh_panels(self) -> None:
        session = self.session
        shown = {session.panel_key(panel) for panel in session.comparison.panels}
        for key in self._failed_panels - shown:  # a removed or changed panel's error is moot
            self._resolve(("panel", key))
        self._failed_panels &= shown
        wanted: dict[ExplainKey, PanelSpec] = {}
        for panel in session.comparison.panels:
            key = session.panel_key(panel)
            if key is not None and key not in session.cache:
                wanted[key] = panel
        for key in list(self._panels):
            if key not in wanted:
                self._withdraw(self._panels.pop(key))
        for key, panel in wanted.items():
            if key not in self._panels and key not in session.panel_states:
                request = ExplainRequest(key, panel.image, panel.method, session.target)
                self._panels[key] = self._submit(
                    request,
                    _Pending(
                        self._on_panel_result,
                        lambda failure, key=key: self._on_panel_failed(key, failure),
                        lambda key=key: session.set_panel_state(key, "cancelled"),
                    ),
                )

    def _withdraw(self, request_id: int) -> None:
        """Cancel a request the app no longer needs because its settings changed.

        Unlike the user's cancel, this one is not shown, so the result is asked for again once
        it is wanted.
        """
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.on_cancel = None
        self.host.cancel(request_id)

    def retry_panel(self, index: int) -> None:
        """Compute comparison panel ``index`` again after a cancel or a failure."""
        key = self.session.panel_key(self.session.comparison.panels[index])
        if key is not None:
            self.session.set_panel_state(key, None)
            self._refresh_panels()

    def _on_panel_failed(self, key: ExplainKey, failure: Failure) -> None:
        self.session.set_panel_state(key, f"failed: {failure.title}")
        self._failed_panels.add(key)
        self._report(("panel", key), failure)

    # -- answers ------------------------------------------------------------------------
    def _submit(self, request: Any, pending: _Pending) -> int:
        request_id = self.host.submit(request)
        self._pending[request_id] = pending
        return request_id

    def _on_finished(self, request_id: int, result: object) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.on_result(result)

    def _on_failed(self, request_id: int, failure: Failure) -> None:
        if request_id not in self._pending:
            return  # the auditor's: it reports its own failures
        pending = self._pending.pop(request_id)
        self._forget(request_id)
        if pending.on_failure is not None:
            pending.on_failure(failure)
        else:
            self.reporter.error(failure.title, failure.text, failure.hint)

    def _report(self, cause: Any, failure: Failure) -> None:
        """Report ``failure`` as an error that stays until :meth:`_resolve` (``cause``)."""
        self.reporter.error(failure.title, failure.text, failure.hint, cause=cause)

    def _resolve(self, cause: Any) -> None:
        """Withdraw the error about ``cause`` (if any): what failed has now worked."""
        self.reporter.resolve(cause)

    def _on_cancelled(self, request_id: int) -> None:
        pending = self._pending.pop(request_id, None)
        self._forget(request_id)
        if pending is not None and pending.on_cancel is not None:
            pending.on_cancel()

    def _forget(self, request_id: int) -> None:
        """Drop bookkeeping of a request that ended without a result."""
        self._panels = {key: rid for key, rid in self._panels.items() if rid != request_id}
        self._images = {path: rid for path, rid in self._images.items() if rid != request_id}
        if self._evaluation == request_id:
            self._evaluation = None

    def _on_progress(self, request_id: int, fraction: float, text: str) -> None:
        self.session.set_status("running", text, fraction)

    def _on_busy_changed(self, busy: bool) -> None:
        if not busy and self.session.status.state == "running":
            self.session.set_status("idle")

    def _on_model_loaded(self, result: ModelInfo | TrustNeeded) -> None:
        if isinstance(result, TrustNeeded):
            self._ask_trust(result)
            return
        if result.rulemap_problem is not None:
            self.reporter.error(
                "The model cannot be explained with LRP rules",
                result.rulemap_problem,
                "Gradient-based methods may still work; choose another model for LRP.",
            )
        self._images.clear()
        self._panels.clear()
        self._main = None
        if self._preset is not None:  # built for the previous model
            self.structure.cancel(self._preset)
            self._preset = None
        self.structure.submit(SkeletonRequest(result.structure_skeleton, result.recommendation))
        self._resolve("model")
        self.session.set_model(result, result.rulemap)
        self.reporter.info(
            f"Loaded {result.title}", f"{result.n_parameters:,} parameters on {result.device}"
        )

    def _on_model_failed(self, failure: Failure) -> None:
        self._report("model", failure)
        self.session.set_status("failed", failure.text)

    def _ask_trust(self, needed: TrustNeeded) -> None:
        imports = list(needed.imports[:MAX_LISTED_IMPORTS])
        more = len(needed.imports) - len(imports)
        listing = "\n".join(f"  {name}" for name in imports) or "  (nothing named)"
        if more > 0:
            listing += f"\n  ... and {more} more"
        text = (
            f"{needed.request.weights or needed.request.source} is not a plain weights file: "
            "loading it runs code from the file. Loading it imports:\n"
            f"{listing}\n\nLoad it only if it comes from a source you trust. Load it?"
        )
        if self.reporter.confirm("Run code from this model file?", text):
            request = needed.request
            self.load_model(
                request.source, request.weights, request.pretrained, trust=True, seed=request.seed
            )
        else:
            self.reporter.warning("The model file was not loaded", needed.text)

    def _check_rules(self) -> None:
        """Have the structure thread work out what the new rule map does at each layer."""
        if self._coverage is not None:
            self.structure.cancel(self._coverage)
        rulemap = self.session.rulemap
        self._coverage = (
            None if rulemap is None else self.structure.submit(CoverageRequest(rulemap))
        )

    def _on_structure_result(self, request_id: int, result: object) -> None:
        if isinstance(result, CoverageResult):
            if request_id == self._coverage:
                self._coverage = None
            self.session.set_coverage(result.fingerprint, result.layers)
        elif request_id == self._preset:
            self._preset = None
            if result.canonizer != current_canonizer(self.session):
                self.apply_preset(result.preset)  # the canonizer changed meanwhile
            else:
                use_preset(self.session, result)

    def _on_structure_failed(self, request_id: int, failure: Failure) -> None:
        if request_id == self._preset:
            self._preset = None
        self.reporter.error(failure.title, failure.text, failure.hint)

    def _on_structure_cancelled(self, request_id: int) -> None:
        if request_id == self._preset:
            self._preset = None

    def _on_device_set(self, device: str) -> None:
        self._resolve("device")
        self.session.set_device(device)
        self.preferences.device = device
        self.reporter.info(f"Computing on {device}")

    def _on_device_failed(self, failure: Failure) -> None:
        self._report("device", failure)
        self.session.device_changed.emit()  # let the device chooser show the real device again

    def _on_image(self, result: ImageResult) -> None:
        self._images.pop(result.path, None)
        self.session.set_display_image(result.path, result.display)
        self.preferences.add_recent_file(result.path)
        self._refresh_timer.start()

    def _on_image_failed(self, path: Path, failure: Failure) -> None:
        self.reporter.error(failure.title, failure.text, failure.hint)
        self.session.remove_image(path)

    def _store(self, result: ExplainResult) -> None:
        self.session.cache.put(result.key, result.explanation)
        resolved = int(result.explanation.target[0])
        if result.key.target is None:
            key = ExplainKey(
                result.key.model, result.key.image, result.key.method, resolved, result.key.device
            )
            self.session.cache.put(key, result.explanation)
        if result.path not in self.session.displays:
            self.session.set_display_image(result.path, result.display)

    def _on_main_result(self, result: ExplainResult) -> None:
        self._store(result)
        if self._main is None or self._main[1] != result.key:
            return  # a stale answer: cached, not shown
        self._main = None
        self._resolve("main")
        self.session.set_explanation(result.explanation, result.key)
        self.session.set_status("idle")
        self._refresh_panels()

    def _on_main_failed(self, failure: Failure) -> None:
        self._main = None
        self._report("main", failure)
        self.session.set_status("failed", failure.text)

    def _on_main_cancelled(self) -> None:
        if self._main is None or self._main[0] in self._pending:
            return  # replaced by a newer request: nothing to say
        self._main = None
        self.session.set_status("cancelled", "Cancelled: press F5 to explain again")

    def _on_panel_result(self, result: ExplainResult) -> None:
        self._panels.pop(result.key, None)
        self._resolve(("panel", result.key))
        self._store(result)
        self.session.panel_results_changed.emit()

    def _on_evaluated(self, result: EvaluationResult) -> None:
        self._evaluation = None
        self.session.set_evaluation(result)
