"""Heatmaps are drawn on the picture thread: newest draw wins, errors and closed views are safe."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import shiboken6
from test_app_support import wait_drawn

from lrp_desktop import heatmap_view
from lrp_desktop.heatmap_view import HeatmapView
from lrp_desktop.picture_thread import PictureThread, picture_thread
from lrp_desktop.screenshot import everything_shown
from lrp_desktop.session import DisplaySettings

pytest_plugins = ["test_app_support"]

PICTURE = np.full((8, 8, 3), 100, np.uint8)


@pytest.fixture
def renders(monkeypatch):
    """Record the thread and the relevance of every picture the views make."""
    made: list[tuple[threading.Thread, np.ndarray | None]] = []
    original = heatmap_view.render

    def recording(display, relevance, settings, bounds):
        made.append((threading.current_thread(), relevance))
        return original(display, relevance, settings, bounds)

    monkeypatch.setattr(heatmap_view, "render", recording)
    return made


def test_pictures_are_made_off_the_gui_thread_and_only_the_newest_is_shown(qtbot, renders):
    view = HeatmapView()
    qtbot.addWidget(view)
    relevances = [np.full((8, 8), float(scale)) for scale in range(1, 8)]
    for relevance in relevances:
        view.draw(PICTURE, relevance, DisplaySettings())
    assert view.drawing and view.image_item.image is None  # nothing shown before it is made
    wait_drawn(qtbot)
    assert not view.drawing
    assert all(thread is not threading.main_thread() for thread, _ in renders)
    # the first draw was being made; of the six asked for meanwhile, only the last is made
    assert len(renders) == 2
    np.testing.assert_array_equal(renders[-1][1], relevances[-1])
    np.testing.assert_array_equal(view.relevance, relevances[-1])
    assert view.bounds == (-7.0, 7.0)
    expected = heatmap_view.render(PICTURE, relevances[-1], DisplaySettings(), view.bounds)
    np.testing.assert_array_equal(view.image_item.image, expected)


def test_clearing_the_view_waits_its_turn_behind_a_picture_being_made(qtbot):
    view = HeatmapView()
    qtbot.addWidget(view)
    view.draw(PICTURE, np.ones((8, 8)), DisplaySettings())
    view.draw(None, None, DisplaySettings())
    wait_drawn(qtbot)
    assert view.image_item.image is None and view.display is None and view.bounds is None
    assert not view.colorbar.isVisible()


def test_a_drawing_error_surfaces_on_the_gui_thread_and_the_view_draws_again(qtbot):
    view = HeatmapView()
    qtbot.addWidget(view)
    with qtbot.captureExceptions() as exceptions:
        view.draw(PICTURE, np.ones((2, 3, 8, 8)), DisplaySettings())  # a batch, not a heatmap
        wait_drawn(qtbot)
    [(kind, error, _)] = exceptions
    assert kind is ValueError and "is not a heatmap" in str(error)
    assert not view.drawing
    view.draw(PICTURE, np.ones((8, 8)), DisplaySettings())
    wait_drawn(qtbot)
    assert view.image_item.image is not None


def test_a_view_closed_while_its_picture_is_made_is_left_alone(qtbot):
    view = HeatmapView()
    view.draw(PICTURE, np.ones((8, 8)), DisplaySettings())
    shiboken6.delete(view)
    with qtbot.captureExceptions() as exceptions:
        wait_drawn(qtbot)
    assert exceptions == []


def test_the_screenshot_waits_for_pictures_still_being_made(qtbot, viewer):
    assert everything_shown(viewer)
    viewer.session.set_display(cmap="hot")
    assert picture_thread().busy and not everything_shown(viewer)
    wait_drawn(qtbot)
    assert everything_shown(viewer)


def test_a_picture_thread_answers_in_order_on_the_gui_thread_and_stops(qtbot):
    pictures = PictureThread()
    answers: list[tuple[int, threading.Thread]] = []
    for number in range(5):
        pictures.submit(
            lambda number=number: number,
            lambda done: answers.append((done.result(), threading.current_thread())),
        )
    assert pictures.busy
    qtbot.waitUntil(lambda: not pictures.busy, timeout=10_000)
    assert answers == [(number, threading.main_thread()) for number in range(5)]
    pictures.stop()
    assert not pictures._thread.isRunning()
