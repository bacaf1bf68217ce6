"""The `facecrop` step: an aligned chip per face, written as a versioned transform.

Each face is turned upright, dlib's 5-point model finds its eye corners and nose,
and dlib cuts the 150 px chip its face embedder expects. The chip is written as a
JPEG and kept on the record for `faceprint`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from PIL import Image

from transforms import paths
from transforms.inference.run_model import LocalModel, RunModelOnImages
from transforms.io import storage
from transforms.records import ImageRecord, ManifestEntry, StepName
from transforms.settings import setting
from transforms.tasks.faces import align, dlib_models
from transforms.tasks.faces.detection import POINT, box_of, eyes

STEP_VERSION = "1"
TRANSFORM_NAME = "facecrop"
# 2: chips of the faces the full- and short-range detector finds (facedetection 3)
DEFAULT_TRANSFORM_VERSION = "2"
CHIP_SIZE = 150  # what dlib's ResNet embedder was trained on
CHIP_PADDING = 0.25
JPEG_QUALITY = 95

CROP = pa.struct(
    [
        ("face_index", pa.int32()),
        ("face_id", pa.string()),
        ("uri", pa.string()),
        ("landmarks", pa.list_(POINT)),
    ]
)
RESULT_TYPE = pa.struct(
    [
        ("step_version", pa.string()),
        ("transform_version", pa.string()),
        ("model", pa.string()),
        ("crops", pa.list_(CROP)),
    ]
)


@dataclasses.dataclass(frozen=True)
class AlignedFace:
    chip: np.ndarray  # (150, 150, 3) uint8
    landmarks: list[tuple[float, float]]  # 5 points in image pixels


def crop_name(file_name: str, face_index: int) -> str:
    return f"{file_name}.face-{face_index:03d}.jpg"


def encode_chip(chip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class DlibAligner(LocalModel):
    """dlib's 5-point landmarks and aligned chips for each image's upright faces."""

    model_id = dlib_models.ALIGNER_ID
    requires = dlib_models.REQUIRES

    def load(self) -> Any:
        import dlib

        return dlib.shape_predictor(dlib_models.weights_path(dlib_models.SHAPE_PREDICTOR_FILE))

    def predict(
        self, loaded: Any, inputs: list[list[align.UprightFace]]
    ) -> list[list[AlignedFace]]:
        import dlib

        aligned = []
        for faces in inputs:
            chips = []
            for face in faces:
                shape = loaded(face.pixels, dlib.rectangle(*face.face_box))
                chip = dlib.get_face_chip(face.pixels, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
                # dlib gives pixel indices; their centres are at index + 0.5.
                landmarks = [face.to_image(p.x + 0.5, p.y + 0.5) for p in shape.parts()]
                chips.append(AlignedFace(np.asarray(chip), landmarks))
            aligned.append(chips)
        return aligned

    def input_bytes(self, model_input: list[align.UprightFace]) -> int:
        return sum(face.nbytes for face in model_input)


def _prepare(record: ImageRecord) -> list[align.UprightFace]:
    faces = record.results[StepName.FACE_DETECTION]["faces"]
    return [
        align.upright_face(
            record.image,
            _in_pixels(box_of(face), record.scale),
            *(_in_pixels(eye, record.scale) for eye in eyes(face)),
        )
        for face in faces
    ]


def _in_pixels(values: tuple[float, ...], scale: float) -> tuple[float, ...]:
    """File coordinates as coordinates in the (possibly shrunk) decoded image."""
    return tuple(value / scale for value in values)


def write_chip(
    entry: ManifestEntry,
    face_index: int,
    chip: np.ndarray,
    corpus_root: str,
    transform_version: str,
) -> str:
    """Writes a chip unless it exists; returns its URI either way."""
    uri = entry.transform_uri(
        corpus_root, TRANSFORM_NAME, transform_version, crop_name(entry.file_name, face_index)
    )
    wrote = storage.write_unless_exists(uri, lambda: encode_chip(chip))
    Metrics.counter(
        StepName.FACE_CROP, "crops_written" if wrote else "crops_skipped_existing"
    ).inc()
    return uri


def _attach(
    record: ImageRecord,
    aligned: list[AlignedFace],
    corpus_root: str | None,
    transform_version: str,
) -> ImageRecord:
    faces = record.results[StepName.FACE_DETECTION]["faces"]
    crops = []
    for face, aligned_face in zip(faces, aligned, strict=True):
        uri = None
        if corpus_root is not None:
            uri = write_chip(
                record.entry, face["face_index"], aligned_face.chip, corpus_root, transform_version
            )
        crops.append(
            {
                "face_index": face["face_index"],
                "face_id": face["face_id"],
                "uri": uri,
                # Found in the decoded image; stored in the file's pixels like the boxes.
                "landmarks": [
                    {"x": x * record.scale, "y": y * record.scale}
                    for x, y in aligned_face.landmarks
                ],
            }
        )
    result = {
        "step_version": STEP_VERSION,
        "transform_version": transform_version,
        "model": dlib_models.ALIGNER_ID,
        "crops": crops,
    }
    chips = [aligned_face.chip for aligned_face in aligned]
    return record.with_result(StepName.FACE_CROP, result, artifact=chips)


@dataclasses.dataclass(frozen=True)
class FaceCropSettings:
    version: str = setting(DEFAULT_TRANSFORM_VERSION, "transform version of the face chips")

    def __post_init__(self) -> None:
        paths.check_version(self.version, "facecrop version")


@dataclasses.dataclass(eq=False)
class CropFaces(beam.PTransform):
    """Writes an aligned 150 px JPEG chip of every detected face.

    Chips go to `transform/facecrop/<transform version>/<set path>/<corpus
    version>/<file>.face-NNN.jpg`; existing chips are not rewritten.

    Args:
        corpus_root: where the `transform/` tree lives; None aligns without
            writing (the gallery's faces).
        settings: the transform version (a new one is written next to the old ones).
        detector: `FaceDetectionSettings.detector()`: chips are numbered by its faces.
        step: the metrics namespace and the step named in error rows.

    Returns:
        Outputs `records` (with a `facecrop` result, and the chips for
        `faceprint`) and `errors`.
    """

    corpus_root: str | None
    settings: FaceCropSettings = FaceCropSettings()
    detector: str = ""
    step: str = StepName.FACE_CROP

    def __post_init__(self) -> None:
        super().__init__()
        DlibAligner.check_installed()

    def parameters(self) -> dict[str, Any]:
        return {
            "size": CHIP_SIZE,
            "padding": CHIP_PADDING,
            "format": "JPEG",
            "quality": JPEG_QUALITY,
            "aligner": dlib_models.ALIGNER_ID,
            "detector": self.detector,
        }

    def expand(self, records):
        return records | RunModelOnImages(
            self.step,
            DlibAligner(),
            prepare=_prepare,
            attach=functools.partial(
                _attach, corpus_root=self.corpus_root, transform_version=self.settings.version
            ),
            requires=(StepName.FACE_DETECTION,),
            max_batch_size=8,
        )
