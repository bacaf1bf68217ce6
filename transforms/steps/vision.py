"""Registrations of the model steps: their options, dependencies and builders."""

from __future__ import annotations

import argparse
import functools

import apache_beam as beam

from transforms import classify, ocr, storage
from transforms.faces import blazeface, crop, detection, embed, match
from transforms.records import LOCAL_BACKEND, ImageRecord, StepName
from transforms.remote import backends
from transforms.remote.answer_store import StoredAnswer
from transforms.remote.api_step import CallVisionApi, ResultMaker
from transforms.remote.apis import Api
from transforms.steps.base import Step, StepContext, TransformSpec


def _add_backend_option(group: argparse._ArgumentGroup, step: str, api_features: str) -> None:
    group.add_argument(
        f"--{step}-backend",
        choices=backends.BACKENDS,
        default=LOCAL_BACKEND,
        help=f"run on the local model or on an API ({api_features}); endpoints and keys "
        "come from the environment or --api-config (default %(default)s)",
    )


def _on_api(context: StepContext, step: str, api: Api, make_result: ResultMaker) -> CallVisionApi:
    """The step on the API its options chose."""
    if context.api is None:
        raise ValueError(f"--{step}-backend needs the run's API settings")
    return CallVisionApi(
        step=step,
        api=api,
        corpus_root=context.corpus_root,
        settings=context.api,
        read=backends.reader_for(step, api),
        make_result=make_result,
    )


def _model_parameters(context: StepContext, step: str, local_model: str, **options) -> dict:
    """What makes a model step's result: the backend, its model, and the step's options."""
    api = backends.chosen_api(step, context.options)
    backend, model = (api.name, api.model_version) if api else (LOCAL_BACKEND, local_model)
    return {"backend": backend, "model": model, **options}


def _labels(record: ImageRecord, stored: StoredAnswer, backend: str, top_k: int) -> dict:
    return backends.labels_result(stored, backend, top_k)


def _build_classification(context: StepContext) -> beam.PTransform:
    step = StepName.GENERAL_CLASSIFICATION
    top_k = context.option("classification_top_k", classify.DEFAULT_TOP_K)
    local = classify.ClassifyImages(top_k=top_k)  # validates top_k either way
    if api := backends.chosen_api(step, context.options):
        make = functools.partial(_labels, backend=api.name, top_k=top_k)
        return _on_api(context, step, api, make)
    return local


def _classification_options(group: argparse._ArgumentGroup) -> None:
    _add_backend_option(
        group, StepName.GENERAL_CLASSIFICATION, "azure: AI Vision tags; google: Cloud Vision labels"
    )
    group.add_argument(
        "--classification-top-k",
        type=int,
        default=classify.DEFAULT_TOP_K,
        help="labels kept per image (default %(default)s)",
    )


def _text(record: ImageRecord, stored: StoredAnswer, backend: str, min_score: float) -> dict:
    return backends.text_result(stored, backend, min_score)


def _build_ocr(context: StepContext) -> beam.PTransform:
    step = StepName.OCR
    local = ocr.ExtractText(min_score=context.option("ocr_min_score", ocr.DEFAULT_MIN_SCORE))
    if api := backends.chosen_api(step, context.options):
        make = functools.partial(_text, backend=api.name, min_score=local.min_score)
        return _on_api(context, step, api, make)
    return local


def _ocr_options(group: argparse._ArgumentGroup) -> None:
    _add_backend_option(group, StepName.OCR, "azure: AI Vision read; google: Cloud Vision text")
    group.add_argument(
        "--ocr-min-score",
        type=float,
        default=ocr.DEFAULT_MIN_SCORE,
        help="drop text lines recognised with less confidence, 0-1 (default %(default)s)",
    )


def _local_detection(context: StepContext) -> detection.DetectFaces:
    return detection.DetectFaces(
        min_score=context.option("face_min_score", blazeface.DEFAULT_MIN_SCORE),
        min_face_fraction=context.option("face_min_size", blazeface.DEFAULT_MIN_FACE_FRACTION),
    )


def _detector_settings(context: StepContext) -> str:
    """What numbers the faces (and names the chips) of the chosen detector."""
    local = _local_detection(context)
    if api := backends.chosen_api(StepName.FACE_DETECTION, context.options):
        return backends.detector_settings(api, local.min_score)
    return local.settings()


def _faces(
    record: ImageRecord, stored: StoredAnswer, backend: str, detector: str, min_score: float
) -> dict:
    return backends.faces_result(stored, backend, record.entry.image_sha256, detector, min_score)


def _build_detection(context: StepContext) -> beam.PTransform:
    step = StepName.FACE_DETECTION
    local = _local_detection(context)
    grid = context.option("face_grid", 1)
    if not 1 <= grid <= 4:
        raise ValueError(f"--face-grid must be 1-4 (images per side of the grid), got {grid}")
    api = backends.chosen_api(step, context.options)
    if grid != 1 and context.option(backends.backend_option(step)) != backends.AZURE:
        raise ValueError("--face-grid is for --facedetection-backend azure only")
    if api:
        detector = backends.detector_settings(api, local.min_score)
        make = functools.partial(
            _faces, backend=api.name, detector=detector, min_score=local.min_score
        )
        return _on_api(context, step, api, make)
    return local


def _detection_options(group: argparse._ArgumentGroup) -> None:
    _add_backend_option(
        group, StepName.FACE_DETECTION, "azure: Face detect; google: Cloud Vision faces"
    )
    group.add_argument(
        "--face-grid",
        type=int,
        default=1,
        help="with the azure backend, send N x N images as one grid image per detect call: "
        "N^2 times fewer calls, but small faces are lost (default %(default)s: off)",
    )
    group.add_argument(
        "--face-min-score",
        type=float,
        default=blazeface.DEFAULT_MIN_SCORE,
        help="drop faces detected with less confidence, 0-1 (default %(default)s)",
    )
    group.add_argument(
        "--face-min-size",
        type=float,
        default=blazeface.DEFAULT_MIN_FACE_FRACTION,
        help="local model: smallest face to look for, as a fraction of the image's longest "
        "side; smaller finds smaller faces at more cost (default %(default)s)",
    )


def _build_crop(context: StepContext) -> crop.CropFaces:
    return crop.CropFaces(
        corpus_root=context.corpus_root,
        transform_version=context.option("facecrop_version", crop.DEFAULT_TRANSFORM_VERSION),
        detector=_detector_settings(context),
    )


def _crop_spec(context: StepContext) -> TransformSpec:
    step = _build_crop(context)
    return TransformSpec(
        crop.TRANSFORM_NAME, step.transform_version, crop.STEP_VERSION, step.parameters()
    )


def _crop_result_parameters(step: crop.CropFaces) -> dict:
    return {"transform_version": step.transform_version, **step.parameters()}


def _crop_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--facecrop-version",
        default=crop.DEFAULT_TRANSFORM_VERSION,
        help="transform version of the face chips (default %(default)s)",
    )


def _build_match(context: StepContext) -> match.MatchFaces:
    gallery = context.option("gallery")
    gallery_images = []
    if gallery:
        gallery_images = match.list_gallery(storage.absolute_root(gallery))
    return match.MatchFaces(
        gallery_images=gallery_images,
        corpus_version=context.corpus_version,
        threshold=context.option("match_threshold", match.DEFAULT_THRESHOLD),
        # Gallery photos are few: they always go through the local detector.
        detect=_local_detection(context),
    )


def _match_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--gallery",
        help="folder of known people, one sub-folder per person with their photos "
        "(any corpus path); without it faces are only clustered",
    )
    group.add_argument(
        "--match-threshold",
        type=float,
        default=match.DEFAULT_THRESHOLD,
        help="largest face-embedding distance counted as the same person; also links "
        "unknown faces into clusters (default %(default)s)",
    )


STEPS = [
    Step(
        name=StepName.GENERAL_CLASSIFICATION,
        version=classify.STEP_VERSION,
        build=_build_classification,
        result_type=classify.RESULT_TYPE,
        add_options=_classification_options,
        parameters=lambda context: _model_parameters(
            context,
            StepName.GENERAL_CLASSIFICATION,
            classify.MODEL_ID,
            top_k=context.option("classification_top_k", classify.DEFAULT_TOP_K),
        ),
        description="top ImageNet-1k labels (EfficientNet-Lite0, onnxruntime), or API labels",
    ),
    Step(
        name=StepName.OCR,
        version=ocr.STEP_VERSION,
        build=_build_ocr,
        result_type=ocr.RESULT_TYPE,
        add_options=_ocr_options,
        parameters=lambda context: _model_parameters(
            context,
            StepName.OCR,
            ocr.MODEL_ID,
            min_score=context.option("ocr_min_score", ocr.DEFAULT_MIN_SCORE),
        ),
        description="text lines with boxes and scores (RapidOCR, PP-OCR models), or API text",
    ),
    Step(
        name=StepName.FACE_DETECTION,
        version=detection.STEP_VERSION,
        build=_build_detection,
        result_type=detection.RESULT_TYPE,
        add_options=_detection_options,
        parameters=lambda context: {"detector": _detector_settings(context)},
        description="face boxes, keypoints and scores (BlazeFace full-range), or API faces",
    ),
    Step(
        name=StepName.FACE_CROP,
        version=crop.STEP_VERSION,
        build=_build_crop,
        depends_on=(StepName.FACE_DETECTION,),
        result_type=crop.RESULT_TYPE,
        add_options=_crop_options,
        transform_spec=_crop_spec,
        parameters=lambda context: _crop_result_parameters(_build_crop(context)),
        hands_on=True,  # the chips faceprint embeds
        description="aligned 150 px face chips under transform/facecrop/<version>/",
    ),
    Step(
        name=StepName.FACE_PRINT,
        version=embed.STEP_VERSION,
        build=lambda context: embed.EmbedFaces(),
        depends_on=(StepName.FACE_CROP,),
        result_type=embed.RESULT_TYPE,
        description="128-d face embeddings (dlib ResNet)",
        parameters=lambda context: {"model": embed.dlib_models.EMBEDDER_ID},
    ),
    Step(
        name=StepName.FACE_MATCH,
        version=match.STEP_VERSION,
        build=_build_match,
        depends_on=(StepName.FACE_PRINT,),
        result_type=match.RESULT_TYPE,
        add_options=_match_options,
        description="match faces to a --gallery of people; cluster unknown faces",
        needs_pixels=False,
    ),
]
