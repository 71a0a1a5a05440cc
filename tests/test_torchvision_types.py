"""Type checks against torchvision's classes, once torchvision is imported.

What happens while it is not imported is checked in a subprocess (``test_without_torchvision.py``).
"""

from __future__ import annotations

import torchvision
from torch import nn

from lrp_desktop_core.composites import _mlp_block
from lrp_desktop_core.torchvision_types import torchvision_types


def test_the_classes_are_torchvisions_once_it_is_imported():
    assert torchvision_types("ops", "MLP") == (torchvision.ops.MLP,)
    found = torchvision_types("ops.misc", "Permute", "MLP")
    assert found == (torchvision.ops.misc.Permute, torchvision.ops.misc.MLP)
    mlp = torchvision.ops.MLP(4, [8, 4])
    assert _mlp_block(mlp) is mlp and _mlp_block(nn.Linear(4, 4)) is None
