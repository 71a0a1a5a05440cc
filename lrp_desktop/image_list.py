"""The open images as a list of thumbnails; clicking one shows it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QIcon, QImageReader, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem, QWidget

from .session import Session

THUMBNAIL_SIZE = 72


def thumbnail(path: Path, size: int = THUMBNAIL_SIZE) -> QPixmap | None:
    """Read a small version of the image at ``path`` (decoded at reduced size), or None."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    original = reader.size()
    if original.isValid() and original.width() > 0 and original.height() > 0:
        reader.setScaledSize(original.scaled(QSize(size, size), Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    return None if image.isNull() else QPixmap.fromImage(image)


class ImageList(QListWidget):
    """Thumbnails of the session's images, made one at a time so the window never stalls.

    Parameters
    ----------
    session
        The session whose images are listed; selecting an entry makes it current.
    """

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setGridSize(QSize(THUMBNAIL_SIZE + 24, THUMBNAIL_SIZE + 28))
        self.setWordWrap(True)
        self.setToolTip("Open images: click one to explain it")
        self._pending: list[QListWidgetItem] = []
        self._timer = QTimer(self)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._make_next_thumbnail)
        self.currentRowChanged.connect(self._on_row_changed)
        session.images_changed.connect(self._fill)
        session.current_image_changed.connect(self._show_current)
        self._fill()

    def _fill(self) -> None:
        self.blockSignals(True)
        self.clear()
        self._pending = []
        placeholder = self.style().standardIcon(self.style().StandardPixmap.SP_FileIcon)
        for path in self.session.images:
            item = QListWidgetItem(placeholder, path.name)
            item.setToolTip(str(path))
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.addItem(item)
            self._pending.append(item)
        self.blockSignals(False)
        self._show_current()
        if self._pending:
            self._timer.start()

    def _make_next_thumbnail(self) -> None:
        if not self._pending:
            self._timer.stop()
            return
        item = self._pending.pop(0)
        pixmap = thumbnail(Path(item.data(Qt.ItemDataRole.UserRole)))
        if pixmap is not None:
            item.setIcon(QIcon(pixmap))

    def _show_current(self) -> None:
        self.blockSignals(True)
        self.setCurrentRow(self.session.current_index)
        self.blockSignals(False)

    def _on_row_changed(self, row: int) -> None:
        if 0 <= row < len(self.session.images):
            self.session.set_current_image(row)
