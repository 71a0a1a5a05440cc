"""A user's hook on a layer's output gradient sees, and changes, what the rules propagate.

Concept relevance masks the relevance at a layer this way: a forward hook registers a tensor hook
on the layer's output that multiplies its gradient by a channel mask. The rules' own hooks must
run after it, whenever it was registered, so that the mask reaches the input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_desktop_core.core import Composite
from lrp_desktop_core.rules import AlphaBeta, Epsilon, Gamma, ZPlus

RULES = [Epsilon(epsilon=1e-9), Gamma(gamma=0.25), ZPlus(), AlphaBeta(alpha=2.0, beta=1.0)]


def _relevance(rule, mask: torch.Tensor | None) -> torch.Tensor:
    """Return LRP of class 0 with ``rule`` on every linear layer, the first one's output masked."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False)
    ).double()
    inputs = torch.randn(2, 6, dtype=torch.float64).abs().requires_grad_()
    composite = Composite(
        lambda ctx, name, module: rule.copy() if isinstance(module, nn.Linear) else None
    )

    def mask_gradient(module, args, output):
        output.register_hook(lambda grad: grad * mask)

    with composite.context(model):  # the rules' hooks first, the mask after them
        handle = model[0].register_forward_hook(mask_gradient) if mask is not None else None
        output = model(inputs)
        seed = torch.zeros_like(output)
        seed[:, 0] = output[:, 0]
        (relevance,) = torch.autograd.grad(output, inputs, seed)
        if handle is not None:
            handle.remove()
    return relevance


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: type(rule).__name__)
def test_a_mask_on_a_layers_output_gradient_reaches_the_input(rule):
    plain = _relevance(rule, None)
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    kept, rest = _relevance(rule, keep), _relevance(rule, 1 - keep)
    assert torch.count_nonzero(_relevance(rule, torch.zeros(5, dtype=torch.float64))) == 0
    assert not torch.allclose(kept, plain)
    torch.testing.assert_close(kept + rest, plain, rtol=1e-10, atol=1e-12)  # linear in the mask
