"""Azure Face detect: face boxes and landmarks, one image (or one grid) per call."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from transforms.records import StepName
from transforms.remote import grid
from transforms.remote.api import Api, ApiFeature, Packed, azure_post, jpeg, name_pairs, point

AZURE_FACE = "azure-face"
AZURE_FACE_DETECTION_MODEL = "detection_03"
AZURE_FACE_API_VERSION = "v1.0"


@dataclasses.dataclass(frozen=True)
class AzureFace(Api):
    """Azure Face detect with landmarks; no face IDs (those need Limited Access).

    Attributes:
        grid_columns: above 1, `grid_columns^2` images share one call as a grid.
    """

    grid_columns: int = 1
    name: ClassVar[str] = AZURE_FACE
    # detection_03 finds faces down to 36 px in images up to 1920x1080.
    max_side: ClassVar[int] = 1920

    @property
    def images_per_request(self) -> int:
        return self.grid_columns**2

    @property
    def model_version(self) -> str:
        if self.grid_columns == 1:
            return AZURE_FACE_DETECTION_MODEL
        return f"{AZURE_FACE_DETECTION_MODEL}-grid{self.grid_columns}x{self.grid_columns}"

    def pack(self, images):
        if self.grid_columns == 1:
            return super().pack(images)
        image, cells = grid.tile(images, self.grid_columns, self.max_side)
        return Packed([jpeg(image)], cells)

    def send(self, client, endpoint, key, packed):
        params = {
            "detectionModel": AZURE_FACE_DETECTION_MODEL,
            "returnFaceId": "false",
            "returnFaceLandmarks": "true",
        }
        url = f"{endpoint.rstrip('/')}/face/{AZURE_FACE_API_VERSION}/detect"
        return azure_post(client, url, key, params, packed.parts[0])

    def split(self, payload, packed):
        if not isinstance(payload, list):
            raise ValueError(f"expected a list of faces, got {type(payload).__name__}")
        if packed.layout is None:
            return [payload]
        return grid.faces_by_cell(payload, packed.layout)


_AZURE_LANDMARKS = {"pupilLeft": "a_eye", "pupilRight": "b_eye", "noseTip": "nose_tip"}


def faces_from_azure(answer: list[dict[str, Any]], scale: float) -> list[dict[str, Any]]:
    faces = []
    for face in answer:
        rectangle = face["faceRectangle"]
        left, top = rectangle["left"] * scale, rectangle["top"] * scale
        box = [left, top, left + rectangle["width"] * scale, top + rectangle["height"] * scale]
        marks = face.get("faceLandmarks", {})
        keypoints = {
            ours: point(marks[theirs], scale)
            for theirs, ours in _AZURE_LANDMARKS.items()
            if theirs in marks
        }
        if "mouthLeft" in marks and "mouthRight" in marks:
            (x1, y1), (x2, y2) = (point(marks[side], scale) for side in ("mouthLeft", "mouthRight"))
            keypoints["mouth"] = [(x1 + x2) / 2, (y1 + y2) / 2]
        name_pairs(keypoints, "a_eye", "b_eye")
        faces.append({"box": box, "keypoints": keypoints, "score": None})
    return faces


STEPS = {StepName.FACE_DETECTION: ApiFeature(AzureFace, faces_from_azure)}
