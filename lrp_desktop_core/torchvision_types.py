"""Type checks against torchvision's classes that never import torchvision.

Importing torchvision takes about as long as importing torch, and a model that is not
torchvision's (the bundled demo, a user's own network) needs nothing from it. A model can only hold
an instance of a torchvision class once torchvision has been imported, to build or to unpickle it,
so while it has not been, every check against such a class is known to fail. The classes are looked
up when a check is made, never when a module is imported: a model loaded later is checked against
them.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["torchvision_imported", "torchvision_types"]


def torchvision_imported() -> bool:
    """Whether torchvision is imported, and its import finished.

    While another thread is still importing it, no model can hold one of its classes yet: building
    or unpickling one waits for that import to finish.
    """
    module = sys.modules.get("torchvision")
    return module is not None and not getattr(module.__spec__, "_initializing", False)


def torchvision_types(module: str, *names: str) -> tuple[type, ...]:
    """Return the classes ``names`` of ``torchvision.<module>``; () while torchvision is unimported.

    ``isinstance(obj, ())`` is False, so the result can go into ``isinstance`` as it is.

    Parameters
    ----------
    module : str
        The module below ``torchvision``, e.g. ``"ops"``.
    *names : str
        Class names in that module.
    """
    if not torchvision_imported():
        return ()
    found = importlib.import_module(f"torchvision.{module}")
    return tuple(getattr(found, name) for name in names)
