"""Undoable rule edits: each command swaps one immutable rule map for another."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QUndoCommand

from .session import Session


class SetRuleMapCommand(QUndoCommand):
    """Replace the session's rule map; undo puts the previous one back.

    Parameters
    ----------
    session
        The session whose rule map changes.
    rulemap
        The new (immutable) rule map.
    text
        What the edit did, shown in the Edit menu ("Undo set conv1 to gamma").
    """

    def __init__(self, session: Session, rulemap: Any, text: str) -> None:
        super().__init__(text)
        self._session = session
        self._before = session.rulemap
        self._after = rulemap

    def redo(self) -> None:
        """Apply the new rule map."""
        self._session.set_rulemap(self._after)

    def undo(self) -> None:
        """Restore the rule map from before the edit."""
        self._session.set_rulemap(self._before)


def edit_rulemap(session: Session, rulemap: Any, text: str) -> bool:
    """Make ``rulemap`` the session's rule map as one undoable step.

    Returns
    -------
    bool
        False (and nothing is pushed) when ``rulemap`` equals the current one.
    """
    if rulemap == session.rulemap:
        return False
    session.undo_stack.push(SetRuleMapCommand(session, rulemap, text))
    return True
