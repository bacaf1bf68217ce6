"""The `faceprint` step: a 128-d dlib ResNet embedding of every aligned face."""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.inference.run_model import LocalModel, RunModelOnImages
from transforms.records import ImageRecord, StepName
from transforms.tasks.faces import dlib_models

STEP_VERSION = "1"

RESULT_TYPE = pa.struct(
    [
        ("step_version", pa.string()),
        ("model", pa.string()),
        (
            "embeddings",
            pa.list_(
                pa.struct(
                    [
                        ("face_index", pa.int32()),
                        ("face_id", pa.string()),
                        # Variable-length: pyarrow cannot read a null fixed-size list back.
                        ("embedding", pa.list_(pa.float32())),
                    ]
                )
            ),
        ),
    ]
)


class DlibResNet(LocalModel):
    """dlib's face embedder; all chips of a batch of images go in one call."""

    model_id = dlib_models.EMBEDDER_ID
    requires = dlib_models.REQUIRES

    def load(self) -> Any:
        import dlib

        return dlib.face_recognition_model_v1(dlib_models.weights_path(dlib_models.EMBEDDER_FILE))

    def predict(self, loaded: Any, inputs: list[list[np.ndarray]]) -> list[np.ndarray]:
        chips = [chip for image_chips in inputs for chip in image_chips]
        vectors = (
            np.asarray(loaded.compute_face_descriptor(chips), dtype=np.float32) if chips else None
        )
        embeddings, start = [], 0
        for image_chips in inputs:
            end = start + len(image_chips)
            embeddings.append(vectors[start:end] if chips else np.zeros((0, 128), np.float32))
            start = end
        return embeddings

    def input_bytes(self, model_input: list[np.ndarray]) -> int:
        return sum(chip.nbytes for chip in model_input)


def _prepare(record: ImageRecord) -> list[np.ndarray]:
    return record.artifacts[StepName.FACE_CROP]


def _attach(record: ImageRecord, embeddings: np.ndarray) -> ImageRecord:
    crops = record.results[StepName.FACE_CROP]["crops"]
    result = {
        "step_version": STEP_VERSION,
        "model": dlib_models.EMBEDDER_ID,
        "embeddings": [
            {"face_index": crop["face_index"], "face_id": crop["face_id"], "embedding": vector}
            for crop, vector in zip(crops, embeddings, strict=True)
        ],
    }
    return record.with_result(StepName.FACE_PRINT, result)


@dataclasses.dataclass(eq=False)
class EmbedFaces(beam.PTransform):
    """Adds a 128-d embedding per face; same person ≈ distance below 0.5.

    Returns:
        Outputs `records` (with a `faceprint` result) and `errors`.
    """

    max_batch_size: int = 8
    step: str = StepName.FACE_PRINT  # metrics namespace and error rows

    def __post_init__(self) -> None:
        super().__init__()
        DlibResNet.check_installed()

    def expand(self, records):
        return records | RunModelOnImages(
            self.step,
            DlibResNet(),
            prepare=_prepare,
            attach=_attach,
            requires=(StepName.FACE_CROP,),
            max_batch_size=self.max_batch_size,
        )
