"""Importing large libraries (torch, torchvision) without Python's garbage collector in the way.

Importing torch or torchvision creates hundreds of thousands of objects that live as long as the
process. Each full pass of Python's cyclic garbage collector walks every object that is not frozen,
and holds the interpreter lock while it does: during and after such an import, a pass froze the
viewer's window for 50-150 ms, whichever thread ran it, and the passes slowed the imports and
every later run. The viewer and ``lrp-explain`` import the engine through
:func:`import_and_freeze`.
"""

from __future__ import annotations

import gc
import importlib
import threading
from collections.abc import Iterable

_PAUSE = threading.Lock()


def import_and_freeze(names: Iterable[str], optional: Iterable[str] = ()) -> dict[str, ImportError]:
    """Import modules with the collector paused, then freeze every object there is.

    Frozen objects are left out of the collector's passes for good; reference counting still frees
    them. Everything alive is frozen, not only what the imports made, so call this where no
    object in a reference cycle will soon become garbage (a model is freed by reference counting
    when it is replaced). One thread at a time pauses the collector; others wait.

    Parameters
    ----------
    names
        Modules to import, in order; an ImportError propagates after the collector is restored.
    optional
        Modules to import after them where they can be (torchvision, for a model that may need
        it: its own load says what is missing).

    Returns
    -------
    dict
        The ImportError of each optional module that could not be imported, by name.
    """
    missing: dict[str, ImportError] = {}
    with _PAUSE:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for name in names:
                importlib.import_module(name)
            for name in optional:
                try:
                    importlib.import_module(name)
                except ImportError as error:
                    missing[name] = error
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()
    return missing
