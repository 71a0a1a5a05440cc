"""Computed explanations, kept so that going back to an earlier configuration is instant.

An explanation is identified by everything that determines it: the loaded model, the image file
(path, size and modification time, so an edited file is recomputed), the method with its rule
assignment fingerprint and settings, the requested class and the device.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The cache forgets the least recently used explanations beyond this many bytes of relevance.
DEFAULT_BUDGET_BYTES = 512 * 2**20


@dataclass(frozen=True)
class ExplainKey:
    """Everything that determines one explanation.

    Attributes
    ----------
    model
        The key of the loaded model (unique per load).
    image
        The image file (see :func:`image_identity`).
    method
        The method kind, rule assignment fingerprint and settings.
    target
        The requested class, or None for the top class.
    device
        The device it ran on.
    """

    model: str
    image: tuple[str, int, int, int]
    method: tuple[str, str | None, str]
    target: int | None
    device: str


def image_identity(path: Path) -> tuple[str, int, int, int]:
    """Return (absolute path, inode, size, mtime in ns), or zeros for the numbers if it is gone.

    The inode tells files apart however a path reaches them, so the path is only made absolute,
    not resolved: resolving costs a system call per component of the path, and the GUI thread
    builds these keys many times per change, each call a chance to wait for the interpreter lock.
    """
    absolute = os.path.abspath(path)
    try:
        stat = os.stat(absolute)
    except OSError:
        return (absolute, 0, 0, 0)
    return (absolute, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class _LastFingerprint:
    """The fingerprint of the rule map asked about last (rule maps are immutable).

    Cache keys are built many times per change for the same rule map, and hashing a large model's
    map takes over a millisecond.
    """

    entry: tuple[Any, str] | None = None

    @classmethod
    def of(cls, rulemap: Any) -> str:
        entry = cls.entry
        if entry is None or entry[0] is not rulemap:
            entry = cls.entry = (rulemap, rulemap.fingerprint())
        return entry[1]


def method_identity(method: Any) -> tuple[str, str | None, str]:
    """Return (kind, rule map fingerprint or None, settings as sorted JSON) of a ``Method``."""
    rules = None if method.rulemap is None else _LastFingerprint.of(method.rulemap)
    return (method.kind, rules, json.dumps(method.settings(), sort_keys=True, default=str))


def explain_key(
    model_key: str, path: Path, method: Any, target: int | None, device: str
) -> ExplainKey:
    """Build the :class:`ExplainKey` of one explanation request."""
    return ExplainKey(model_key, image_identity(path), method_identity(method), target, device)


class ExplanationCache:
    """A least-recently-used store of explanations with a memory budget.

    Parameters
    ----------
    budget_bytes
        Most bytes of relevance arrays kept.
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[ExplainKey, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: ExplainKey) -> bool:
        return key in self._entries

    def get(self, key: ExplainKey) -> Any | None:
        """Return the stored explanation for ``key`` (marking it recently used), or None."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: ExplainKey, explanation: Any) -> None:
        """Store ``explanation`` under ``key`` and forget the oldest beyond the budget."""
        self._entries[key] = explanation
        self._entries.move_to_end(key)
        while len(self._entries) > 1 and self._bytes() > self.budget_bytes:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (a new model makes every entry useless)."""
        self._entries.clear()

    def _bytes(self) -> int:
        return sum(entry.relevance.nbytes for entry in self._entries.values())
