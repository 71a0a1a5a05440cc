"""Tests of the colour-map source language, colour maps, palettes and the named-map cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_desktop_core.cmap import (
    CMAPS,
    ColorMap,
    ColorMapError,
    LazyColorMapCache,
    get_cmap,
)
from lrp_desktop_core.names import COLOUR_MAPS

# The end colours each built-in map must have, written out from its documented source.
BUILTIN_ENDS = {
    "gray": ((0, 0, 0), (255, 255, 255)),
    "wred": ((255, 255, 255), (255, 0, 0)),
    "wblue": ((255, 255, 255), (0, 0, 255)),
    "hot": ((0, 0, 0), (255, 255, 255)),
    "cold": ((0, 0, 0), (0, 255, 255)),
    "coldnhot": ((0, 255, 255), (255, 255, 255)),
    "bwr": ((0, 0, 255), (255, 0, 0)),
    "france": ((0x00, 0x55, 0xA4), (0xEF, 0x41, 0x35)),
    "seismic": ((0, 0, 0xD0), (0xD0, 0, 0)),
    "coolio": ((0, 0xD0, 0xD0), (0xD0, 0, 0xD0)),
    "coleus": ((0, 0xD0, 0), (0xD0, 0, 0xD0)),
    "rdbu": ((0x21, 0x66, 0xAC), (0xB2, 0x18, 0x2B)),
    "coolwarm": ((0x3B, 0x4C, 0xC0), (0xB4, 0x04, 0x26)),
}

#: Maps this project adds to zennit's.
OWN_MAPS = ("rdbu", "coolwarm")


def positions(source: str) -> list[int]:
    return [node.position for node in ColorMap(source).nodes]


def colors(source: str) -> list[tuple[int, int, int]]:
    return [node.color for node in ColorMap(source).nodes]


# --- valid sources -------------------------------------------------------------------------


def test_six_and_three_digit_colours_and_doubling():
    assert colors("ff8000,f80,abc") == [(255, 128, 0), (255, 136, 0), (0xAA, 0xBB, 0xCC)]


def test_upper_case_hex_and_spaces_around_tokens_are_accepted():
    assert colors(" FF0000 , 8:00FF00 ,00f ") == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def test_explicit_positions_one_digit_doubled_two_digits_taken():
    assert positions("000,8:fff,c0:f00,fff") == [0, 0x88, 0xC0, 255]


def test_unpositioned_colours_spread_between_neighbours():
    # defaults at the ends, spread evenly on whole steps in between
    assert positions("000,f00,ff0,fff") == [0, 85, 170, 255]
    assert positions("0ff,00f,80:000,f00,ff0,fff") == [0, 64, 128, 170, 212, 255]
    assert positions("000,40:111,222,333,c0:444,fff") == [0, 64, 106, 149, 192, 255]


def test_explicit_first_position_holds_first_colour_below_it():
    cmap = ColorMap("80:f00,00f")
    assert positions("80:f00,00f") == [128, 255]
    np.testing.assert_allclose(cmap(np.array([0.0, 0.3, 128 / 255])), [[1, 0, 0]] * 3)


def test_values_at_nodes_are_node_colours():
    source = "0ff,00f,80:000,f00,ff0,fff"
    cmap = ColorMap(source)
    at_nodes = np.array([node.position for node in cmap.nodes]) / 255
    expected = np.array([node.color for node in cmap.nodes]) / 255
    np.testing.assert_allclose(cmap(at_nodes), expected, atol=1e-12)


def test_values_between_nodes_are_interpolated_linearly():
    cmap = ColorMap("000,80:fff,f00")
    # a quarter of the way from 0 to 128 on the 0..255 scale
    value = 32 / 255
    np.testing.assert_allclose(cmap(np.array(value)), [0.25, 0.25, 0.25], atol=1e-12)
    # between white (128) and red (255): green and blue fall linearly
    value = (128 + 127 * 0.75) / 255
    np.testing.assert_allclose(cmap(np.array(value)), [1.0, 0.25, 0.25], atol=1e-12)


def test_values_outside_unit_interval_are_clipped():
    cmap = ColorMap("00f,f00")
    np.testing.assert_allclose(cmap(np.array([-3.0, 7.0])), [[0, 0, 1], [1, 0, 0]])


def test_call_keeps_shape_and_array_kind():
    cmap = ColorMap("000,fff")
    values = np.linspace(0, 1, 24).reshape(2, 3, 4)
    out = cmap(values)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(out[..., 1], values)


def test_call_on_tensors_returns_tensors_of_matching_dtype():
    cmap = ColorMap("000,fff")
    half = cmap(torch.full((2, 5), 0.5, dtype=torch.float64))
    assert isinstance(half, torch.Tensor) and half.dtype == torch.float64
    assert half.shape == (2, 5, 3)
    torch.testing.assert_close(half, torch.full((2, 5, 3), 0.5, dtype=torch.float64))
    whole = cmap(torch.tensor([0, 1]))
    assert whole.dtype == torch.float32
    torch.testing.assert_close(whole, torch.tensor([[0.0] * 3, [1.0] * 3]))


def test_palette_shape_dtype_and_ends():
    table = ColorMap("00f,80:fff,f00").palette()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert tuple(table[0]) == (0, 0, 255) and tuple(table[-1]) == (255, 0, 0)
    assert tuple(table[128]) == (255, 255, 255)


def test_palette_level_changes_contrast_around_centre():
    cmap = ColorMap("000,fff")
    flat = cmap.palette(level=0.0)
    assert (flat == 128).all()
    steep = cmap.palette(level=2.0)
    assert tuple(steep[63]) == (0, 0, 0) and tuple(steep[192]) == (255, 255, 255)
    assert abs(int(steep[140, 0]) - int(cmap.palette()[140, 0])) > 5


def test_source_is_kept_and_assigning_recompiles():
    cmap = ColorMap("000,fff")
    assert cmap.source == "000,fff" and "000,fff" in repr(cmap)
    cmap.source = "f00,00f"
    np.testing.assert_allclose(cmap(np.array(0.0)), [1, 0, 0])
    with pytest.raises(ValueError, match="at least two colours"):
        cmap.source = "f00"
    assert cmap.source == "f00,00f"  # a failed assignment leaves the map as it was


# --- invalid sources -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "token", "index", "offset", "problem"),
    [
        ("000,ffg", "ffg", 1, 4, "bad colour"),
        ("000,ff", "ff", 1, 4, "bad colour"),
        ("000,ffff", "ffff", 1, 4, "bad colour"),
        ("000,80:", "80:", 1, 4, "bad colour"),
        ("000,1ff:fff", "1ff:fff", 1, 4, "bad position"),
        ("000,g:fff", "g:fff", 1, 4, "bad position"),
        ("000,  :fff", ":fff", 1, 6, "bad position"),
        ("a:b:c,fff", "a:b:c", 0, 0, "more than one"),
        ("000,80:f00,40:fff", "40:fff", 2, 11, "not above"),
        ("000,40:f00,40:fff", "40:fff", 2, 11, "not above"),
        ("000,0:fff,f00", "0:fff", 1, 4, "not above"),
        ("000,ff:fff,f00", "f00", 2, 11, "not above"),
        ("0:000,fff,fff,02:f00", "fff", 1, 6, "not above"),
        ("fff", "fff", 0, 0, "at least two"),
        ("8:fff", "8:fff", 0, 0, "at least two"),
        ("", "", 0, 0, "empty source"),
        ("000,,fff", "", 1, 4, "empty token"),
        ("000,fff,", "", 2, 8, "empty token"),
        ("000, ,fff", "", 1, 5, "empty token"),
    ],
)
def test_bad_source_names_token_index_and_offset(source, token, index, offset, problem):
    with pytest.raises(ValueError, match="token") as caught:
        ColorMap(source)
    error = caught.value
    assert isinstance(error, ColorMapError)
    assert (error.token, error.index, error.offset) == (token, index, offset)
    message = str(error)
    assert problem in message
    assert f"token {index}" in message and f"character {offset}" in message
    assert repr(token) in message


def test_source_must_be_a_string():
    with pytest.raises(TypeError):
        ColorMap(["000", "fff"])


# --- built-in maps and the cache -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN_ENDS))
def test_builtin_map_end_colours(name):
    start, end = BUILTIN_ENDS[name]
    table = CMAPS[name].palette()
    assert tuple(table[0]) == start and tuple(table[-1]) == end


def test_builtin_names_are_exactly_the_documented_ones():
    assert sorted(CMAPS) == sorted(BUILTIN_ENDS)


def test_diverging_maps_are_recognised():
    diverging = {name for name in CMAPS if CMAPS[name].diverging}
    assert diverging == {
        "coldnhot",
        "bwr",
        "france",
        "seismic",
        "coolio",
        "coleus",
        "rdbu",
        "coolwarm",
    }


@pytest.mark.parametrize("name", ["rdbu", "coolwarm"])
def test_print_maps_are_symmetric_in_lightness_and_lightest_at_zero(name):
    # a reader without colour vision (or a greyscale print) sees |R|: equal relevance of either
    # sign has about the same lightness, and lightness falls steadily away from zero
    luma = CMAPS[name].palette().astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luma[:128] - luma[::-1][:128])[32:].max() < 8
    assert (np.diff(luma[128:]) <= 0.5).all() and (np.diff(luma[:128]) >= -0.5).all()


def test_every_map_is_catalogued_with_a_tip():
    assert set(COLOUR_MAPS) == set(CMAPS)


def test_cache_compiles_lazily_and_once():
    cache = LazyColorMapCache({"good": "000,fff", "broken": "000"})
    assert len(cache) == 2 and list(cache) == ["good", "broken"]
    assert cache["good"] is cache["good"]
    with pytest.raises(ValueError, match="at least two colours"):
        cache["broken"]  # a bad source only fails when the map is first used


def test_cache_assignment_checks_the_source_and_deletion_forgets():
    cache = LazyColorMapCache({})
    cache["mine"] = "f00,0f0"
    assert cache["mine"].source == "f00,0f0"
    with pytest.raises(ValueError, match="empty token"):
        cache["bad"] = "f00,"
    assert "bad" not in cache
    del cache["mine"]
    assert "mine" not in cache


def test_get_cmap_accepts_names_maps_and_sources():
    assert get_cmap("bwr") is CMAPS["bwr"]
    cmap = ColorMap("000,fff")
    assert get_cmap(cmap) is cmap
    assert get_cmap("f00,00f").nodes[0].color == (255, 0, 0)
    assert get_cmap("00:f00,ff:00f").nodes[1].color == (0, 0, 255)


def test_get_cmap_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown colour map 'nope'") as caught:
        get_cmap("nope")
    assert all(name in str(caught.value) for name in CMAPS)
    with pytest.raises(TypeError):
        get_cmap(3)
    with pytest.raises(ValueError, match="bad colour"):
        get_cmap("000,xyz")


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(set(BUILTIN_ENDS) - set(OWN_MAPS)))
def test_builtin_maps_match_zennit(name):
    zennit_image = pytest.importorskip("zennit.image")
    values = np.linspace(0.0, 1.0, 511)
    np.testing.assert_allclose(CMAPS[name](values), zennit_image.CMAPS[name](values), atol=1e-9)
    for level in (1.0, 1.7):
        ours = CMAPS[name].palette(level).astype(int)
        theirs = zennit_image.palette(name, level).astype(int)
        # zennit truncates to 8 bits, this project rounds: at most one step apart
        assert np.abs(ours - theirs).max() <= 1
