"""Large imports with the garbage collector paused, and what freezing the objects then costs."""

from __future__ import annotations

import gc
import sys
import weakref

import pytest
from test_app_support import wait_for_heatmap

from lrp_desktop_core.import_freeze import import_and_freeze

pytest_plugins = ["test_app_support"]


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("paused_probe", "failing_probe"):
        sys.modules.pop(name, None)


def test_the_collector_is_paused_during_the_imports_and_restored_after(module_dir):
    (module_dir / "paused_probe.py").write_text("import gc\nCOLLECTING = gc.isenabled()\n")
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    kept = [[]]
    kept[0].append(kept)  # a cycle alive now is frozen with the rest
    import_and_freeze(["json", "paused_probe"])
    assert sys.modules["paused_probe"].COLLECTING is False
    assert gc.isenabled()
    assert gc.get_freeze_count() > frozen_before
    assert not any(entry is kept for generation in range(3) for entry in gc.get_objects(generation))


def test_an_optional_module_that_cannot_be_imported_is_returned_not_raised(module_dir):
    (module_dir / "failing_probe.py").write_text("raise ImportError('no such library')\n")
    missing = import_and_freeze(["json"], optional=["failing_probe"])
    assert list(missing) == ["failing_probe"] and "no such library" in str(missing["failing_probe"])
    assert gc.isenabled()


def test_a_failed_import_restores_the_collector_as_it_was(module_dir):
    (module_dir / "failing_probe.py").write_text("raise ImportError('no such library')\n")
    with pytest.raises(ImportError, match="no such library"):
        import_and_freeze(["failing_probe"])
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(ImportError):
            import_and_freeze(["failing_probe"])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_model_frozen_while_loaded_is_freed_when_another_replaces_it(qtbot, viewer):
    import_and_freeze([])  # what importing torchvision does while the demo is loaded
    replaced = weakref.ref(viewer.host.worker.context.loaded.model)
    viewer.controller.load_model("demo_vit")
    qtbot.waitUntil(lambda: viewer.session.model.spec.name == "demo_vit", timeout=60_000)
    wait_for_heatmap(qtbot, viewer)
    gc.collect()  # frozen objects are never collected: only reference counting can free it
    assert replaced() is None
