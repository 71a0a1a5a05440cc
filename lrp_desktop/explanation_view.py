"""The main view: the current image with the current explanation over it."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

from .comparison import conservation_note, conservation_tip
from .heatmap_view import CaptionedView
from .session import Session


class ExplanationView(CaptionedView):
    """A captioned heatmap view that follows the session's current image and explanation.

    Parameters
    ----------
    session
        The session observed.
    """

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        for signal in (
            session.display_image_changed,
            session.explanation_changed,
            session.display_changed,
            session.model_changed,
        ):
            signal.connect(self.redraw)
        session.status_changed.connect(self._show_status)
        self.redraw()

    def redraw(self) -> None:
        """Draw the current image, explanation and captions from the session."""
        session = self.session
        display = session.current_display
        explanation = session.explanation
        relevance = None if explanation is None else explanation.relevance[0]
        self.view.draw(display, relevance, session.display)
        self._show_status()

    def _show_status(self) -> None:
        explanation = self.session.explanation
        if explanation is None:
            self.set_caption(self._caption())
        else:
            self.set_caption(
                self._caption(),
                conservation_note(explanation),
                explanation.warnings,
                conservation_tip(explanation),
            )
        self.view.show_message(self._message())

    def _caption(self) -> str:
        session = self.session
        path = session.current_image
        explanation = session.explanation
        if path is None:
            return ""
        if explanation is None:
            return path.name
        target = int(explanation.target[0])
        names = session.model.class_names if session.model is not None else ()
        name = names[target] if target < len(names) else str(target)
        return f"{explanation.method.label()} | {path.name} | class {name}{self._staleness()}"

    def _staleness(self) -> str:
        """Say why the shown explanation is not the one of the current settings (if it is not)."""
        session = self.session
        if session.explanation_is_current:
            return ""
        if session.status.state in ("cancelled", "failed"):
            return f" (outdated: {session.status.text})"
        return " (updating...)"

    def _message(self) -> str:
        session = self.session
        if session.model is None:
            if session.status.state == "running":
                return "Loading the model..."
            return "No model is loaded: choose one (File > Choose model)"
        if session.current_image is None:
            return "Open an image (File > Open) or drop one here"
        if session.current_display is None:
            return "Loading the image..."
        if session.explanation is None:
            status = session.status
            if status.state == "running":
                return f"Computing... {status.fraction * 100:.0f} %"
            if status.state in ("cancelled", "failed"):
                return status.text
        return ""
