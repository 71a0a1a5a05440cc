"""Names the command lines offer before the engine is imported (no torch here).

The catalogues themselves live in the modules that implement them; this module only repeats their
keys so that ``--help`` and the window can come up before torch loads. Tests keep the two equal.
"""

from __future__ import annotations

#: The bundled demo models (keys of :data:`~.demos.DEMOS`).
DEMO_NAMES = ("demo", "demo_vit")

#: The model a command opens when none is named (:data:`~.models.DEFAULT_MODEL`).
DEFAULT_MODEL = "demo"

__all__ = ["DEFAULT_MODEL", "DEMO_NAMES"]
