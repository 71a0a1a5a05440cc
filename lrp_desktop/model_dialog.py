"""The dialog that chooses a model: a bundled demo, a torchvision classifier, or a file.

The demos are offered at once. torchvision's classifiers are listed by the support checker's thread
(listing them imports torchvision, see :mod:`.support`) and fill in when it is done. Architectures
LRP explains fully carry a check mark, the others a warning sign; the marks come from each
architecture's structure and fill in as that thread finds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QComboBox,
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.demos import DEMOS
from lrp_desktop_core.models import get_spec, pretrained_cache_path

from .support import Support, SupportChecker, classifier_names, known_support

WEIGHT_FILTER = "Weights (*.safetensors *.pt *.pth *.bin *.ckpt);;All files (*)"
FROM_FILE = "(named in the file)"
DEMO_SUPPORT = "fully supported: every operation of the demos runs in a layer with a rule"
LISTING = "listing torchvision's classifiers (importing torchvision)..."


@dataclass(frozen=True)
class ModelChoice:
    """What the user chose; the arguments of ``models.load_model``."""

    source: str
    weights: Path | None = None
    pretrained: bool = False
    seed: int | None = None


def pretrained_status(name: str) -> str:
    """Say whether the pretrained weights of ``name`` are in the cache or must be downloaded."""
    spec = get_spec(name)
    if spec.weights_url is None:
        return "no pretrained weights are published for this model"
    path = pretrained_cache_path(spec)
    return f"in the cache ({path})" if path.is_file() else "will be downloaded (needs internet)"


class ModelDialog(QDialog):
    """Choose a bundled demo, a torchvision classifier or a model file.

    A torchvision classifier comes pretrained, random or from a weights file; a model file names
    its architecture or has it chosen here.

    Parameters
    ----------
    start_folder
        Where the file dialogs open.
    checker
        Lists torchvision's classifiers and finds which architectures are fully supported. Without
        one, the classifiers are listed at once on this thread and none is marked.
    """

    def __init__(
        self,
        start_folder: Path,
        checker: SupportChecker | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a model")
        self.start_folder = start_folder
        self.checker = checker
        self.names: list[str] = []
        self.listing_problem = ""
        style = QApplication.style()
        self.supported_icon = style.standardIcon(QStyle.StandardPixmap.SP_DialogApplyButton)
        self.unsupported_icon = style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)

        self.demo = QRadioButton("A bundled demo (works offline)")
        self.demo.setIcon(self.supported_icon)
        self.demo.setToolTip(DEMO_SUPPORT)
        self.demo_name = QComboBox()
        for name, demo in DEMOS.items():
            self.demo_name.addItem(f"{name}: {demo.description}", name)
        self.torchvision = QRadioButton("A torchvision classifier")
        self.file = QRadioButton("A model or weights file")
        self.kind = QButtonGroup(self)
        for button in (self.demo, self.torchvision, self.file):
            self.kind.addButton(button)
        self.demo.setChecked(True)

        self.architecture = QComboBox()
        self.architecture.setEditable(True)
        self.architecture.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.architecture.lineEdit().setPlaceholderText(LISTING)
        self.pretrained = QRadioButton("ImageNet weights (from the cache, or downloaded)")
        self.random = QRadioButton("Random weights")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setPrefix("seed ")
        self.seed.setToolTip(
            "Random weights are drawn from this seed: the same seed gives the "
            "same weights and heatmaps, and captions and records name it"
        )
        self.own_weights = QRadioButton("Weights from a file:")
        self.weights_group = QButtonGroup(self)
        for button in (self.pretrained, self.random, self.own_weights):
            self.weights_group.addButton(button)
        self.pretrained.setChecked(True)
        self.weights_path = self._path_row()
        self.cache_note = QLabel()
        self.cache_note.setWordWrap(True)
        self.support_note = QLabel()
        self.support_note.setWordWrap(True)
        tv_box = QGroupBox()
        tv_form = QFormLayout(tv_box)
        tv_form.addRow("Architecture:", self.architecture)
        tv_form.addRow("LRP:", self.support_note)
        tv_form.addRow(self.pretrained)
        tv_form.addRow("", self.cache_note)
        tv_form.addRow(self.random, self.seed)
        tv_form.addRow(self.own_weights, self.weights_path)

        self.file_path = self._path_row()
        self.file_architecture = QComboBox()
        self.file_architecture.addItem(FROM_FILE)
        self.file_architecture.setToolTip(
            "The architecture the weights belong to; a safetensors "
            "file written by this program names it itself"
        )
        file_box = QGroupBox()
        file_form = QFormLayout(file_box)
        file_form.addRow("File:", self.file_path)
        file_form.addRow("Architecture:", self.file_architecture)
        file_form.addRow(
            QLabel(
                "A file holding a whole pickled model runs code when loaded; "
                "you will be asked before that happens."
            )
        )

        demo_box = QGroupBox()
        QFormLayout(demo_box).addRow("Model:", self.demo_name)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.demo)
        layout.addWidget(demo_box)
        layout.addWidget(self.torchvision)
        layout.addWidget(tv_box)
        layout.addWidget(self.file)
        layout.addWidget(file_box)
        layout.addWidget(buttons)
        self.architecture.currentTextChanged.connect(self._update_note)
        boxes = {self.demo: demo_box, self.torchvision: tv_box, self.file: file_box}
        self.kind.buttonToggled.connect(lambda *_: self._update_enabled(boxes))
        self._update_enabled(boxes)
        self._update_note()
        if checker is None:
            self._offer_classifiers(classifier_names())
            return
        checker.checked.connect(self._show_support)
        checker.listed.connect(self._offer_classifiers)
        checker.listing_failed.connect(self._show_listing_problem)
        self.finished.connect(self._stop_checking, Qt.ConnectionType.SingleShotConnection)
        self.architecture.currentTextChanged.connect(self._check_first)
        checker.list_classifiers()

    def _offer_classifiers(self, names: Sequence[str]) -> None:
        """Fill both architecture lists with torchvision's classifiers, then have them checked."""
        if self.names:  # listed already (a second announcement)
            return
        self.names = list(names)
        with QSignalBlocker(self.architecture):
            self.architecture.addItems(self.names)
            completer = QCompleter(self.names, self.architecture)
            completer.setFilterMode(Qt.MatchFlag.MatchContains)
            completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
            self.architecture.setCompleter(completer)
            self.architecture.setCurrentText("resnet18" if "resnet18" in self.names else "")
        self.file_architecture.addItems(self.names)
        self._update_note()
        if self.checker is not None:
            self.checker.request([self.architecture.currentText(), *self.names])

    def _show_listing_problem(self, problem: str) -> None:
        """Say why torchvision's classifiers cannot be offered, and offer the other choices."""
        self.listing_problem = problem
        self.architecture.lineEdit().setPlaceholderText("torchvision could not be imported")
        self.torchvision.setEnabled(False)
        self.torchvision.setToolTip(problem)
        if self.torchvision.isChecked():
            self.demo.setChecked(True)
        self._update_note()

    def _path_row(self) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        row.edit = QLineEdit()
        browse = QPushButton("Browse...")
        browse.clicked.connect(lambda: self._browse(row.edit))
        layout.addWidget(row.edit, 1)
        layout.addWidget(browse)
        return row

    def _browse(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a weights file", str(self.start_folder), WEIGHT_FILTER
        )
        if path:
            edit.setText(path)

    @staticmethod
    def _update_enabled(boxes: dict[QRadioButton, QGroupBox]) -> None:
        """Enable the group box of the checked kind of model only."""
        for button, box in boxes.items():
            box.setEnabled(button.isChecked())

    def _update_note(self) -> None:
        if not self.names:
            self.cache_note.setText("")
            self.support_note.setText(self._unlisted_reason())
            self.support_note.setToolTip("")
            return
        name = self.architecture.currentText()
        listed = name in self.names
        self.cache_note.setText(pretrained_status(name) if listed else "unknown architecture")
        support = known_support(name)
        if support is not None:
            mark = "\N{CHECK MARK}" if support.supported else "\N{WARNING SIGN}"
            self.support_note.setText(f"{mark} {support.verdict()}")
            self.support_note.setToolTip(support.tooltip())
            return
        checking = listed and self.checker is not None
        self.support_note.setText("checking the architecture..." if checking else "")
        self.support_note.setToolTip("")

    def _stop_checking(self) -> None:
        """Drop the checks still queued and stop listening (answers found so far are kept)."""
        self.checker.cancel()
        self.checker.checked.disconnect(self._show_support)

    def _check_first(self, name: str) -> None:
        """Have the checker look at ``name`` before the others, unless it already has."""
        if name in self.names and known_support(name) is None:
            self.checker.request([name, *self.names])

    def _show_support(self, support: Support) -> None:
        """Mark ``support.name`` in both architecture lists (icon and tooltip)."""
        icon = self.supported_icon if support.supported else self.unsupported_icon
        tooltip = support.tooltip()
        for combo in (self.architecture, self.file_architecture):
            position = combo.findText(support.name, Qt.MatchFlag.MatchExactly)
            if position < 0:
                continue
            with QSignalBlocker(combo):
                typed = combo.currentText()
                combo.setItemIcon(position, icon)
                combo.setItemData(position, tooltip, Qt.ItemDataRole.ToolTipRole)
                if combo.currentText() != typed:  # Qt shows the current item's text again when
                    combo.setEditText(typed)  # its data changes, over what was typed
        if support.name == self.architecture.currentText():
            self._update_note()

    def _unlisted_reason(self) -> str:
        """Say why no torchvision classifier is offered yet (while ``self.names`` is empty)."""
        if self.listing_problem:
            return (
                f"torchvision could not be imported: {self.listing_problem}. "
                "Install it (pip install torchvision) to explain its classifiers."
            )
        return LISTING

    def choice(self) -> ModelChoice:
        """Return the chosen model, or raise ValueError saying what is missing."""
        if self.demo.isChecked():
            return ModelChoice(self.demo_name.currentData())
        if self.torchvision.isChecked():
            if not self.names:
                raise ValueError(
                    self._unlisted_reason()
                    if self.listing_problem
                    else "torchvision's classifiers are still being listed; choose one "
                    "once they appear"
                )
            name = self.architecture.currentText().strip()
            if name not in self.names:
                raise ValueError(f"{name!r} is not a known architecture; pick one from the list")
            if self.own_weights.isChecked():
                return ModelChoice(name, self._path(self.weights_path))
            if self.random.isChecked():
                return ModelChoice(name, seed=self.seed.value())
            return ModelChoice(name, pretrained=True)
        path = self._path(self.file_path)
        architecture = self.file_architecture.currentText()
        if architecture == FROM_FILE:
            return ModelChoice(str(path))
        return ModelChoice(architecture, path)

    @staticmethod
    def _path(row: QWidget) -> Path:
        text = row.edit.text().strip()
        if not text:
            raise ValueError("no file was chosen; use Browse... to pick one")
        return Path(text).expanduser()
