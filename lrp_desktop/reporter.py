"""One place every message to the user goes through.

Widgets and the controller never open message boxes themselves: they call the reporter, which
keeps a history (tests read it) and emits :attr:`Reporter.reported`; the main window shows the
newest message in its message bar. Questions that need an answer (consent to run code from a file)
go through :meth:`Reporter.confirm`, whose handler tests replace so no modal dialog ever blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)


class Level(Enum):
    """How serious a message is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Message:
    """A message shown to the user.

    Attributes
    ----------
    level
        Information, warning or error.
    title
        A few words naming what happened ("Could not open the image").
    text
        The problem itself, usually the exception message naming the file and the cause.
    hint
        What the user can do about it; may be empty.
    details
        Every item behind a summary (each problem a warning counts), one sentence each; the
        message bar lists them on request.
    """

    level: Level
    title: str
    text: str
    hint: str = ""
    details: tuple[str, ...] = ()

    def full_text(self) -> str:
        """Return title, text and hint as one line each (empty parts left out)."""
        return "\n".join(part for part in (self.title, self.text, self.hint) if part)


ConfirmHandler = Callable[[str, str], bool]


class Reporter(QObject):
    """Collects messages for the user and answers yes/no questions.

    Parameters
    ----------
    confirm_handler
        ``(title, text) -> bool`` used by :meth:`confirm`; a modal dialog is installed by the
        main window, tests pass their own.
    """

    reported = Signal(object)  # Message
    withdrawn = Signal(object)  # Message whose cause is gone

    def __init__(
        self, confirm_handler: ConfirmHandler | None = None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.messages: list[Message] = []
        self.questions: list[tuple[str, str, bool]] = []
        self.confirm_handler = confirm_handler
        self._standing: dict[Any, Message] = {}

    def report(self, message: Message, cause: Any = None) -> None:
        """Record ``message`` and tell the observers.

        With a ``cause`` (any hashable naming what went wrong, e.g. ``"model"``), the message
        stands until :meth:`resolve` is called with the same cause.
        """
        if cause is not None:
            self._standing[cause] = message
        self.messages.append(message)
        log.log(
            logging.ERROR if message.level is Level.ERROR else logging.INFO,
            "%s",
            message.full_text(),
        )
        self.reported.emit(message)

    def resolve(self, cause: Any) -> None:
        """Withdraw the message standing for ``cause`` (if any): its cause is gone."""
        message = self._standing.pop(cause, None)
        if message is not None:
            self.withdrawn.emit(message)

    def error(self, title: str, text: str, hint: str = "", cause: Any = None) -> None:
        """Report an error: something the user asked for did not happen (``cause``: see report)."""
        self.report(Message(Level.ERROR, title, text, hint), cause)

    def warning(
        self,
        title: str,
        text: str,
        hint: str = "",
        details: tuple[str, ...] = (),
        cause: Any = None,
    ) -> None:
        """Report a warning: it worked, but not quite as asked (details: see :class:`Message`)."""
        self.report(Message(Level.WARNING, title, text, hint, tuple(details)), cause)

    def info(self, title: str, text: str = "", hint: str = "") -> None:
        """Report a piece of information ("Saved 3 files")."""
        self.report(Message(Level.INFO, title, text, hint))

    def confirm(self, title: str, text: str) -> bool:
        """Ask a yes/no question; without a handler the answer is no (the safe choice)."""
        answer = bool(self.confirm_handler(title, text)) if self.confirm_handler else False
        self.questions.append((title, text, answer))
        return answer

    def errors(self) -> list[Message]:
        """Return the errors reported so far, oldest first."""
        return [message for message in self.messages if message.level is Level.ERROR]
