"""Shared test set-up: headless Qt, deterministic torch, and the CUDA marker."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Idle OpenMP threads sleep instead of spinning, which keeps the suite fast on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` where no CUDA device exists."""
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device; none was found on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed():
    """Make every test start from the same random state."""
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Run the test on one thread; for tiny tensors, where thread start-up and waits dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
