"""A remote vision API as a step uses it: how to ask, and how to split the answer.

Each `Api` packs a list of images into one request body, sends it, and splits the
parsed JSON answer into one answer per image, in that API's own shape and in pixels
of the image as sent. Each API's module (`azure_vision`, `azure_face`,
`google_vision`) also reads its answers into the neutral forms the steps' results
are made from. Neutral forms are plain JSON, in pixels of the original
(EXIF-oriented) image, and are what the result store keeps, so a step's own options
(top-k, minimum score) can change without calling the API again:

* labels: `[{"label", "score"}]`, best first;
* text: `[{"text", "score", "box": [[x, y] x 4]}]`, in reading order;
* faces: `[{"box": [left, top, right, bottom], "keypoints": {name: [x, y]}, "score"}]`,
  keypoints named as BlazeFace's (`right_eye` is the subject's right eye).

Model versions are pinned in every request, so a stored answer stays valid for as
long as its (image, step, backend, model version) key says it does.
"""

from __future__ import annotations

import abc
import dataclasses
import io
from collections.abc import Callable
from typing import Any, ClassVar

import httpx
from PIL import Image

JPEG_QUALITY = 90

# (API answer for one image, scale) -> neutral answer; `scale` is original pixels
# per pixel of the image that was sent.
Reader = Callable[[Any, float], Any]


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
        default_endpoint: its URL where it needs no configuring.
        max_side: longest side, in pixels, images are sent at (smaller ones as they are).
    """

    name: ClassVar[str]
    max_side: ClassVar[int] = 2048
    default_endpoint: ClassVar[str | None] = None  # where it is unless configured

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


def azure_post(client: httpx.Client, url: str, key: str, params: dict, body: bytes):
    headers = {"Ocp-Apim-Subscription-Key": key, "Content-Type": "application/octet-stream"}
    return client.post(url, params=params, headers=headers, content=body)


@dataclasses.dataclass(frozen=True)
class ApiFeature:
    """How a backend runs one step: the API feature to call and the reader of its answers.

    Attributes:
        make: grid columns -> the API (only Azure Face uses a grid; others ignore it).
        read: one image's answer -> the step's neutral answer.
    """

    make: Callable[[int], Api]
    read: Reader


def point(vertex: dict[str, Any], scale: float) -> list[float]:
    # Google leaves out coordinates that are 0.
    return [float(vertex.get("x", 0)) * scale, float(vertex.get("y", 0)) * scale]


def polygon(vertices: list[dict[str, Any]], scale: float) -> list[list[float]]:
    return [point(vertex, scale) for vertex in vertices]


def box_of(corners: list[list[float]]) -> list[float]:
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return [min(xs), min(ys), max(xs), max(ys)]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def name_pairs(keypoints: dict[str, list[float]], first: str, second: str) -> None:
    """Names two points `right_*`/`left_*` by where they are: an upright subject's
    right eye is on the image's left. APIs differ on whose left they mean."""
    if first in keypoints and second in keypoints:
        on_left, on_right = sorted([keypoints.pop(first), keypoints.pop(second)])
        part = first.split("_", 1)[1]
        keypoints[f"right_{part}"], keypoints[f"left_{part}"] = on_left, on_right
