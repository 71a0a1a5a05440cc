"""NaN in the model and running out of memory show a message; the viewer keeps working."""

from __future__ import annotations

import torch
from test_app_errors import new_error, still_works
from test_app_support import nan_weight

pytest_plugins = ["test_app_support"]


def shown_error(viewer) -> str:
    """Return the text of the message bar, which must show an error."""
    bar = viewer.window.message_bar
    assert not bar.isHidden() and bar.message is viewer.reporter.errors()[-1]
    return bar.label.text()


def test_nan_weights_show_a_message_and_the_viewer_recovers(qtbot, viewer):
    with nan_weight(viewer):
        before = len(viewer.reporter.errors())
        viewer.session.set_target(1)
        message = new_error(qtbot, viewer, before)
        text = shown_error(viewer)
        assert message.text in text
        assert viewer.session.current_image.name in message.text
        assert "logits" in message.text and "NaN or inf" in message.text
        assert "weights file" in message.text
        assert "Traceback" not in text
        assert viewer.session.status.state == "failed"
    still_works(qtbot, viewer, 2)


def test_running_out_of_memory_shows_a_message_and_the_viewer_recovers(qtbot, viewer):
    model = viewer.host.worker.context.loaded.model

    def out_of_memory(module, inputs):
        raise torch.cuda.OutOfMemoryError("simulated")

    handle = model.register_forward_pre_hook(out_of_memory)
    try:
        before = len(viewer.reporter.errors())
        viewer.session.set_target(1)
        message = new_error(qtbot, viewer, before)
    finally:
        handle.remove()
    text = shown_error(viewer)
    assert "ran out of memory" in message.text
    assert "CPU" in message.hint and message.hint in text
    viewer.window.grab().save("/tmp/out_of_memory.png")
    still_works(qtbot, viewer, 2)
