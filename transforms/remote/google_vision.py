"""Google Cloud Vision `images:annotate`: labels, text and faces, up to 16 images a call."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any, ClassVar

from transforms.records import StepName
from transforms.remote.api import Api, ApiFeature, box_of, name_pairs, point, polygon
from transforms.remote.http_call import ApiRefusedError, ApiUnavailableError

GOOGLE_VISION = "google-vision"
GOOGLE_MODEL = "builtin/stable"
GOOGLE_MAX_IMAGES = 16
GOOGLE_DEFAULT_ENDPOINT = "https://vision.googleapis.com"


@dataclasses.dataclass(frozen=True)
class GoogleVision(Api):
    """Google Cloud Vision `images:annotate`, up to 16 images per request."""

    feature: str = "LABEL_DETECTION"
    max_results: int = 50
    name: ClassVar[str] = GOOGLE_VISION
    default_endpoint: ClassVar[str | None] = GOOGLE_DEFAULT_ENDPOINT
    # Requests are limited to 10 MB of JSON: 16 base64 JPEGs of this size fit (about
    # 300 KB each for a detailed photo); Google advises 1024x768 for text.
    max_side: ClassVar[int] = 1024

    @property
    def images_per_request(self) -> int:
        return GOOGLE_MAX_IMAGES

    @property
    def model_version(self) -> str:
        return GOOGLE_MODEL.replace("/", "-")

    def send(self, client, endpoint, key, packed):
        feature = {"type": self.feature, "maxResults": self.max_results, "model": GOOGLE_MODEL}
        requests = [
            {"image": {"content": base64.b64encode(part).decode("ascii")}, "features": [feature]}
            for part in packed.parts
        ]
        return client.post(
            f"{endpoint.rstrip('/')}/v1/images:annotate",
            headers={"x-goog-api-key": key},
            json={"requests": requests},
        )

    def billed_units(self, images, requests):
        return images  # Cloud Vision bills each image and feature, however sent

    def split(self, payload, packed):
        responses = payload.get("responses") if isinstance(payload, dict) else None
        if not isinstance(responses, list) or len(responses) != len(packed.parts):
            raise ValueError(f"expected {len(packed.parts)} responses in the answer")
        return [
            _google_image_error(answer["error"]) if "error" in answer else answer
            for answer in responses
        ]


def _google_image_error(error: dict[str, Any]) -> Exception:
    """One image's error: INVALID_ARGUMENT (3) refuses the image; others may pass."""
    message = str(error.get("message") or error)
    if error.get("code") == 3:
        return ApiRefusedError(400, message, code="InvalidImage")
    return ApiUnavailableError(f"Cloud Vision error {error.get('code')}: {message}")


def labels_from_google(answer: dict[str, Any], scale: float = 1.0) -> list[dict[str, Any]]:
    labels = [
        {"label": label["description"], "score": float(label.get("score", 0.0))}
        for label in answer.get("labelAnnotations", [])
    ]
    return sorted(labels, key=lambda label: -label["score"])


def _paragraph_text(paragraph: dict[str, Any]) -> str:
    return " ".join(
        "".join(symbol.get("text", "") for symbol in word.get("symbols", []))
        for word in paragraph.get("words", [])
    )


def text_from_google(answer: dict[str, Any], scale: float) -> list[dict[str, Any]]:
    """Paragraphs of the full text annotation, or else the single words found."""
    full = answer.get("fullTextAnnotation")
    if full:
        return [
            {
                "text": _paragraph_text(paragraph),
                "score": paragraph.get("confidence"),
                "box": polygon(paragraph["boundingBox"]["vertices"], scale),
            }
            for page in full.get("pages", [])
            for block in page.get("blocks", [])
            for paragraph in block.get("paragraphs", [])
        ]
    return [
        {
            "text": word["description"],
            "score": None,
            "box": polygon(word["boundingPoly"]["vertices"], scale),
        }
        for word in answer.get("textAnnotations", [])[1:]  # the first is all the text
    ]


_GOOGLE_LANDMARKS = {
    "LEFT_EYE": "a_eye",
    "RIGHT_EYE": "b_eye",
    "NOSE_TIP": "nose_tip",
    "MOUTH_CENTER": "mouth",
    "LEFT_EAR_TRAGION": "a_ear",
    "RIGHT_EAR_TRAGION": "b_ear",
}


def faces_from_google(answer: dict[str, Any], scale: float) -> list[dict[str, Any]]:
    faces = []
    for face in answer.get("faceAnnotations", []):
        poly = face.get("fdBoundingPoly") or face["boundingPoly"]
        keypoints = {
            _GOOGLE_LANDMARKS[mark["type"]]: point(mark["position"], scale)
            for mark in face.get("landmarks", [])
            if mark.get("type") in _GOOGLE_LANDMARKS
        }
        name_pairs(keypoints, "a_eye", "b_eye")
        name_pairs(keypoints, "a_ear", "b_ear")
        score = face.get("detectionConfidence")
        faces.append(
            {
                "box": box_of(polygon(poly["vertices"], scale)),
                "keypoints": keypoints,
                "score": None if score is None else float(score),
            }
        )
    return faces


def _feature(name: str, read) -> ApiFeature:
    return ApiFeature(lambda grid_columns: GoogleVision(feature=name), read)


STEPS = {
    StepName.GENERAL_CLASSIFICATION: _feature("LABEL_DETECTION", labels_from_google),
    StepName.OCR: _feature("TEXT_DETECTION", text_from_google),
    StepName.FACE_DETECTION: _feature("FACE_DETECTION", faces_from_google),
}
