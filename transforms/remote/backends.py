"""Which API serves which step, and how its stored answers become the step's results.

The results have the same columns as the local models' (`backend` and `model` say
who answered), so later steps and the tables do not care where a result came from.
Remote labels have no ImageNet class id (`class_id` is null); Azure Face gives no
confidence (`score` is null) and no ears.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transforms import classify, ocr
from transforms.faces import detection
from transforms.records import LOCAL_BACKEND, StepName
from transforms.remote import answers, apis
from transforms.remote.answer_store import StoredAnswer

AZURE = "azure"
GOOGLE = "google"
BACKENDS = (LOCAL_BACKEND, AZURE, GOOGLE)
STEPS_WITH_BACKENDS = (StepName.GENERAL_CLASSIFICATION, StepName.OCR, StepName.FACE_DETECTION)

_GOOGLE_FEATURES = {
    StepName.GENERAL_CLASSIFICATION: "LABEL_DETECTION",
    StepName.OCR: "TEXT_DETECTION",
    StepName.FACE_DETECTION: "FACE_DETECTION",
}
_AZURE_VISION_FEATURES = {StepName.GENERAL_CLASSIFICATION: "tags", StepName.OCR: "read"}


def api_for(step: str, backend: str, face_grid: int = 1) -> apis.Api:
    """The API feature that runs `step` on `backend` (`azure` or `google`)."""
    if backend == AZURE:
        if step == StepName.FACE_DETECTION:
            return apis.AzureFace(grid_columns=face_grid)
        return apis.AzureVision(feature=_AZURE_VISION_FEATURES[step])
    if backend == GOOGLE:
        return apis.GoogleVision(feature=_GOOGLE_FEATURES[step])
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def backend_option(step: str) -> str:
    """The parsed option naming a step's backend, e.g. `ocr_backend`."""
    return f"{step}_backend"


def chosen_api(step: str, options: Any) -> apis.Api | None:
    """The API a step was told to use in `options`, or None for the local model."""
    backend = getattr(options, backend_option(step), LOCAL_BACKEND)
    if backend == LOCAL_BACKEND:
        return None
    return api_for(step, backend, getattr(options, "face_grid", 1))


Reader = Callable[[Any, float], Any]

_READERS: dict[tuple[str, str], Reader] = {
    (StepName.GENERAL_CLASSIFICATION, apis.AZURE_VISION): answers.labels_from_azure,
    (StepName.GENERAL_CLASSIFICATION, apis.GOOGLE_VISION): answers.labels_from_google,
    (StepName.OCR, apis.AZURE_VISION): answers.text_from_azure,
    (StepName.OCR, apis.GOOGLE_VISION): answers.text_from_google,
    (StepName.FACE_DETECTION, apis.AZURE_FACE): answers.faces_from_azure,
    (StepName.FACE_DETECTION, apis.GOOGLE_VISION): answers.faces_from_google,
}


def reader_for(step: str, api: apis.Api) -> Reader:
    """(API answer for one image, scale) -> the step's neutral answer."""
    return _READERS[(step, api.name)]


def labels_result(stored: StoredAnswer, backend: str, top_k: int) -> dict[str, Any]:
    return {
        "step_version": classify.STEP_VERSION,
        "backend": backend,
        "model": stored.model,
        "labels": [
            {"class_id": None, "label": label["label"], "score": label["score"]}
            for label in stored.answer[:top_k]
        ],
    }


def text_result(stored: StoredAnswer, backend: str, min_score: float) -> dict[str, Any]:
    lines = [
        ocr.TextLine(line["text"], line["score"], [tuple(point) for point in line["box"]])
        for line in stored.answer
        if line["text"].strip() and (line["score"] is None or line["score"] >= min_score)
    ]
    return ocr.ocr_result(lines, model=stored.model, backend=backend)


def detector_settings(api: apis.Api, min_score: float) -> str:
    """What decides which faces an API finds, and so how they are numbered."""
    return f"{api.name}/{api.model_version}/step-{detection.STEP_VERSION}/min-score-{min_score:g}"


def faces_result(
    stored: StoredAnswer, backend: str, image_sha256: str, detector: str, min_score: float
) -> dict[str, Any]:
    found = [
        detection.FoundFace(
            tuple(face["box"]),
            {name: tuple(point) for name, point in face["keypoints"].items()},
            face["score"],
        )
        for face in stored.answer
        if face["score"] is None or face["score"] >= min_score
    ]
    return {
        "step_version": detection.STEP_VERSION,
        "backend": backend,
        "model": stored.model,
        "detector": detector,
        "faces": detection.numbered_faces(image_sha256, detector, found),
    }
