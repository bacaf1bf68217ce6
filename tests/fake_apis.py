"""A fake of the remote vision APIs on loopback, speaking their real wire formats.

Serves, over real HTTP from a threaded server:

* Azure AI Vision Image Analysis 4.0: `POST /computervision/imageanalysis:analyze`
  (`features=tags,read`), one image per request as the body;
* Azure Face: `POST /face/<api version>/detect`, one image per request;
* Google Cloud Vision: `POST /v1/images:annotate`, up to 16 images per request as
  base64 in JSON, with `LABEL_DETECTION`, `TEXT_DETECTION` and `FACE_DETECTION`.

Its answers are computed from the image (size, brightness and colour tags; faces
and text from the `find_faces` and `find_text` hooks when given), so they are
deterministic but not a model's.
What it is for is the protocol: it enforces a request rate with `429` and a
`Retry-After` header, checks the API key, refuses undecodable images with each API's
own error shape, and injects faults — `5xx`, stalls past the client's timeout, reset
connections and malformed JSON — at a chosen rate. Every request is logged with its
arrival time, so tests can check what a client really sent.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import io
import json
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from transforms.remote.http_server import BackgroundServer, JsonHandler
from transforms.remote.quota import Rate

VISION_MODEL_VERSION = "2023-10-01"
MAX_IMAGES_PER_ANNOTATE = 16
MAX_PIXELS = 50_000_000
MIN_VISION_SIDE = 50  # Image Analysis 4.0 refuses smaller images
FAULTS = ("500", "503", "timeout", "reset", "malformed")
# Cloud Vision's REST clients send enums as their numbers (`enum-encoding=int`).
_FEATURE_NUMBERS = {1: "FACE_DETECTION", 4: "LABEL_DETECTION", 5: "TEXT_DETECTION"}
_FEATURE_NUMBERS[11] = "DOCUMENT_TEXT_DETECTION"

Box = tuple[int, int, int, int]  # left, top, width, height
FaceFinder = Callable[[Image.Image], list[Box]]
TextFinder = Callable[[Image.Image], list[tuple[str, Box]]]  # lines of text


@dataclasses.dataclass
class FakeApiSettings:
    """How the fake behaves.

    Attributes:
        rate: requests accepted per second (over a one-second window, or a minute for
            rates under 1/s); more get `429` with `Retry-After`. None: no limit.
        fault_rate: fraction of accepted requests that get one of `faults`.
        faults: which faults to draw from.
        stall_seconds: how long a `timeout` fault keeps the client waiting.
        key: the API key requests must carry; None accepts any.
        seed: for the fault draw, so a run can be repeated.
        find_faces: detects faces for the face features; None finds none.
        find_text: reads lines of text for the text features; None finds none.
    """

    rate: Rate | None = None
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    stall_seconds: float = 30.0
    key: str | None = None
    seed: int = 0
    find_faces: FaceFinder | None = None
    find_text: TextFinder | None = None


@dataclasses.dataclass(frozen=True)
class LoggedRequest:
    time: float  # wall clock at arrival
    api: str  # "vision", "face" or "annotate"
    images: int
    status: int | str  # HTTP status, or the fault injected


class _Window:
    """A sliding-window limiter: at most `limit` requests in any `seconds`."""

    def __init__(self, rate: Rate) -> None:
        self.seconds = 1.0 if rate.per_second >= 1 else 60.0
        self.limit = max(1, math.floor(rate.per_second * self.seconds + 1e-9))
        self._times: collections.deque[float] = collections.deque()

    def admit(self, now: float) -> float:
        """0 if the request is admitted, else the seconds until it could be."""
        while self._times and self._times[0] <= now - self.seconds:
            self._times.popleft()
        if len(self._times) < self.limit:
            self._times.append(now)
            return 0.0
        return self._times[0] + self.seconds - now


def _describe(image: Image.Image) -> list[tuple[str, float]]:
    """Tags with confidences, from simple statistics of the pixels."""
    small = image.convert("RGB").resize((32, 32))
    pixels = list(small.getdata())
    red, green, blue = (sum(p[i] for p in pixels) / len(pixels) for i in range(3))
    brightness = (red + green + blue) / 3 / 255
    tags = [("bright" if brightness >= 0.5 else "dark", 0.5 + abs(brightness - 0.5))]
    colours = {"red": red, "green": green, "blue": blue}
    dominant = max(colours, key=colours.get)
    tags.append((dominant, min(0.99, 0.4 + colours[dominant] / 512)))
    shape = "landscape" if image.width > image.height else "portrait"
    tags.append((shape if image.width != image.height else "square", 0.9))
    return sorted(tags, key=lambda tag: -tag[1])


class _Handler(JsonHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path == "/computervision/imageanalysis:analyze":
            api, handle = "vision", self._analyze
        elif url.path.startswith("/face/") and url.path.endswith("/detect"):
            api, handle = "face", self._detect
        elif url.path == "/v1/images:annotate":
            api, handle = "annotate", self._annotate
        else:
            self.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})
            return
        images = self._count_images(api, body)
        fake = self.server.state
        if not fake.authorised(self.headers, url.query):
            fake.record(api, images, 401)
            self.send_json(
                401, _error(api, "401", "Access denied due to invalid subscription key.")
            )
            return
        if wait := fake.admit():
            fake.record(api, images, 429)
            self.send_json(
                429,
                _error(api, "429", "Rate limit is exceeded. Try again later."),
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
            return
        if fault := fake.draw_fault():
            fake.record(api, images, fault)
            self._inject(fault, api)
            return
        status, payload = handle(parse_qs(url.query), body)
        fake.record(api, images, status)
        self.send_json(status, payload)

    @staticmethod
    def _count_images(api: str, body: bytes) -> int:
        if api != "annotate":
            return 1
        try:
            return len(json.loads(body).get("requests", []))
        except (ValueError, AttributeError):
            return 0

    def _inject(self, fault: str, api: str) -> None:
        if fault in ("500", "503"):
            self.send_json(
                int(fault), _error(api, fault, "The service is temporarily unavailable.")
            )
        elif fault == "timeout":
            time.sleep(self.server.state.settings.stall_seconds)
            self.close_connection = True
        elif fault == "reset":
            # SO_LINGER 0: close with a TCP reset, as a dropped connection looks.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        else:
            self.send_body(200, b'{"modelVersion": "2023-10-01", "tagsResult": {"values": [')

    def _analyze(self, query, body: bytes):
        image = _decode(body)
        if image is None:
            return 400, _error("vision", "InvalidImageFormat", "Image format is not valid.")
        if min(image.size) < MIN_VISION_SIDE:
            return 400, _error(
                "vision",
                "InvalidImageSize",
                f"Image size is not allowed to be smaller than {MIN_VISION_SIDE} pixels.",
            )
        features = set(",".join(query.get("features", [])).lower().split(","))
        result = {
            "modelVersion": VISION_MODEL_VERSION,
            "metadata": {"width": image.width, "height": image.height},
        }
        if "tags" in features:
            tags = [{"name": name, "confidence": score} for name, score in _describe(image)]
            result["tagsResult"] = {"values": tags}
        if "read" in features:
            lines = [_azure_line(text, box) for text, box in self.server.state.find_text(image)]
            result["readResult"] = {"blocks": [{"lines": lines}] if lines else []}
        return 200, result

    def _detect(self, query, body: bytes):
        image = _decode(body)
        if image is None:
            return 400, _error("face", "InvalidImage", "Decoding error, image format unsupported.")
        landmarks = query.get("returnFaceLandmarks", ["false"])[0] == "true"
        return 200, [_azure_face(box, landmarks) for box in self.server.state.find_faces(image)]

    def _annotate(self, query, body: bytes):
        try:
            requests = json.loads(body)["requests"]
        except (ValueError, KeyError, TypeError):
            return 400, _error("annotate", "400", "Invalid JSON payload received.")
        if len(requests) > MAX_IMAGES_PER_ANNOTATE:
            return 400, _error(
                "annotate", "400", f"At most {MAX_IMAGES_PER_ANNOTATE} images per request."
            )
        return 200, {"responses": [self._annotate_one(request) for request in requests]}

    def _annotate_one(self, request: dict) -> dict:
        try:
            image = _decode(base64.b64decode(request["image"]["content"], validate=True))
        except (KeyError, TypeError, ValueError):
            image = None
        if image is None:
            return {"error": {"code": 3, "message": "Bad image data."}}
        response: dict = {}
        for feature in request.get("features", []):
            kind = _FEATURE_NUMBERS.get(feature.get("type"), feature.get("type"))
            limit = int(feature.get("maxResults") or 10)
            if kind == "LABEL_DETECTION":
                response["labelAnnotations"] = [
                    {"mid": f"/fake/{name}", "description": name, "score": s, "topicality": s}
                    for name, s in _describe(image)[:limit]
                ]
            elif kind in ("TEXT_DETECTION", "DOCUMENT_TEXT_DETECTION"):
                response.update(_google_text(self.server.state.find_text(image)))
            elif kind == "FACE_DETECTION":
                response["faceAnnotations"] = [
                    _face_annotation(box) for box in self.server.state.find_faces(image)[:limit]
                ]
        return response


def _corners(box: Box) -> list[dict[str, int]]:
    left, top, width, height = box
    return [
        {"x": left, "y": top},
        {"x": left + width, "y": top},
        {"x": left + width, "y": top + height},
        {"x": left, "y": top + height},
    ]


def _landmarks(box: Box) -> dict[str, tuple[float, float]]:
    """Where the landmarks of an upright frontal face sit in its box, roughly."""
    left, top, width, height = box
    at = {"pupilLeft": (0.3, 0.4), "pupilRight": (0.7, 0.4), "noseTip": (0.5, 0.6)}
    at |= {"mouthLeft": (0.35, 0.8), "mouthRight": (0.65, 0.8)}
    return {name: (left + fx * width, top + fy * height) for name, (fx, fy) in at.items()}


def _azure_face(box: Box, landmarks: bool) -> dict:
    left, top, width, height = box
    face: dict = {"faceRectangle": {"top": top, "left": left, "width": width, "height": height}}
    if landmarks:
        face["faceLandmarks"] = {name: {"x": x, "y": y} for name, (x, y) in _landmarks(box).items()}
    return face


def _face_annotation(box: Box) -> dict:
    marks = _landmarks(box)
    # Cloud Vision's LEFT_EYE is on the image's left; its mouth is one point.
    points = {"LEFT_EYE": marks["pupilLeft"], "RIGHT_EYE": marks["pupilRight"]}
    points["NOSE_TIP"] = marks["noseTip"]
    points["MOUTH_CENTER"] = (
        (marks["mouthLeft"][0] + marks["mouthRight"][0]) / 2,
        marks["mouthLeft"][1],
    )
    return {
        "boundingPoly": {"vertices": _corners(box)},
        "fdBoundingPoly": {"vertices": _corners(box)},
        "landmarks": [
            {"type": name, "position": {"x": x, "y": y, "z": 0.0}}
            for name, (x, y) in points.items()
        ],
        "detectionConfidence": 0.9,
    }


def _azure_line(text: str, box: Box) -> dict:
    return {
        "text": text,
        "boundingPolygon": _corners(box),
        "words": [
            {"text": word, "boundingPolygon": _corners(box), "confidence": 0.95}
            for word in text.split()
        ],
    }


def _google_text(lines: list[tuple[str, Box]]) -> dict:
    if not lines:
        return {}
    words = [
        {"description": word, "boundingPoly": {"vertices": _corners(box)}}
        for text, box in lines
        for word in text.split()
    ]
    paragraphs = [
        {
            "boundingBox": {"vertices": _corners(box)},
            "confidence": 0.95,
            "words": [
                {"symbols": [{"text": character} for character in word]} for word in text.split()
            ],
        }
        for text, box in lines
    ]
    everything = {"description": "\n".join(text for text, _ in lines) + "\n"}
    return {
        "textAnnotations": [everything, *words],
        "fullTextAnnotation": {"pages": [{"blocks": [{"paragraphs": paragraphs}]}]},
    }


def _error(api: str, code: str, message: str):
    if api == "annotate":
        return {"error": {"code": int(code) if code.isdigit() else 400, "message": message}}
    if api == "vision" and not code.isdigit():
        # Image Analysis 4.0 puts the precise code inside.
        return {
            "error": {"code": "InvalidRequest", "message": message, "innererror": {"code": code}}
        }
    return {"error": {"code": code, "message": message}}


def _decode(data: bytes) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                return None
            image.load()
            return image.copy()
    except Exception:  # noqa: BLE001 - anything Pillow cannot read is a bad image
        return None


class FakeVisionApi(BackgroundServer):
    """The fake API server; use as a context manager, then point clients at `url`."""

    def __init__(self, settings: FakeApiSettings | None = None, port: int = 0) -> None:
        super().__init__(_Handler, self, port=port)
        self.settings = settings or FakeApiSettings()
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._random = random.Random(self.settings.seed)
        self._window = _Window(self.settings.rate) if self.settings.rate else None

    @property
    def url(self) -> str:
        return self.base_url

    def authorised(self, headers, query: str) -> bool:
        if self.settings.key is None:
            return True
        offered = (
            headers.get("Ocp-Apim-Subscription-Key")
            or headers.get("x-goog-api-key")
            or parse_qs(query).get("key", [None])[0]
        )
        return offered == self.settings.key

    def admit(self) -> float:
        if self._window is None:
            return 0.0
        with self._lock:
            return self._window.admit(time.monotonic())

    def draw_fault(self) -> str | None:
        with self._lock:
            if self._random.random() < self.settings.fault_rate:
                return self._random.choice(self.settings.faults)
        return None

    def find_faces(self, image: Image.Image) -> list[Box]:
        finder = self.settings.find_faces
        return finder(image) if finder else []

    def find_text(self, image: Image.Image) -> list[tuple[str, Box]]:
        finder = self.settings.find_text
        return finder(image) if finder else []

    def record(self, api: str, images: int, status: int | str) -> None:
        with self._lock:
            self.log.append(LoggedRequest(time.time(), api, images, status))
