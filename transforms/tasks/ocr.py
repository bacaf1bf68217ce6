"""The `ocr` step: text lines with boxes and confidences, from RapidOCR.

RapidOCR runs PaddleOCR's detection, orientation and recognition networks (the
ONNX files inside the `rapidocr` wheel) on onnxruntime, or with `--ocr-engine
openvino` on OpenVINO. A page with no text costs one detection pass: recognition
only runs on the regions detection found.

Detection is most of the cost, and it grows with the pixels it sees. RapidOCR's own
default magnifies every image until its short side is 736 px (a 872x386 page became
1664x736). Here an image up to DETECTOR_SIDE px is read at its own size and a larger
one is shrunk, but never below MIN_DETECTOR_SCALE, nor past LARGEST_SIDE (the bound
RapidOCR used to put on the whole image): the detector needs text about 8 px tall,
so print from 12 px up is still found on full pages and in photos up to 3,000 px
(measured on `bench.ocr_set`; at half size, 12 and 16 px print on 1000 px pages was
lost).
Recognition reads each line the detector found from the image at its full size:
RapidOCR would otherwise shrink the whole image to LARGEST_SIDE first, and small
print in a larger photo reached the recogniser blurred.

A page turned a quarter or half round is read again turned upright
(`page_orientation`); RapidOCR's per-line orientation classifier is off, as it
turned upright lines of real pages upside down.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from importlib.util import find_spec
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.inference.model_files import packaged_file
from transforms.inference.onnx_session import import_onnxruntime
from transforms.inference.run_model import LocalModel, RunModelOnImages
from transforms.records import LOCAL_BACKEND, ImageRecord, StepName
from transforms.remote.answer_store import StoredAnswer
from transforms.remote.api import Api
from transforms.remote.registry import api_of, backend_setting
from transforms.settings import setting
from transforms.tasks import page_orientation
from transforms.tasks.base import Step, StepContext
from transforms.tasks.on_api import model_parameters, on_chosen_backend

# 2: the detector's input bounded by `detector_limit`; 3: lines read at full size;
# 4: `has_text`, and no `text` without it; turned pages read upright, no line classifier
STEP_VERSION = "4"
MODEL_ID = "rapidocr-3.10-ppocrv6-small"
DEFAULT_MIN_SCORE = 0.5
# An image has text when a line of at least TEXT_MIN_CHARACTERS letters or digits is
# read with DEFAULT_TEXT_MIN_SCORE: on `bench.ocr_set --has-text` none of 96 photos
# without text passes (18 had lines: a "7" on a horse at 0.98, "C000" on a camera at
# 0.75; at 0.7, 3 pass) and 15 of 16 images with text do (the miss reads nothing).
DEFAULT_TEXT_MIN_SCORE = 0.8
TEXT_MIN_CHARACTERS = 2
ONNXRUNTIME, OPENVINO = "onnxruntime", "openvino"
ENGINES = (ONNXRUNTIME, OPENVINO)
DETECTOR_SIDE = 640
MIN_DETECTOR_SCALE = 0.65
LARGEST_SIDE = 2000
# RapidOCR shrinks an image whose longest side is past this before it starts: none is
# (decode already bounds an image's pixels).
NEVER_SHRUNK = 1_000_000
# A page read again upright is kept unless it found less than this share of what the
# first read found (characters weighted by confidence): a wrong turn reads worse.
KEPT_SHARE = 0.8

_POINT = pa.struct([("x", pa.float32()), ("y", pa.float32())])
RESULT_TYPE = pa.struct(
    [
        ("step_version", pa.string()),
        ("backend", pa.string()),  # "local", or the API that answered
        ("model", pa.string()),
        ("has_text", pa.bool_()),
        ("orientation", pa.int32()),  # degrees the page was turned counter-clockwise
        ("text", pa.string()),  # the lines, one per line; empty unless `has_text`
        (
            "lines",
            pa.list_(
                pa.struct(
                    [("text", pa.string()), ("score", pa.float32()), ("box", pa.list_(_POINT))]
                )
            ),
        ),
    ]
)


@dataclasses.dataclass(frozen=True)
class TextLine:
    text: str
    score: float | None  # None: the API gives no confidence
    box: list[tuple[float, float]]  # four corners, clockwise from top-left, in pixels


def text_lines(output: Any, min_score: float, scale: float = 1.0) -> list[TextLine]:
    """RapidOCR's output -> lines in reading order, weak lines dropped, boxes in the
    file's pixels (`scale` of them per pixel read)."""
    if output.txts is None:
        return []
    return [
        TextLine(text, float(score), [(float(x) * scale, float(y) * scale) for x, y in box])
        for text, score, box in zip(output.txts, output.scores, output.boxes, strict=True)
        if score >= min_score and text.strip()
    ]


def has_text(lines: list[TextLine], text_min_score: float) -> bool:
    """Whether the lines show the image holds text, not shapes read as a letter."""
    return any(
        (line.score is None or line.score >= text_min_score)
        and sum(character.isalnum() for character in line.text) >= TEXT_MIN_CHARACTERS
        for line in lines
    )


def ocr_result(
    lines: list[TextLine],
    text_min_score: float = DEFAULT_TEXT_MIN_SCORE,
    model: str = MODEL_ID,
    backend: str = LOCAL_BACKEND,
    orientation: int | None = None,
) -> dict[str, Any]:
    """The step's result; every line above the least score is kept in `lines`, but
    `text` is empty unless the image has text."""
    found = has_text(lines, text_min_score)
    return {
        "step_version": STEP_VERSION,
        "backend": backend,
        "model": model,
        "has_text": found,
        "orientation": orientation,
        "text": "\n".join(line.text for line in lines) if found else "",
        "lines": [
            {
                "text": line.text,
                "score": line.score,
                "box": [{"x": x, "y": y} for x, y in line.box],
            }
            for line in lines
        ],
    }


def detector_limit(width: int, height: int) -> int:
    """The most pixels the text detector is given on the longest side of a `width` x
    `height` image (a smaller image is never magnified to it)."""
    wanted = max(DETECTOR_SIDE, math.ceil(max(width, height) * MIN_DETECTOR_SCALE))
    return min(wanted, LARGEST_SIDE)


def bgr_pixels(image: Any) -> np.ndarray:
    """An RGB image (PIL or array) as RapidOCR takes it: OpenCV's BGR order."""
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


class RapidOcr(LocalModel):
    """RapidOCR with its bundled PP-OCR models; one image per call.

    `engine=OPENVINO` runs the same ONNX files on OpenVINO (`bench.ocr_engines`
    measures it), with its CPU pinning off: pinned, the two workers of a local run
    can end up sharing one core.
    """

    model_id = MODEL_ID
    requires = (("rapidocr", "rapidocr"), ("onnxruntime", "onnxruntime"))

    def __init__(self, threads: int = 1, memory_arena: bool = False, engine: str = ONNXRUNTIME):
        self._threads = threads
        self._memory_arena = memory_arena
        self._engine = engine

    def load(self) -> Any:
        if self._engine == ONNXRUNTIME:
            import_onnxruntime()  # before RapidOCR imports it: telemetry off
        from rapidocr import RapidOCR

        params = {
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": self._threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "EngineConfig.onnxruntime.enable_cpu_mem_arena": self._memory_arena,
            "Global.max_side_len": NEVER_SHRUNK,
            "Global.use_cls": False,
            "Det.limit_type": "max",
            "Det.limit_side_len": DETECTOR_SIDE,
        }
        if self._engine == OPENVINO:
            params |= _openvino_params(self._threads)
        return RapidOCR(params=params)

    def predict(self, loaded: Any, inputs: list[np.ndarray]) -> list[PageRead]:
        return [_read_upright(loaded, pixels) for pixels in inputs]


@dataclasses.dataclass(frozen=True)
class PageRead:
    """What one image read as, in RapidOCR's terms, and how far it was turned."""

    txts: tuple[str, ...] | None
    scores: tuple[float, ...] | None
    boxes: np.ndarray | None  # four corners per line, in the pixels read
    angle: int = 0


def _read_upright(loaded: Any, pixels: np.ndarray) -> PageRead:
    """Reads the image, and again turned upright if it reads as a turned page; the
    upright read is kept unless it found clearly less."""
    output, lines = _read(loaded, pixels)
    first = _page_read(output)
    angle = page_orientation.page_angle(lines, functools.partial(_recognise, loaded))
    if not angle:
        return first
    turned = _page_read(_read(loaded, page_orientation.upright(pixels, angle))[0])
    confidence = page_orientation.confidence
    if turned.boxes is None or confidence(turned.txts, turned.scores) < KEPT_SHARE * (
        confidence(first.txts, first.scores)
    ):
        return first
    height, width = pixels.shape[:2]
    boxes = page_orientation.image_points(turned.boxes, angle, width, height)
    return dataclasses.replace(turned, boxes=boxes, angle=angle)


def _page_read(output: Any) -> PageRead:
    """RapidOCR's output, of whichever kind (none when it found nothing)."""
    boxes = getattr(output, "boxes", None)
    return PageRead(
        getattr(output, "txts", None),
        getattr(output, "scores", None),
        None if boxes is None else np.asarray(boxes),
    )


def _read(loaded: Any, pixels: np.ndarray) -> tuple[Any, list[page_orientation.ReadLine]]:
    """RapidOCR's own steps (`RapidOCR.__call__`), keeping the lines' crops and shapes,
    which its final output drops."""
    # The detector's size limit is read on every call; calls to a loaded model never
    # overlap (`run_model`).
    detector = loaded._load_det_model()
    if not hasattr(detector, "limit_side_len"):
        raise RuntimeError("this RapidOCR has no detector size limit: pin rapidocr 3.10")
    detector.limit_side_len = detector_limit(pixels.shape[1], pixels.shape[0])
    original = loaded.load_img(pixels)
    image, steps = loaded.preprocess_img(original)
    detected, classified, recognised, crops = loaded.run_ocr_steps(image, steps)
    # Before the final output, which rewrites the boxes and drops empty lines.
    lines = page_orientation.read_lines(detected.boxes, crops, recognised.txts, recognised.scores)
    output = loaded.build_final_output(original, detected, classified, recognised, crops, steps)
    return output, lines


def _recognise(loaded: Any, crops: list[np.ndarray]) -> tuple[list[str], list[float]]:
    """Texts and scores of line crops; nothing read when the recogniser reads none."""
    from rapidocr.main import RapidOCRError

    try:
        found = loaded.recognize_txt(crops)
    except RapidOCRError:
        return [""] * len(crops), [0.0] * len(crops)
    return list(found.txts), [float(score) for score in found.scores]


def _openvino_params(threads: int) -> dict[str, Any]:
    """Every RapidOCR model on OpenVINO, from the ONNX files in the rapidocr wheel (given
    by path: RapidOCR would otherwise download OpenVINO's own)."""
    from rapidocr import EngineType

    models = packaged_file("rapidocr", "rapidocr", "models")
    files = {
        "Det": "PP-OCRv6_det_small.onnx",
        "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        "Rec": "PP-OCRv6_rec_small.onnx",
    }
    params: dict[str, Any] = {
        "EngineConfig.openvino.inference_num_threads": threads,
        "EngineConfig.openvino.enable_cpu_pinning": False,
        "EngineConfig.openvino.num_streams": 1,
    }
    for model, file_name in files.items():
        params[f"{model}.engine_type"] = EngineType.OPENVINO
        params[f"{model}.model_path"] = f"{models}/{file_name}"
    return params


def _prepare(record: ImageRecord) -> np.ndarray:
    return bgr_pixels(record.image)


def _attach(
    record: ImageRecord, output: PageRead, min_score: float, text_min_score: float
) -> ImageRecord:
    lines = text_lines(output, min_score, record.scale)
    result = ocr_result(lines, text_min_score, orientation=output.angle)
    return record.with_result(StepName.OCR, result)


@dataclasses.dataclass(frozen=True)
class OcrSettings:
    backend: str = backend_setting(StepName.OCR, "azure: AI Vision read; google: Cloud Vision text")
    min_score: float = setting(
        DEFAULT_MIN_SCORE, "drop text lines recognised with less confidence, 0-1"
    )
    text_min_score: float = setting(
        DEFAULT_TEXT_MIN_SCORE,
        "an image has text (has_text, and its text column) when a line of two or more "
        "letters or digits is read with this confidence, 0-1",
    )
    engine: str = setting(
        ONNXRUNTIME,
        "local model's runtime: openvino reads about 1.5x faster for about 280 MiB more "
        "per worker (pip install 'imaginem-beam[openvino]')",
        choices=ENGINES,
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"--ocr-min-score must be 0-1, got {self.min_score}")
        if not 0.0 <= self.text_min_score <= 1.0:
            raise ValueError(f"--ocr-text-min-score must be 0-1, got {self.text_min_score}")
        if self.engine not in ENGINES:
            raise ValueError(f"--ocr-engine must be one of {', '.join(ENGINES)}")
        if self.engine == OPENVINO and not self.api() and not find_spec("openvino"):
            raise ValueError(
                "--ocr-engine openvino needs OpenVINO: pip install 'imaginem-beam[openvino]'"
            )
        self.api()  # an unknown backend fails here

    def api(self) -> Api | None:
        return api_of(StepName.OCR, self.backend)


@dataclasses.dataclass(eq=False)
class ExtractText(beam.PTransform):
    """Reads the text in every image: lines with boxes and scores, and the full text.

    Args:
        settings: lines recognised with less confidence than `min_score` are dropped.
        threads: inference threads per worker process.

    Returns:
        Outputs `records` (with an `ocr` result) and `errors`.
    """

    settings: OcrSettings = OcrSettings()
    threads: int = 1

    def __post_init__(self) -> None:
        super().__init__()
        RapidOcr.check_installed()

    def expand(self, records):
        return records | RunModelOnImages(
            StepName.OCR,
            RapidOcr(self.threads, engine=self.settings.engine),
            prepare=_prepare,
            attach=functools.partial(
                _attach,
                min_score=self.settings.min_score,
                text_min_score=self.settings.text_min_score,
            ),
            max_batch_size=4,
        )


def text_result(
    record: ImageRecord,
    stored: StoredAnswer,
    backend: str,
    min_score: float,
    text_min_score: float = DEFAULT_TEXT_MIN_SCORE,
) -> dict[str, Any]:
    """The step's result from an API's stored text lines."""
    lines = [
        TextLine(line["text"], line["score"], [tuple(point) for point in line["box"]])
        for line in stored.answer
        if line["text"].strip() and (line["score"] is None or line["score"] >= min_score)
    ]
    return ocr_result(lines, text_min_score, model=stored.model, backend=backend)


def _build(context: StepContext) -> beam.PTransform:
    settings = context.settings_for(OcrSettings)
    return on_chosen_backend(
        context,
        StepName.OCR,
        settings,
        lambda: ExtractText(settings),
        text_result,
        min_score=settings.min_score,
        text_min_score=settings.text_min_score,
    )


def _parameters(context: StepContext) -> dict[str, Any]:
    settings = context.settings_for(OcrSettings)
    local = (
        {}
        if settings.api()
        else {
            "detector_side": DETECTOR_SIDE,
            "min_detector_scale": MIN_DETECTOR_SCALE,
            "largest_side": LARGEST_SIDE,
            "recognised_at": "full size",
            "orientation": "recogniser confidence",
            "engine": settings.engine,
        }
    )
    return model_parameters(
        settings,
        MODEL_ID,
        min_score=settings.min_score,
        text_min_score=settings.text_min_score,
        **local,
    )


STEP = Step(
    name=StepName.OCR,
    version=STEP_VERSION,
    build=_build,
    result_type=RESULT_TYPE,
    settings=OcrSettings,
    parameters=_parameters,
    description="text lines with boxes and scores (RapidOCR, PP-OCR models), or API text",
)
