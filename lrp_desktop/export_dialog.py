"""The export dialog: what to write (view, figure, raw relevance, report) and where."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.export import FIGURE_SUFFIXES

#: Export kinds with their labels; "raw" writes three files sharing one stem.
EXPORT_KINDS = {
    "view": "Current view as PNG",
    "figure": "Comparison as a captioned figure",
    "raw": "Raw relevance (.npy) with its JSON record and overlay PNG",
    "report": "Comparison report (PDF: inputs, heatmaps, curves, scores, settings)",
}


@dataclass(frozen=True)
class ExportChoice:
    """What to export and where: a file, or for "raw" the path of the files without suffix."""

    kind: str
    path: Path


def with_suffix(path: Path, kind: str, figure_suffix: str) -> Path:
    """Give ``path`` the suffix its kind needs ("raw" takes none: it names three files)."""
    if kind == "raw":
        return path.with_suffix("") if path.suffix.lower() in (".npy", ".json", ".png") else path
    suffix = {"view": ".png", "report": ".pdf"}.get(kind, figure_suffix)
    return path if path.suffix.lower() == suffix else path.with_suffix(suffix)


class ExportDialog(QDialog):
    """Choose an export kind, a figure format and a destination.

    Parameters
    ----------
    folder
        The folder offered first.
    stem
        The file name offered (without suffix).
    has_comparison
        Whether comparison exports make sense (there are panels).
    """

    def __init__(
        self, folder: Path, stem: str, has_comparison: bool, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.buttons_by_kind: dict[str, QRadioButton] = {}
        group = QButtonGroup(self)
        layout = QVBoxLayout(self)
        for kind, label in EXPORT_KINDS.items():
            button = QRadioButton(label)
            button.setEnabled(has_comparison or kind in ("view", "raw"))
            group.addButton(button)
            layout.addWidget(button)
            self.buttons_by_kind[kind] = button
        self.buttons_by_kind["view"].setChecked(True)
        self.format_box = QComboBox()
        self.format_box.addItems(list(FIGURE_SUFFIXES))
        self.path_edit = QLineEdit(str(folder / stem))
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QWidget()
        row_layout = QHBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.path_edit, 1)
        row_layout.addWidget(browse)
        form = QFormLayout()
        form.addRow("Figure format:", self.format_box)
        form.addRow("Save to:", row)
        layout.addLayout(form)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def kind(self) -> str:
        """Return the chosen export kind (a key of :data:`EXPORT_KINDS`)."""
        return next(kind for kind, button in self.buttons_by_kind.items() if button.isChecked())

    def _browse(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Export to file", self.path_edit.text())
        if chosen:
            self.path_edit.setText(chosen)

    def choice(self) -> ExportChoice:
        """Return the chosen kind and destination (with the right suffix)."""
        kind = self.kind()
        path = Path(self.path_edit.text().strip()).expanduser()
        return ExportChoice(kind, with_suffix(path, kind, self.format_box.currentText()))
