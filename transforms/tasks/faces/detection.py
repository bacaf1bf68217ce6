"""The `facedetection` step: every face's box, keypoints and score."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import apache_beam as beam
import pyarrow as pa

from transforms.inference.run_model import RunModelOnImages
from transforms.records import LOCAL_BACKEND, ImageRecord, StepName
from transforms.remote import registry
from transforms.remote.answer_store import StoredAnswer
from transforms.remote.api import Api
from transforms.remote.registry import api_of, backend_setting
from transforms.settings import setting
from transforms.tasks.faces import blazeface

# 2: the local model's tiles as `blazeface.tiles` lays them out; 3: the short-range
# model's close-ups too, and 0.65 as the least score
STEP_VERSION = "3"
# What numbers an API's faces, in their ids: unchanged since step version 1, so that
# a new local tiling leaves API faces (and the decisions made on them) as they were.
API_NUMBERING = "step-1"

POINT = pa.struct([("x", pa.float32()), ("y", pa.float32())])
BOX = pa.struct(
    [
        ("left", pa.float32()),
        ("top", pa.float32()),
        ("right", pa.float32()),
        ("bottom", pa.float32()),
    ]
)
KEYPOINT = pa.struct([("name", pa.string()), ("x", pa.float32()), ("y", pa.float32())])
FACE = pa.struct(
    [
        ("face_index", pa.int32()),
        ("face_id", pa.string()),
        ("box", BOX),
        ("keypoints", pa.list_(KEYPOINT)),
        ("score", pa.float32()),
    ]
)
RESULT_TYPE = pa.struct(
    [
        ("step_version", pa.string()),
        ("backend", pa.string()),  # "local", or the API that answered
        ("model", pa.string()),
        ("detector", pa.string()),
        ("faces", pa.list_(FACE)),
    ]
)


def detector_settings(min_score: float, min_face_fraction: float) -> str:
    """Everything that decides which faces are found, and so how they are numbered."""
    return (
        f"{blazeface.MODEL_ID}/step-{STEP_VERSION}/min-score-{min_score:g}"
        f"/min-size-{min_face_fraction:g}"
    )


def face_id(image_sha256: str, detector: str, face_index: int) -> str:
    """A face's identity: a pure function of the image and the detector settings."""
    key = f"{image_sha256}/{detector}/{face_index}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class FoundFace:
    """A face from any detector, in image pixels; keypoints named as BlazeFace's."""

    box: tuple[float, float, float, float]  # left, top, right, bottom
    keypoints: dict[str, tuple[float, float]]
    score: float | None  # None: the detector gives no confidence (Azure Face)


def numbered_faces(image_sha256: str, detector: str, faces: list[FoundFace]) -> list[dict]:
    """Result entries numbered left to right, each with its stable `face_id`."""
    left_to_right = sorted(faces, key=lambda face: (face.box[0], face.box[1]))
    return [
        {
            "face_index": index,
            "face_id": face_id(image_sha256, detector, index),
            "box": dict(zip(("left", "top", "right", "bottom"), face.box, strict=True)),
            "keypoints": [
                {"name": name, "x": x, "y": y} for name, (x, y) in face.keypoints.items()
            ],
            "score": face.score,
        }
        for index, face in enumerate(left_to_right)
    ]


def face_entries(
    image_sha256: str, detector: str, detections: list[blazeface.Detection], scale: float = 1.0
) -> list[dict[str, Any]]:
    """BlazeFace's detections as result entries, in the file's pixels (`scale` per pixel)."""
    found = [
        FoundFace(
            tuple(value * scale for value in detection.box),
            {
                name: (x * scale, y * scale)
                for name, (x, y) in zip(blazeface.KEYPOINTS, detection.keypoints, strict=True)
            },
            detection.score,
        )
        for detection in detections
    ]
    return numbered_faces(image_sha256, detector, found)


def box_of(face: dict[str, Any]) -> tuple[float, float, float, float]:
    box = face["box"]
    return box["left"], box["top"], box["right"], box["bottom"]


def keypoint(face: dict[str, Any], name: str) -> tuple[float, float] | None:
    point = next((p for p in face["keypoints"] if p["name"] == name), None)
    return None if point is None else (point["x"], point["y"])


def eyes(face: dict[str, Any]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(subject's right eye, left eye); level eyes placed in the box if a detector gave none."""
    right, left = keypoint(face, "right_eye"), keypoint(face, "left_eye")
    if right is None or left is None:
        box_left, top, box_right, bottom = box_of(face)
        width, level = box_right - box_left, top + 0.4 * (bottom - top)
        right, left = (box_left + 0.3 * width, level), (box_left + 0.7 * width, level)
    return right, left


def _prepare(record: ImageRecord, min_face_fraction: float) -> blazeface.FaceSearch:
    return blazeface.face_search(record.image, min_face_fraction)


def _attach(
    record: ImageRecord, detections: list[blazeface.Detection], detector: str
) -> ImageRecord:
    result = {
        "step_version": STEP_VERSION,
        "backend": LOCAL_BACKEND,
        "model": blazeface.MODEL_ID,
        "detector": detector,
        "faces": face_entries(record.entry.image_sha256, detector, detections, record.scale),
    }
    return record.with_result(StepName.FACE_DETECTION, result)


@dataclasses.dataclass(frozen=True)
class FaceDetectionSettings:
    backend: str = backend_setting(
        StepName.FACE_DETECTION, "azure: Face detect; google: Cloud Vision faces"
    )
    grid: int = setting(
        1,
        "with the azure backend, send N x N images as one grid image per detect call: "
        "N^2 times fewer calls, but small faces are lost (1: off)",
        flag="--face-grid",
    )
    min_score: float = setting(
        blazeface.DEFAULT_MIN_SCORE,
        "drop faces detected with less confidence, 0-1",
        flag="--face-min-score",
    )
    min_size: float = setting(
        blazeface.DEFAULT_MIN_FACE_FRACTION,
        "local model: smallest face to look for, as a fraction of the image's longest "
        "side; smaller finds smaller faces at more cost",
        flag="--face-min-size",
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.min_score < 1.0:
            raise ValueError(f"--face-min-score must be between 0 and 1, got {self.min_score}")
        if not 0.005 <= self.min_size <= 1.0:
            raise ValueError(
                "--face-min-size must be 0.005-1 (a fraction of the longest side), "
                f"got {self.min_size}"
            )
        if not 1 <= self.grid <= 4:
            raise ValueError(
                f"--face-grid must be 1-4 (images per side of the grid), got {self.grid}"
            )
        if self.grid != 1 and self.backend != registry.AZURE:
            raise ValueError("--face-grid is for --facedetection-backend azure only")
        self.api()  # an unknown backend fails here

    def api(self) -> Api | None:
        return api_of(StepName.FACE_DETECTION, self.backend, self.grid)

    def detector(self) -> str:
        """What decides which faces are found, and so how they are numbered (and the
        chips named)."""
        if api := self.api():
            return f"{api.name}/{api.model_version}/{API_NUMBERING}/min-score-{self.min_score:g}"
        return detector_settings(self.min_score, self.min_size)


@dataclasses.dataclass(eq=False)
class DetectFaces(beam.PTransform):
    """Finds every face with the local model, in pixels of the EXIF-oriented image.

    Args:
        settings: faces scored below `min_score` are dropped; `min_size` is the
            smallest face looked for, as a fraction of the image's longest side
            (never below 20 px): smaller means more tiles.
        threads: LiteRT threads per worker process.
        step: the metrics namespace and the step named in error rows.

    Returns:
        Outputs `records` (with a `facedetection` result) and `errors`.
    """

    settings: FaceDetectionSettings = FaceDetectionSettings()
    threads: int = 1
    step: str = StepName.FACE_DETECTION

    def __post_init__(self) -> None:
        super().__init__()
        blazeface.BlazeFace.check_installed()

    def expand(self, records):
        settings = self.settings
        return records | RunModelOnImages(
            self.step,
            blazeface.BlazeFace(settings.min_score, self.threads),
            prepare=functools.partial(_prepare, min_face_fraction=settings.min_size),
            attach=functools.partial(
                _attach, detector=detector_settings(settings.min_score, settings.min_size)
            ),
            max_batch_size=4,
        )


def faces_result(
    record: ImageRecord, stored: StoredAnswer, backend: str, detector: str, min_score: float
) -> dict[str, Any]:
    """The step's result from an API's stored faces."""
    found = [
        FoundFace(
            tuple(face["box"]),
            {name: tuple(point) for name, point in face["keypoints"].items()},
            face["score"],
        )
        for face in stored.answer
        if face["score"] is None or face["score"] >= min_score
    ]
    return {
        "step_version": STEP_VERSION,
        "backend": backend,
        "model": stored.model,
        "detector": detector,
        "faces": numbered_faces(record.entry.image_sha256, detector, found),
    }
