"""The three remote vision APIs on the wire: how to ask, and how to split the answer.

Each `Api` packs a list of images into one request body, sends it, and splits the
parsed JSON answer into one answer per image, in that API's own shape and in pixels
of the image as sent. Azure AI Vision and Azure Face take one image per request
(Azure Face can take a grid of several, see `grid`); Google Cloud Vision takes up
to 16 and answers each with its own result or its own error.

Model versions are pinned in every request, so a stored answer stays valid for as
long as its (image, step, backend, model version) key says it does.
"""

from __future__ import annotations

import abc
import base64
import dataclasses
import io
from typing import Any, ClassVar

import httpx
from PIL import Image

from transforms.remote import grid
from transforms.remote.http_call import ApiRefusedError, ApiUnavailableError

AZURE_VISION = "azure-vision"
AZURE_FACE = "azure-face"
GOOGLE_VISION = "google-vision"
API_NAMES = (AZURE_VISION, AZURE_FACE, GOOGLE_VISION)

AZURE_VISION_MODEL = "2023-10-01"
AZURE_VISION_API_VERSION = "2023-10-01"
AZURE_FACE_DETECTION_MODEL = "detection_03"
AZURE_FACE_API_VERSION = "v1.0"
GOOGLE_MODEL = "builtin/stable"
GOOGLE_MAX_IMAGES = 16
GOOGLE_DEFAULT_ENDPOINT = "https://vision.googleapis.com"
JPEG_QUALITY = 90


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class Packed:
    """One request's body parts, and what is needed to split its answer."""

    parts: list[bytes]
    layout: Any = None


class Api(abc.ABC):
    """One API feature as a step uses it.

    Attributes:
        name: which API (`azure-vision`, `azure-face`, `google-vision`).
        max_side: longest side, in pixels, images are sent at (smaller ones as they are).
    """

    name: ClassVar[str]
    max_side: ClassVar[int] = 2048

    @property
    def images_per_request(self) -> int:
        return 1

    @property
    @abc.abstractmethod
    def model_version(self) -> str:
        """What answers are stored under; safe as a path component."""

    def pack(self, images: list[Image.Image]) -> Packed:
        return Packed([jpeg(image) for image in images])

    @abc.abstractmethod
    def send(self, client: httpx.Client, endpoint: str, key: str, packed: Packed):
        """Sends one request; returns the `httpx.Response`."""

    def split(self, payload: Any, packed: Packed) -> list[Any]:
        """The parsed answer -> one answer (or `ApiRefusedError`) per image packed.

        Raises:
            ValueError: the answer does not fit the request (it is then retried).
        """
        return [payload]

    def reported_model(self, answer: Any) -> str:
        """The model version the API says it used, else the one asked for."""
        return self.model_version

    def billed_units(self, images: int, requests: int) -> int:
        """What the API charges for: Azure bills each call (a grid is one call)."""
        return requests


def _azure_post(client: httpx.Client, url: str, key: str, params: dict, body: bytes):
    headers = {"Ocp-Apim-Subscription-Key": key, "Content-Type": "application/octet-stream"}
    return client.post(url, params=params, headers=headers, content=body)


@dataclasses.dataclass(frozen=True)
class AzureVision(Api):
    """Azure AI Vision Image Analysis 4.0, `features=tags` or `features=read`."""

    feature: str = "tags"
    name: ClassVar[str] = AZURE_VISION
    max_side: ClassVar[int] = 4096

    @property
    def model_version(self) -> str:
        return AZURE_VISION_MODEL

    def send(self, client, endpoint, key, packed):
        params = {
            "api-version": AZURE_VISION_API_VERSION,
            "features": self.feature,
            "model-version": AZURE_VISION_MODEL,
            "language": "en",
        }
        url = f"{endpoint.rstrip('/')}/computervision/imageanalysis:analyze"
        return _azure_post(client, url, key, params, packed.parts[0])

    def reported_model(self, answer):
        return str(answer.get("modelVersion") or self.model_version)


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
        return _azure_post(client, url, key, params, packed.parts[0])

    def split(self, payload, packed):
        if not isinstance(payload, list):
            raise ValueError(f"expected a list of faces, got {type(payload).__name__}")
        if packed.layout is None:
            return [payload]
        return grid.faces_by_cell(payload, packed.layout)


@dataclasses.dataclass(frozen=True)
class GoogleVision(Api):
    """Google Cloud Vision `images:annotate`, up to 16 images per request."""

    feature: str = "LABEL_DETECTION"
    max_results: int = 50
    name: ClassVar[str] = GOOGLE_VISION
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
