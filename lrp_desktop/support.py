"""Which registry architectures LRP explains fully, decided from their structure off the GUI thread.

The list of torchvision's classifiers comes from the same thread: listing them imports torchvision,
which takes about as long as importing torch, so the GUI thread never does it (and the import
pauses the garbage collector, see :mod:`lrp_desktop_core.import_freeze`).

Each architecture is built on the "meta" device (its structure without numbers) and handed to
``recommend.recommend``, which looks at its module classes, never at its name. Building and
looking take from a few milliseconds to a few seconds per model (some 40 seconds for the whole
registry), so a :class:`SupportChecker` does it on its own thread, one request per name, and the
answers are kept for the rest of the process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from PySide6.QtCore import QObject, Signal
from torch import nn
from torch.overrides import TorchFunctionMode

from lrp_desktop_core.demos import DEMOS
from lrp_desktop_core.import_freeze import import_and_freeze
from lrp_desktop_core.models import get_spec, list_models
from lrp_desktop_core.recommend import Recommendation, recommend
from lrp_desktop_core.torchvision_types import torchvision_imported

from .worker import Failure, Job, WorkerHost

#: Answers so far, by architecture name (written on the checker's thread, read on the GUI's).
_CHECKED: dict[str, Support] = {}


@dataclass(frozen=True)
class Support:
    """How well LRP explains one architecture.

    Attributes
    ----------
    name
        The architecture's name in the registry.
    recommendation
        What ``recommend`` decided from its structure; None when it could not be built.
    problem
        Why it could not be built, else "".
    """

    name: str
    recommendation: Recommendation | None
    problem: str = ""

    @property
    def supported(self) -> bool:
        """True when every part of the architecture is explained."""
        return self.recommendation is not None and self.recommendation.supported

    def verdict(self) -> str:
        """Return a few words: "fully supported", or the first part that is not.

        The tooltip lists them all.
        """
        if self.recommendation is None:
            return f"support unknown: {self.problem}"
        if self.supported:
            return "fully supported"
        return "not fully supported: " + self.recommendation.unsupported[0]

    def tooltip(self) -> str:
        """Return the recommendation's summary and reasons (or the problem), one per line."""
        if self.recommendation is None:
            return self.verdict()
        return describe(self.recommendation)


def describe(recommendation: Recommendation) -> str:
    """Return a recommendation's summary, then what the canonizers change and what is unsupported.

    Parameters
    ----------
    recommendation
        A ``recommend.Recommendation``.
    """
    lines = [recommendation.summary()]
    lines += [f"- {reason}" for reason in recommendation.reasons]
    lines += [f"- not explained: {part}" for part in recommendation.unsupported]
    return "\n".join(lines)


class _LayersOnMeta(TorchFunctionMode):
    """Create on the meta device only what layers create through their ``factory_kwargs``.

    Those calls pass an explicit ``device=None``; other tensors stay real, for builders that read
    their values.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs and kwargs["device"] is None:
            kwargs = {**kwargs, "device": torch.device("meta")}
        return func(*args, **kwargs)


def build_structure(name: str) -> nn.Module:
    """Build the registry architecture ``name`` on the meta device (no memory for its weights).

    RegNet's builders compute their widths with tensors and read the values back, which the meta
    device cannot do; for such builders only the layers' own tensors go to the meta device.
    """
    builder = get_spec(name).builder
    try:
        with torch.device("meta"):
            return builder()
    except NotImplementedError:  # "Cannot copy out of meta tensor"
        with _LayersOnMeta():
            return builder()


def check_support(name: str) -> Support:
    """Return how well LRP explains the architecture ``name``; the answer is kept.

    Builds the model (on the meta device), so call it off the GUI thread.
    """
    if name not in _CHECKED:
        try:
            support = Support(name, recommend(build_structure(name)))
        except Exception as error:  # an architecture that cannot be built is reported, not fatal
            support = Support(name, None, str(error) or type(error).__name__)
        _CHECKED[name] = support
    return _CHECKED[name]


def classifier_names() -> list[str]:
    """Return the registry's torchvision classifiers (its names that are not demos).

    Imports torchvision, so call it off the GUI thread unless torchvision is imported already.
    """
    return [name for name in list_models() if name not in DEMOS]


def known_support(name: str) -> Support | None:
    """Return the kept answer for ``name``, or None while it has not been checked."""
    return _CHECKED.get(name)


@dataclass(frozen=True)
class SupportRequest:
    """Check one architecture on the checker's thread."""

    name: str
    title: str = "Checking the architecture"

    def run(self, context: Any, job: Job) -> Support:
        """Build the architecture's structure and decide."""
        return check_support(self.name)


@dataclass(frozen=True)
class ClassifierListRequest:
    """List torchvision's classifiers on the checker's thread (importing torchvision there)."""

    title: str = "Listing torchvision's classifiers"

    def run(self, context: Any, job: Job) -> tuple[str, ...]:
        """Import torchvision and return its classifiers' names."""
        if not torchvision_imported():
            import_and_freeze(["torchvision"])
        return tuple(classifier_names())


class SupportChecker(QObject):
    """Lists torchvision's classifiers, then checks architectures, on a thread of its own.

    The list, once made, is kept and announced at once to later askers. Answers already known are
    announced at once; the rest are checked in the order asked for.
    """

    checked = Signal(object)  # Support
    listed = Signal(object)  # tuple[str, ...]: torchvision's classifiers
    listing_failed = Signal(str)  # why they could not be listed (torchvision failed to import)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.host = WorkerHost(None)
        self.host.finished.connect(self._on_finished)
        self.host.failed.connect(self._on_failed)
        self.host.cancelled.connect(self._on_cancelled)
        self.classifiers: tuple[str, ...] | None = None
        self._listing: int | None = None

    def list_classifiers(self) -> None:
        """Announce torchvision's classifiers through :attr:`listed`.

        At once where they are known, else once the checker's thread has listed them (or
        through :attr:`listing_failed` where it cannot).

        Checks asked for with :meth:`request` before the list is announced cancel the listing.
        """
        if self.classifiers is not None:
            self.listed.emit(self.classifiers)
        elif self._listing is None:
            self._listing = self.host.submit(ClassifierListRequest())

    def request(self, names: Iterable[str]) -> None:
        """Check ``names``, first things first; this order replaces that of earlier requests."""
        self.host.cancel_all()
        for name in dict.fromkeys(names):
            known = known_support(name)
            if known is not None:
                self.checked.emit(known)
            else:
                self.host.submit(SupportRequest(name))

    def _on_finished(self, request_id: int, result: Support | tuple[str, ...]) -> None:
        if request_id != self._listing:
            self.checked.emit(result)
            return
        self._listing = None
        self.classifiers = result
        self.listed.emit(result)

    def _on_failed(self, request_id: int, failure: Failure) -> None:
        if request_id == self._listing:  # a failed check is a Support, never a failure
            self._listing = None
            self.listing_failed.emit(failure.text)

    def _on_cancelled(self, request_id: int) -> None:
        if request_id == self._listing:
            self._listing = None

    def cancel(self) -> None:
        """Drop the checks not done yet (answers found so far are kept)."""
        self.host.cancel_all()

    def stop(self) -> None:
        """End the checker's thread (call before the application quits)."""
        if self.host.is_running():
            self.host.stop()
