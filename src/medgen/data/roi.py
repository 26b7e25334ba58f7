"""ROI boxes from manifest metadata, in the EMBED convention.

EMBED's ``ROI_coords`` column holds nested lists or tuples of ``[ymin, xmin, ymax, xmax]``
boxes in pixel coordinates (row, column) of the stored image, e.g. ``[[[1165, 822, 1294, 1000]]]``
or ``((1592, 2137, 1804, 2409),)``. Any nesting depth is accepted; every innermost group of
four numbers is one box, and each box becomes one item.

Validation rule (``check_box``), applied against the image size (H, W):
- a box with ``ymax <= ymin`` or ``xmax <= xmin`` is *inverted or empty*: rejected;
- a box entirely outside the image is rejected;
- a box partly outside the image is clamped to it when at least ``MIN_INSIDE`` (50%) of its
  area lies inside; otherwise it is rejected;
- a clamped box smaller than 2 pixels on either side is rejected.
"""
from __future__ import annotations

import ast
import math
from typing import Iterable

Box = tuple[int, int, int, int]
MIN_INSIDE = 0.5
MAX_COORDINATE = 2**31


def _short(box) -> str:
    """A box for a message, each number cut to 12 characters."""
    return "[" + ", ".join(t if len(t := str(v)) <= 12 else t[:9] + "..." for v in box) + "]"


class RoiError(ValueError):
    """A ROI cell or box that cannot be used; the message is the rejection reason."""


def _flatten_boxes(node) -> Iterable[tuple]:
    if isinstance(node, (list, tuple)):
        if len(node) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node):
            yield tuple(node)
            return
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node):
            raise RoiError(f"a box must have 4 numbers [ymin, xmin, ymax, xmax], got {_short(node)}")
        for child in node:
            yield from _flatten_boxes(child)
        return
    raise RoiError(f"unexpected value {node!r} in ROI coordinates")


def parse_boxes(cell: object) -> list[Box]:
    """All boxes in one manifest cell. Raises RoiError when the cell holds no valid box list."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        raise RoiError("no ROI box (empty cell)")
    if isinstance(cell, str):
        text = cell.strip()
        if not text:
            raise RoiError("no ROI box (empty cell)")
        try:
            node = ast.literal_eval(text)  # literals only: never evaluates code
        except (ValueError, SyntaxError):
            raise RoiError(f"cannot parse ROI coordinates {text[:60]!r}") from None
        except (MemoryError, RecursionError):  # deeply nested brackets
            raise RoiError("ROI coordinates nested too deeply") from None
    else:
        node = cell
    boxes = []
    for box in _flatten_boxes(node):
        # a pixel coordinate beyond 2**31 is no image's; a 400-digit integer would not even convert to float
        if any(isinstance(v, float) and not math.isfinite(v) for v in box) or any(abs(v) > MAX_COORDINATE for v in box):
            raise RoiError(f"ROI coordinate out of range in {_short(box)} (expected pixel positions)")
        boxes.append(tuple(int(round(v)) for v in box))
    if not boxes:
        raise RoiError("no ROI box (empty list)")
    return boxes


def check_box(box: Box, height: int, width: int) -> Box:
    """The box clamped to the image, or RoiError with the reason it is rejected (rule above)."""
    ymin, xmin, ymax, xmax = box
    if ymax <= ymin or xmax <= xmin:
        kind = "empty" if (ymax == ymin or xmax == xmin) else "inverted"
        raise RoiError(f"{kind} ROI box {list(box)} (need ymin < ymax and xmin < xmax)")
    cy0, cx0 = max(ymin, 0), max(xmin, 0)
    cy1, cx1 = min(ymax, height), min(xmax, width)
    if cy1 <= cy0 or cx1 <= cx0:
        raise RoiError(f"ROI box {list(box)} lies outside the image ({height}x{width})")
    inside = (cy1 - cy0) * (cx1 - cx0) / ((ymax - ymin) * (xmax - xmin))
    if inside < MIN_INSIDE:
        raise RoiError(
            f"ROI box {list(box)} is {100 * (1 - inside):.0f}% outside the image ({height}x{width})"
        )
    if cy1 - cy0 < 2 or cx1 - cx0 < 2:
        raise RoiError(f"ROI box {list(box)} is smaller than 2 pixels inside the image")
    return cy0, cx0, cy1, cx1


def format_box(box: Box | None) -> str:
    return "" if box is None else "[{}, {}, {}, {}]".format(*box)
