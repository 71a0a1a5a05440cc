"""Only the user's cancel marks a comparison panel cancelled; the panel's Retry computes it."""

from __future__ import annotations

from test_app_support import WAIT_MS, wait_idle

pytest_plugins = ["test_app_support"]


def test_a_panel_the_app_replaces_is_computed_again_when_its_settings_come_back(qtbot, viewer):
    session, controller = viewer.session, viewer.controller
    viewer.window.compare("occlusion")
    [spec] = session.comparison.panels
    first = session.target
    qtbot.waitUntil(lambda: bool(controller._panels), timeout=WAIT_MS)
    key = session.panel_key(spec)
    session.set_target(3)  # the app cancels the panel's request: its settings changed
    qtbot.waitUntil(lambda: key not in controller._panels, timeout=WAIT_MS)
    wait_idle(qtbot, viewer)
    session.set_target(first)  # as an undo would: the replaced panel is wanted again
    qtbot.waitUntil(lambda: session.panel_result(spec) is not None, timeout=WAIT_MS)
    assert session.panel_state(spec) is None
    assert "cancelled" not in viewer.window.comparison.panels[0].note.text()


def test_retry_computes_a_cancelled_panel_again(qtbot, viewer):
    window, session = viewer.window, viewer.session
    for entry in ("occlusion", "smoothgrad", "integrated_gradients"):
        window.compare(entry)
    qtbot.waitUntil(lambda: viewer.host.busy, timeout=WAIT_MS)
    viewer.controller.cancel()  # the first may finish; the queued ones are cancelled
    wait_idle(qtbot, viewer)
    specs = session.comparison.panels
    index = next(i for i, spec in enumerate(specs) if session.panel_state(spec) == "cancelled")
    panel = window.comparison.panels[index]
    assert "cancelled" in panel.note.text()
    assert panel.retry.isVisibleTo(panel)
    panel.retry.click()
    qtbot.waitUntil(lambda: session.panel_result(specs[index]) is not None, timeout=WAIT_MS)
    wait_idle(qtbot, viewer)
    panel = window.comparison.panels[index]
    assert "cancelled" not in panel.note.text()
    assert not panel.retry.isVisibleTo(panel)
    others = [spec for i, spec in enumerate(specs) if i != index]
    assert any(session.panel_state(spec) == "cancelled" for spec in others)  # only this one
