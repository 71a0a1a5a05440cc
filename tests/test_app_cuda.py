"""The worker on a CUDA device gives the CPU's heatmap (skipped where no CUDA device exists)."""

from __future__ import annotations

import numpy as np
import pytest
from test_app_support import wait_for_heatmap

pytest_plugins = ["test_app_support"]


@pytest.mark.cuda
def test_cuda_heatmap_matches_the_cpu(qtbot, viewer):
    session = viewer.session
    cpu = wait_for_heatmap(qtbot, viewer).copy()
    viewer.controller.set_device("cuda:0")
    qtbot.waitUntil(lambda: session.device == "cuda:0", timeout=60_000)
    gpu = wait_for_heatmap(qtbot, viewer)
    assert session.explanation.device == "cuda:0"
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-4)
    assert next(viewer.host.worker.context.loaded.model.parameters()).is_cuda
    viewer.controller.set_device("cpu")
    qtbot.waitUntil(lambda: session.device == "cpu", timeout=60_000)
    np.testing.assert_array_equal(wait_for_heatmap(qtbot, viewer), cpu)  # from the cache
