"""Which way up a page is, from the OCR pass that already ran.

Scanned drops hold pages fed sideways or upside down; read as they are, they lose
a quarter of their characters. No model in the OCR wheel tells a page's orientation
(its line classifier flips single lines, and flipped 4 of 7 upright lines of a real
page), so the recogniser's own confidence decides:

* Text lines are long: if the tall boxes (height at least VERTICAL_RATIO times the
  width) outweigh the wide ones, the page is on its side. Nearly square boxes, which
  are most of what a photo without text yields, do not count.
* Lines of that direction with fewer than MIN_CHARACTERS letters and digits in all
  are no evidence: nothing more runs.
* The longest CHECKED_LINES lines of that direction were read with some confidence.
  At UPRIGHT_SCORE or more they read as they are: the page is upright, or on its
  side turned a quarter to the left (RapidOCR turns a tall line a quarter before
  reading it, so its lines read well, in the wrong order). Otherwise those lines are
  read again turned half round, one recognition batch; if that reads at least
  TURNED_SCORE and MARGIN better, the page is turned.

A turned page is then read again turned upright (`upright`), and its boxes put back
into the pixels of the image as it was given (`image_points`). `bench.ocr_set
--turned` measures it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

VERTICAL_RATIO = 1.5  # RapidOCR's own rule for turning a crop before reading it
# A word or two ("C000" on a camera) is no evidence of a page: as many letters or
# digits on the lines of the page's direction are needed.
MIN_CHARACTERS = 8
CHECKED_LINES = 3
UPRIGHT_SCORE = 0.9  # upright lines averaged 0.96 or more, upside-down ones 0.86 at most
TURNED_SCORE = 0.8
MARGIN = 0.15


@dataclasses.dataclass(frozen=True)
class ReadLine:
    """One line the detector found: its crop, how it read, and its shape."""

    crop: np.ndarray
    text: str
    score: float
    length: float  # the box's long side
    tall: bool | None  # None: nearly square


def read_lines(
    boxes: np.ndarray | None, crops: Sequence[np.ndarray], texts, scores
) -> list[ReadLine]:
    """The lines of one pass, from the detector's boxes (four corners each) and what
    the recogniser read from their crops."""
    if boxes is None or texts is None or not len(boxes):
        return []
    corners = np.asarray(boxes, dtype=np.float32)
    width = np.maximum(
        np.linalg.norm(corners[:, 0] - corners[:, 1], axis=1),
        np.linalg.norm(corners[:, 2] - corners[:, 3], axis=1),
    )
    height = np.maximum(
        np.linalg.norm(corners[:, 0] - corners[:, 3], axis=1),
        np.linalg.norm(corners[:, 1] - corners[:, 2], axis=1),
    )
    lines = []
    for crop, text, score, w, h in zip(crops, texts, scores, width, height, strict=True):
        w, h = int(w), int(h)  # whole pixels, as RapidOCR measures a crop
        if not w or not h:
            continue
        tall = True if h >= VERTICAL_RATIO * w else False if w >= VERTICAL_RATIO * h else None
        lines.append(ReadLine(crop, text, float(score), float(max(w, h)), tall))
    return lines


def _weighted_score(scores: np.ndarray, weights: np.ndarray, counted: np.ndarray) -> float:
    return float(np.average(scores[counted], weights=weights[counted])) if counted.any() else 0.0


Reread = Callable[[list[np.ndarray]], tuple[Sequence[str], Sequence[float]]]


def confidence(texts: Sequence[str] | None, scores: Sequence[float] | None) -> float:
    """How much a read found: its characters, each weighted by its line's score."""
    return sum(
        len(text.strip()) * score for text, score in zip(texts or (), scores or (), strict=True)
    )


def page_angle(lines: list[ReadLine], read_again: Reread) -> int:
    """How far the page is turned counter-clockwise (0, 90, 180 or 270); 0 when the
    lines do not say. `read_again(crops)` recognises crops: (texts, scores)."""
    shaped = [line for line in lines if line.tall is not None]
    if not shaped:
        return 0
    tall = sum(line.length for line in shaped if line.tall)
    on_side = tall > sum(line.length for line in shaped if not line.tall)
    along = [line for line in shaped if line.tall == on_side]
    if sum(character.isalnum() for line in along for character in line.text) < MIN_CHARACTERS:
        return 0
    checked = sorted(along, key=lambda line: -line.length)[:CHECKED_LINES]
    weights = np.array([line.length for line in checked])
    # A line read as nothing has no confidence to weigh.
    counted = np.array([bool(line.text.strip()) for line in checked])
    if _weighted_score(np.array([line.score for line in checked]), weights, counted) >= (
        UPRIGHT_SCORE
    ):
        return 270 if on_side else 0
    texts, scores = read_again([np.ascontiguousarray(line.crop[::-1, ::-1]) for line in checked])
    counted |= np.array([bool(text.strip()) for text in texts])
    before = _weighted_score(np.array([line.score for line in checked]), weights, counted)
    after = _weighted_score(np.array(scores, dtype=np.float64), weights, counted)
    if after >= TURNED_SCORE and after - before >= MARGIN:
        return 90 if on_side else 180
    if on_side and before >= TURNED_SCORE and before - after >= MARGIN:
        return 270
    return 0


def upright(pixels: np.ndarray, angle: int) -> np.ndarray:
    """The image turned back by `angle` (counter-clockwise degrees it was turned)."""
    return np.ascontiguousarray(np.rot90(pixels, -(angle // 90)))


def image_points(points: np.ndarray, angle: int, width: int, height: int) -> np.ndarray:
    """Points of the upright image (`upright(pixels, angle)`) in the pixels of the
    image as it was given, `width` x `height`. Corners keep their order: clockwise
    from the text's top-left."""
    x, y = points[..., 0], points[..., 1]
    if angle == 90:
        return np.stack([y, height - x], axis=-1)
    if angle == 180:
        return np.stack([width - x, height - y], axis=-1)
    if angle == 270:
        return np.stack([width - y, x], axis=-1)
    return points
