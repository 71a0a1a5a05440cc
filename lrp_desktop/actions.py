"""Every command of the viewer as one :class:`QAction`, created in one place.

Menus, the toolbar and keyboard shortcuts reuse these objects, so a command has one text, one
shortcut and one enabled state everywhere. The main window connects their ``triggered`` signals.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QStyle, QWidget

from .session import LAYERS


class Actions:
    """The viewer's commands.

    Parameters
    ----------
    parent
        The main window, which owns the actions (so shortcuts work anywhere in it).
    undo, redo
        The undo stack's own undo and redo actions (their texts follow the stack).
    """

    def __init__(self, parent: QWidget, undo: QAction, redo: QAction) -> None:
        style = parent.style()

        def make(text: str, tip: str, shortcut=None, icon=None, checkable=False) -> QAction:
            action = QAction(text, parent)
            action.setStatusTip(tip)
            action.setToolTip(tip)
            if shortcut is not None:
                action.setShortcut(QKeySequence(shortcut))
            if icon is not None:
                action.setIcon(style.standardIcon(icon))
            action.setCheckable(checkable)
            parent.addAction(action)
            return action

        pixmap = QStyle.StandardPixmap
        # File
        self.open_images = make(
            "&Open images...",
            "Open one or more image files",
            QKeySequence.StandardKey.Open,
            pixmap.SP_DialogOpenButton,
        )
        self.open_folder = make(
            "Open &folder...",
            "Open every image in a folder as a list",
            "Ctrl+Shift+O",
            pixmap.SP_DirOpenIcon,
        )
        self.choose_model = make(
            "Choose &model...",
            "Load a bundled demo, a torchvision classifier or a weights file",
            "Ctrl+M",
            pixmap.SP_ComputerIcon,
        )
        self.save_rules = make(
            "&Save rules...",
            "Save the rule of every layer as JSON",
            QKeySequence.StandardKey.Save,
            pixmap.SP_DialogSaveButton,
        )
        self.load_rules = make("&Load rules...", "Load a rule assignment from JSON", "Ctrl+L")
        self.export = make(
            "&Export...",
            "Export the view, a comparison figure, raw relevance or a report",
            "Ctrl+E",
        )
        self.copy = make(
            "&Copy view", "Copy the current view to the clipboard", QKeySequence.StandardKey.Copy
        )
        self.quit = make("&Quit", "Quit lrp-desktop", QKeySequence.StandardKey.Quit)
        self.clear_recent = make("Clear recent files", "Forget the recent files")
        # Edit
        undo.setShortcut(QKeySequence(QKeySequence.StandardKey.Undo))
        redo.setShortcut(QKeySequence(QKeySequence.StandardKey.Redo))
        undo.setIcon(style.standardIcon(pixmap.SP_ArrowBack))
        redo.setIcon(style.standardIcon(pixmap.SP_ArrowForward))
        parent.addAction(undo)
        parent.addAction(redo)
        self.undo = undo
        self.redo = redo
        self.apply_rule = make(
            "&Apply rule to selected",
            "Give the selected layers the rule chosen below the tree",
            "Ctrl+Return",
        )
        self.reset_preferences = make(
            "&Reset preferences", "Forget window layout, recent files, folders, device and colours"
        )
        # View
        self.layer_group = QActionGroup(parent)
        self.layer_actions: dict[str, QAction] = {}
        for index, layer in enumerate(LAYERS):
            action = make(f"Show {layer}", f"Show the {layer}", f"Ctrl+{index + 1}", checkable=True)
            action.setData(layer)
            self.layer_group.addAction(action)
            self.layer_actions[layer] = action
        self.fit_view = make("&Fit to window", "Reset zoom and pan", "Ctrl+0")
        # Compute
        self.explain = make(
            "E&xplain", "Compute the explanation again", "F5", pixmap.SP_BrowserReload
        )
        self.cancel = make("&Cancel", "Stop the running computation", "Esc", pixmap.SP_BrowserStop)
        # Compare
        self.compare_current = make(
            "Add &current to comparison",
            "Add the current configuration as a comparison panel",
            "Ctrl+Shift+A",
            pixmap.SP_FileDialogNewFolder,
        )
        self.compare_images = make(
            "Current configuration on &all images",
            "Add one panel per open image with the current configuration",
        )
        self.clear_comparison = make("C&lear comparison", "Remove every comparison panel")
        self.shared_scale = make(
            "&Shared colour scale",
            "One colour scale per kind of method (LRP, Occlusion, ...), "
            "each with its colour bar (otherwise one per panel)",
            checkable=True,
        )
        self.shared_scale.setChecked(True)
        self.evaluate = make(
            "E&valuate",
            "Perturbation curves (and localisation where a mask exists) of every comparison panel",
            "Ctrl+Shift+E",
        )
        self.about = make("&About", "About lrp-desktop")
