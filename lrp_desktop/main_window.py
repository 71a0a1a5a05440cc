"""The main window: views in the middle, images on the left, prediction and rules on the right.

The window only composes widgets and connects the commands of :class:`~.actions.Actions` to the
controller, the session and the file dialogs; widgets observe the session and never call each
other.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.cmap import CMAPS
from lrp_desktop_core.images import IMAGE_SUFFIXES
from lrp_desktop_core.names import METHODS, OTHER_METHODS, PRESETS

from . import __version__
from .actions import Actions
from .choices import add_catalogue_actions
from .comparison import ComparisonView
from .controller import Controller
from .display_controls import DisplayControls
from .explanation_view import ExplanationView
from .export_dialog import ExportDialog
from .exporting import (
    PLOT_SIZE,
    ExportError,
    copy_view,
    qimage_to_array,
    safe_stem,
    save_comparison_figure,
    save_comparison_report,
    save_current_explanation,
    save_view,
)
from .heatmap_view import HoverInfo
from .image_list import ImageList
from .layer_view import LayerView
from .message_bar import MessageBar
from .method_panel import MethodPanel
from .model_dialog import ModelDialog
from .prediction_panel import PredictionPanel
from .reporter import Message, Reporter
from .rule_editing import load_rules, save_rules
from .rules_panel import RulesPanel
from .session import Session
from .settings import Preferences
from .support import SupportChecker

IMAGE_FILTER = "Images ({});;All files (*)".format(" ".join(f"*{s}" for s in IMAGE_SUFFIXES))
RULES_FILTER = "Rule assignments (*.json);;All files (*)"
MAIN_TAB, COMPARISON_TAB = 0, 1


class MainWindow(QMainWindow):
    """The viewer's window.

    Parameters
    ----------
    session, controller, reporter, preferences
        The application's state, its link to the worker, its message channel and its stored
        preferences.
    support
        Finds which architectures the model dialog marks as fully supported.
    """

    def __init__(
        self,
        session: Session,
        controller: Controller,
        reporter: Reporter,
        preferences: Preferences,
        support: SupportChecker,
    ) -> None:
        super().__init__()
        self.session = session
        self.controller = controller
        self.reporter = reporter
        self.preferences = preferences
        self.support = support
        self.setWindowTitle("lrp-desktop")
        self.setAcceptDrops(True)
        self.actions = Actions(
            self,
            session.undo_stack.createUndoAction(self, "&Undo"),
            session.undo_stack.createRedoAction(self, "&Redo"),
        )
        self._build_central()
        self._build_docks()
        self._build_menus()
        self._build_toolbars()
        self._build_status_bar()
        self._connect_actions()
        reporter.reported.connect(self._show_message)
        reporter.withdrawn.connect(self.message_bar.withdraw)
        self.comparison.retry_requested.connect(controller.retry_panel)
        session.display_changed.connect(self._on_display_changed)
        session.comparison_changed.connect(self._update_enabled)
        session.model_changed.connect(self._on_model_changed)
        session.status_changed.connect(self._show_status)
        session.scale_changed.connect(
            lambda: self.actions.shared_scale.setChecked(session.comparison.shared_scale)
        )
        controller.host.busy_changed.connect(self._show_busy)
        self._update_enabled()
        self._restore_preferences()

    # -- layout -------------------------------------------------------------------------
    def _build_central(self) -> None:
        self.message_bar = MessageBar()
        self.main_view = ExplanationView(self.session)
        self.comparison = ComparisonView(self.session)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.main_view, "Explanation")
        self.tabs.addTab(self.comparison, "Comparison")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.message_bar)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

    def _build_docks(self) -> None:
        self.image_list = ImageList(self.session)
        self.prediction = PredictionPanel(self.session)
        self.method_panel = MethodPanel(self.session, self.controller.set_device)
        self.rules_panel = RulesPanel(
            self.session, self.reporter, self.actions.apply_rule, self.controller.apply_preset
        )
        self.layer_view = LayerView(self.session, self.controller.host)
        self.layer_view.reference_folder_chosen.connect(self.preferences.set_reference_folder)
        self.rules_panel.tree.selectionModel().selectionChanged.connect(self._select_layer)
        self.docks: dict[str, QDockWidget] = {}
        for name, title, widget, area in (
            ("images", "Images", self.image_list, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("prediction", "Prediction", self.prediction, Qt.DockWidgetArea.LeftDockWidgetArea),
            (
                "method",
                "Method and device",
                self.method_panel,
                Qt.DockWidgetArea.RightDockWidgetArea,
            ),
            ("rules", "Rules per layer", self.rules_panel, Qt.DockWidgetArea.RightDockWidgetArea),
            ("layer", "Layer", self.layer_view, Qt.DockWidgetArea.BottomDockWidgetArea),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock-{name}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[name] = dock
        layer_dock = self.docks["layer"]
        layer_dock.hide()  # opened from View > Layer: selecting layers for rules stays free
        layer_dock.toggleViewAction().setShortcut("Ctrl+L")
        layer_dock.toggleViewAction().setToolTip(
            "Look inside the layer selected in the rules tree: its channels and their heatmaps"
        )
        self.resizeDocks(
            [self.docks["rules"], self.docks["images"]], [440, 210], Qt.Orientation.Horizontal
        )
        self.resizeDocks(
            [self.docks["method"], self.docks["rules"]], [110, 700], Qt.Orientation.Vertical
        )
        self.resizeDocks(
            [self.docks["images"], self.docks["prediction"]], [400, 300], Qt.Orientation.Vertical
        )

    def _select_layer(self) -> None:
        """Look inside the layer (or module) selected alone in the rules tree."""
        rows = self.rules_panel.tree.selectionModel().selectedRows()
        if len(rows) == 1 and self.rules_panel.model.node(rows[0]).name:
            self.session.set_layer(self.rules_panel.model.node(rows[0]).name)

    def _build_menus(self) -> None:
        a = self.actions
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([a.open_images, a.open_folder])
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addSeparator()
        file_menu.addAction(a.choose_model)
        file_menu.addSeparator()
        file_menu.addActions([a.save_rules, a.load_rules])
        file_menu.addSeparator()
        file_menu.addActions([a.export, a.copy])
        file_menu.addSeparator()
        file_menu.addAction(a.quit)
        edit_menu = bar.addMenu("&Edit")
        edit_menu.addActions([a.undo, a.redo])
        edit_menu.addSeparator()
        edit_menu.addAction(a.apply_rule)
        edit_menu.addSeparator()
        edit_menu.addAction(a.reset_preferences)
        view_menu = bar.addMenu("&View")
        view_menu.addActions(list(a.layer_actions.values()))
        view_menu.addAction(a.fit_view)
        view_menu.addSeparator()
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        compute_menu = bar.addMenu("&Compute")
        compute_menu.addActions([a.explain, a.cancel])
        compare_menu = bar.addMenu("Com&pare")
        compare_menu.addAction(a.compare_current)
        self.preset_menu = compare_menu.addMenu("Add &preset")
        add_catalogue_actions(self.preset_menu, PRESETS.values(), self.compare)
        self.method_menu = compare_menu.addMenu("Add &method")
        others = (METHODS[kind] for kind in OTHER_METHODS)
        add_catalogue_actions(self.method_menu, others, self.compare)
        compare_menu.addActions([a.compare_images, a.clear_comparison])
        compare_menu.addSeparator()
        compare_menu.addActions([a.shared_scale, a.evaluate])
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(a.about)

    def _build_toolbars(self) -> None:
        a = self.actions
        tools = self.addToolBar("Commands")
        tools.setObjectName("toolbar-commands")
        tools.addActions([a.open_images, a.open_folder, a.choose_model])
        tools.addSeparator()
        tools.addActions([a.undo, a.redo, a.explain, a.cancel])
        tools.addSeparator()
        compare_button = QToolButton()
        compare_button.setDefaultAction(a.compare_current)
        compare_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        add_menu = QMenu(compare_button)
        add_menu.addMenu(self.preset_menu)
        add_menu.addMenu(self.method_menu)
        compare_button.setMenu(add_menu)
        tools.addWidget(compare_button)
        tools.addAction(a.evaluate)
        tools.addSeparator()
        tools.addActions([a.export, a.copy])
        self.addToolBarBreak()
        display = self.addToolBar("Display")
        display.setObjectName("toolbar-display")
        self.display_controls = DisplayControls(self.session)
        display.addWidget(self.display_controls)

    def _build_status_bar(self) -> None:
        self.hover_label = QLabel()
        self.status_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.cancel_button = QToolButton()
        self.cancel_button.setDefaultAction(self.actions.cancel)
        bar = self.statusBar()
        bar.addWidget(self.hover_label, 1)
        bar.addPermanentWidget(self.status_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        self.main_view.view.hovered.connect(self._show_hover)
        self._show_busy(False)

    def _connect_actions(self) -> None:
        a = self.actions
        s = self.session
        a.open_images.triggered.connect(self.open_images_dialog)
        a.open_folder.triggered.connect(self.open_folder_dialog)
        a.choose_model.triggered.connect(self.choose_model_dialog)
        a.save_rules.triggered.connect(self.save_rules_dialog)
        a.load_rules.triggered.connect(self.load_rules_dialog)
        a.export.triggered.connect(self.export_dialog)
        a.copy.triggered.connect(self.copy_view)
        a.quit.triggered.connect(self.close)
        a.reset_preferences.triggered.connect(self.reset_preferences)
        a.clear_recent.triggered.connect(self.preferences.clear_recent_files)
        for layer, action in a.layer_actions.items():
            action.triggered.connect(lambda _=False, layer=layer: s.set_display(layer=layer))
        a.fit_view.triggered.connect(self.fit_views)
        a.explain.triggered.connect(self.controller.explain_again)
        a.cancel.triggered.connect(self.controller.cancel)
        a.compare_current.triggered.connect(lambda: self.compare("current"))
        a.compare_images.triggered.connect(self.compare_all_images)
        a.clear_comparison.triggered.connect(s.clear_panels)
        a.shared_scale.toggled.connect(s.set_shared_scale)
        a.evaluate.triggered.connect(self.evaluate)
        a.about.triggered.connect(self.about)

    # -- observers ----------------------------------------------------------------------
    def _show_message(self, message: Message) -> None:
        self.message_bar.show_message(message)
        self.statusBar().showMessage(message.title, 5000)

    def _show_hover(self, info: HoverInfo | None) -> None:
        if info is None:
            self.hover_label.setText("")
            return
        text = f"x {info.x}, y {info.y} | RGB {info.rgb}"
        if info.relevance is not None:
            text += f" | relevance {info.relevance:.4g}"
        self.hover_label.setText(text)

    def _show_status(self) -> None:
        status = self.session.status
        self.status_label.setText(status.text if status.state != "idle" else "")
        self.progress.setValue(round(status.fraction * 1000))

    def _show_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.actions.cancel.setEnabled(busy)

    def _on_display_changed(self) -> None:
        display = self.session.display
        self.actions.layer_actions[display.layer].setChecked(True)
        self.preferences.cmap = display.cmap
        self.preferences.opacity = display.opacity
        self.preferences.overlay_style = display.overlay

    def _on_model_changed(self) -> None:
        model = self.session.model
        title = "lrp-desktop" if model is None else f"lrp-desktop: {model.title}"
        self.setWindowTitle(title)
        self._update_enabled()

    def _update_enabled(self) -> None:
        has_model = self.session.model is not None
        has_panels = bool(self.session.comparison.panels)
        for action in (
            self.actions.save_rules,
            self.actions.load_rules,
            self.actions.compare_current,
            self.actions.compare_images,
        ):
            action.setEnabled(has_model)
        self.preset_menu.setEnabled(has_model)
        self.method_menu.setEnabled(has_model)
        self.actions.evaluate.setEnabled(has_panels)
        self.actions.clear_comparison.setEnabled(has_panels)

    # -- commands -----------------------------------------------------------------------
    def open_images_dialog(self) -> None:
        """Ask for image files and open them."""
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Open images", str(self.preferences.last_folder("images")), IMAGE_FILTER
        )
        if paths:
            self.controller.open_paths(paths)

    def open_folder_dialog(self) -> None:
        """Ask for a folder and open its images as a list."""
        folder = QFileDialog.getExistingDirectory(
            self, "Open a folder of images", str(self.preferences.last_folder("images"))
        )
        if folder:
            self.controller.open_paths([folder])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.preferences.recent_files:
            action = self.recent_menu.addAction(str(path))
            action.triggered.connect(lambda _=False, path=path: self.controller.open_paths([path]))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none)").setEnabled(False)
        self.recent_menu.addSeparator()
        self.recent_menu.addAction(self.actions.clear_recent)

    def choose_model_dialog(self) -> None:
        """Let the user choose a model and load it in the worker."""
        dialog = ModelDialog(self.preferences.last_folder("weights"), self.support, self)
        accepted = dialog.exec() == ModelDialog.DialogCode.Accepted
        dialog.deleteLater()
        if not accepted:
            return
        try:
            choice = dialog.choice()
        except ValueError as error:
            self.reporter.error("No model was chosen", str(error))
            return
        if choice.weights is not None:
            self.preferences.set_last_folder("weights", choice.weights)
        self.controller.load_model(
            choice.source, choice.weights, choice.pretrained, seed=choice.seed
        )

    def save_rules_dialog(self) -> None:
        """Ask where to save the rule assignment as JSON."""
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Save rules",
            str(self.preferences.last_folder("rules") / "rules.json"),
            RULES_FILTER,
        )
        if path:
            self.preferences.set_last_folder("rules", Path(path))
            save_rules(self.session, Path(path), self.reporter)

    def load_rules_dialog(self) -> None:
        """Ask for a rule assignment JSON file and load it."""
        path, _ = QFileDialog.getOpenFileName(
            self, "Load rules", str(self.preferences.last_folder("rules")), RULES_FILTER
        )
        if path:
            self.preferences.set_last_folder("rules", Path(path))
            load_rules(self.session, Path(path), self.reporter)

    def current_view_widget(self) -> QWidget:
        """Return the widget of the visible tab (what "the current view" means)."""
        return self.tabs.currentWidget()

    def copy_view(self) -> None:
        """Copy the visible view to the clipboard."""
        copy_view(self.current_view_widget())
        self.reporter.info("Copied the view to the clipboard")

    def plot_picture(self):
        """Return the evaluation plot as an RGBA array, or None when there is no evaluation."""
        if self.session.evaluation is None:
            return None
        canvas = self.comparison.plot.canvas  # the plot and its legend, without the controls
        size = canvas.size()
        canvas.resize(*PLOT_SIZE)
        picture = qimage_to_array(canvas.grab().toImage())
        canvas.resize(size)
        return picture

    def export(self, kind: str, path: Path) -> list[Path]:
        """Export ``kind`` ("view", "figure", "raw", "report") to ``path``; return the files."""
        bounds = self.comparison.panel_bounds()
        try:
            if kind == "view":
                written = [save_view(self.current_view_widget(), path)]
            elif kind == "figure":
                written = [save_comparison_figure(self.session, path, bounds, self.plot_picture())]
            elif kind == "raw":
                written = list(
                    save_current_explanation(self.session, path.parent, path.name).values()
                )
            elif kind == "report":
                written = [save_comparison_report(self.session, path, bounds)]
            else:
                raise ExportError(f"unknown export {kind!r}")
        except (ExportError, OSError, ValueError) as error:
            self.reporter.error(
                "Export failed",
                str(error),
                "Check the destination and that everything is computed.",
            )
            return []
        self.preferences.set_last_folder("export", path.parent)
        self.reporter.info(
            f"Exported {len(written)} file(s)", ", ".join(str(item) for item in written)
        )
        return written

    def export_dialog(self) -> None:
        """Ask what to export and where, then write it."""
        image = self.session.current_image
        stem = safe_stem(image.stem if image is not None else "lrp-desktop")
        dialog = ExportDialog(
            self.preferences.last_folder("export"), stem, bool(self.session.comparison.panels), self
        )
        if dialog.exec() == ExportDialog.DialogCode.Accepted:
            choice = dialog.choice()
            self.export(choice.kind, choice.path)

    def reset_preferences(self) -> None:
        """Forget every stored preference."""
        self.preferences.reset()
        self.reporter.info(
            "Preferences were reset",
            "Window layout, recent files, folders, device and colours are back to "
            "their defaults from the next start.",
        )

    def fit_views(self) -> None:
        """Reset zoom and pan of the main view and the comparison."""
        self.main_view.view.fit()
        if self.comparison.panels:
            self.comparison.panels[0].view.fit()

    def compare(self, entry: str, image: Path | None = None) -> None:
        """Add a comparison panel ("current", a preset or a method) and show the comparison."""
        if self.controller.compare(entry, image):
            self.tabs.setCurrentIndex(COMPARISON_TAB)

    def compare_all_images(self) -> None:
        """Add one panel per open image with the current configuration."""
        for path in list(self.session.images):
            self.compare("current", path)

    def evaluate(self) -> None:
        """Compute perturbation curves of every panel."""
        self.tabs.setCurrentIndex(COMPARISON_TAB)
        self.controller.evaluate(**self.comparison.evaluation_settings.values())

    def about(self) -> None:
        """Show what this program is."""
        QMessageBox.about(
            self,
            "About lrp-desktop",
            f"lrp-desktop {__version__}\n\nLayer-wise Relevance Propagation for "
            "PyTorch image classifiers.",
        )

    # -- drag and drop, preferences, closing --------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        """Accept files and folders dragged onto the window."""
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """Open the dropped files and folders."""
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            self.controller.open_paths(paths)
            event.acceptProposedAction()

    def _restore_preferences(self) -> None:
        prefs = self.preferences
        if prefs.geometry is not None:
            self.restoreGeometry(prefs.geometry)
        else:
            self.resize(1400, 860)
        if prefs.window_state is not None:
            self.restoreState(prefs.window_state)
        if prefs.reference_folder is not None:
            self.layer_view.use_reference_folder(prefs.reference_folder)
        changes = {}
        if prefs.cmap in CMAPS:
            changes["cmap"] = prefs.cmap
        if prefs.opacity is not None:
            changes["opacity"] = prefs.opacity
        if prefs.overlay_style is not None:
            changes["overlay"] = prefs.overlay_style
        if changes:
            self.session.set_display(**changes)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Remember the window layout and stop the worker threads."""
        self.preferences.geometry = self.saveGeometry()
        self.preferences.window_state = self.saveState()
        self.preferences.sync()
        self.controller.host.stop()
        self.controller.structure.stop()
        self.support.stop()
        super().closeEvent(event)
