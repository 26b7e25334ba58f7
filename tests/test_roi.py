import pytest

from medgen.data.roi import RoiError, check_box, parse_boxes


@pytest.mark.parametrize("cell,expected", [
    ("[[[1165, 822, 1294, 1000]]]", [(1165, 822, 1294, 1000)]),
    ("((1592, 2137, 1804, 2409),)", [(1592, 2137, 1804, 2409)]),
    ("[[1, 2, 3, 4], [5, 6, 7, 8]]", [(1, 2, 3, 4), (5, 6, 7, 8)]),
    ("[[[[10, 20, 30, 40]]], [[50, 60, 70, 80]]]", [(10, 20, 30, 40), (50, 60, 70, 80)]),
    ("(1.4, 2.6, 3, 4)", [(1, 3, 3, 4)]),
    ([[0, 0, 5, 5]], [(0, 0, 5, 5)]),
])
def test_parse_any_nesting(cell, expected):
    assert parse_boxes(cell) == expected


@pytest.mark.parametrize("cell,reason", [
    ("", "empty cell"), ("[]", "empty list"), ("[[1, 2, 3]]", "4 numbers"), ("not a list", "cannot parse"),
    ("__import__('os').system('echo hi')", "cannot parse"), (float("nan"), "empty cell"),
])
def test_parse_rejects(cell, reason):
    with pytest.raises(RoiError, match=reason):
        parse_boxes(cell)


def test_check_box_rules():
    assert check_box((10, 20, 30, 40), 100, 100) == (10, 20, 30, 40)
    with pytest.raises(RoiError, match="inverted"):
        check_box((30, 20, 10, 40), 100, 100)
    with pytest.raises(RoiError, match="empty"):
        check_box((10, 20, 10, 40), 100, 100)
    with pytest.raises(RoiError, match="outside the image"):
        check_box((200, 200, 300, 300), 100, 100)
    with pytest.raises(RoiError, match="75% outside"):
        check_box((90, 90, 110, 110), 100, 100)
    # 60% inside: clamped
    assert check_box((-4, 0, 6, 10), 100, 100) == (0, 0, 6, 10)
