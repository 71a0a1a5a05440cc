"""One builder of report pages for the app and ``lrp-explain --report``."""

from __future__ import annotations

import numpy as np

from lrp_desktop_core.report import SCORE_TITLES, Heatmap, ImageScores, Scale, image_page


def heatmap(method: str, scale: Scale, share: float | None, evaluated: bool) -> Heatmap:
    curve = np.linspace(1.0, 0.0, 5)
    scores = dict.fromkeys(SCORE_TITLES, 0.5) | {"mass_accuracy": None}
    evaluation = ImageScores(method, curve, curve, curve, scores) if evaluated else None
    picture = np.zeros((4, 4, 3), np.uint8)
    return Heatmap(picture, f"{method} caption", scale, method, "cat", share, evaluation)


def test_a_page_has_one_bar_per_scale_and_a_row_per_heatmap():
    lrp, other = Scale("LRP", "coldnhot", -1.0, 1.0), Scale("Occlusion", "coldnhot", 0.0, 2.0)
    items = [
        heatmap("LRP a", lrp, 0.987654, False),
        heatmap("LRP b", lrp, 1.0, False),
        heatmap("Occlusion", other, None, False),
    ]
    page = image_page("title", np.zeros((4, 4, 3), np.uint8), items)
    assert page.page_scales == [lrp, other] and list(page.scales) == [0, 0, 1]
    assert page.captions == ["LRP a caption", "LRP b caption", "Occlusion caption"]
    assert page.table[0] == ["method", "class", "sum R / logit"]
    assert page.table[1] == ["LRP a", "cat", "0.988"]
    assert page.table[3] == ["Occlusion", "cat", "n/a"]
    assert page.evaluations == []


def test_evaluated_heatmaps_add_their_scores():
    scale = Scale("LRP", "coldnhot", -1.0, 1.0, "positive")
    page = image_page("title", np.zeros((4, 4, 3), np.uint8), [heatmap("LRP", scale, 1.0, True)])
    assert page.table[0][3:] == list(SCORE_TITLES.values())
    row = dict(zip(SCORE_TITLES, page.table[1][3:], strict=True))
    assert row["morf_aopc"] == "0.5" and row["mass_accuracy"] == "n/a"
    assert [item.method for item in page.evaluations] == ["LRP"]
