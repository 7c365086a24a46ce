"""Unit ids: one format, one parser, used by the pools, the callback and annotate."""

from __future__ import annotations

import pytest

from axal.domain import format_unit_id, parse_unit_id, unit_image
from axal.pools import Unit


def test_a_tile_id_round_trips_and_names_its_image():
    tile = format_unit_id("sub-01_img", (32, 64, 32, 16))
    assert tile == "sub-01_img@32,64,32,16"
    assert parse_unit_id(tile) == ("sub-01_img", (32, 64, 32, 16))
    assert unit_image(tile) == "sub-01_img"
    assert Unit.parse(tile, {"sub-01_img": (128, 128)}).id == tile


def test_a_whole_image_id_is_its_image_even_with_an_at_sign():
    assert format_unit_id("img") == "img" and parse_unit_id("img") == ("img", None)
    assert unit_image("scan@2x") == "scan@2x"  # not a box: the whole image
    assert unit_image("scan@2x@0,0,8,8") == "scan@2x"
    assert Unit.parse("scan@2x", {"scan@2x": (8, 8)}).whole


def test_a_malformed_unit_id_is_refused_by_name():
    with pytest.raises(ValueError, match="neither an image id"):
        Unit.parse("img@1,2", {"img": (8, 8)})
    with pytest.raises(ValueError, match="lacks"):
        Unit.parse("other@0,0,8,8", {"img": (8, 8)})
