"""Registrations of the model steps: their options, dependencies and builders."""

from __future__ import annotations

import argparse

from transforms import classify, ocr, storage
from transforms.faces import blazeface, crop, detection, embed, match
from transforms.records import StepName
from transforms.steps.base import Step, StepContext, TransformSpec


def _build_classification(context: StepContext) -> classify.ClassifyImages:
    return classify.ClassifyImages(
        top_k=context.option("classification_top_k", classify.DEFAULT_TOP_K)
    )


def _classification_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--classification-top-k",
        type=int,
        default=classify.DEFAULT_TOP_K,
        help="ImageNet labels kept per image (default %(default)s)",
    )


def _build_ocr(context: StepContext) -> ocr.ExtractText:
    return ocr.ExtractText(min_score=context.option("ocr_min_score", ocr.DEFAULT_MIN_SCORE))


def _ocr_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--ocr-min-score",
        type=float,
        default=ocr.DEFAULT_MIN_SCORE,
        help="drop text lines recognised with less confidence, 0-1 (default %(default)s)",
    )


def _build_detection(context: StepContext) -> detection.DetectFaces:
    return detection.DetectFaces(
        min_score=context.option("face_min_score", blazeface.DEFAULT_MIN_SCORE),
        min_face_fraction=context.option("face_min_size", blazeface.DEFAULT_MIN_FACE_FRACTION),
    )


def _detection_options(group: argparse._ArgumentGroup) -> None:
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
        help="smallest face to look for, as a fraction of the image's longest side; "
        "smaller finds smaller faces at more cost (default %(default)s)",
    )


def _build_crop(context: StepContext) -> crop.CropFaces:
    return crop.CropFaces(
        corpus_root=context.corpus_root,
        transform_version=context.option("facecrop_version", crop.DEFAULT_TRANSFORM_VERSION),
        detector=_build_detection(context).settings(),
    )


def _crop_spec(context: StepContext) -> TransformSpec:
    step = _build_crop(context)
    return TransformSpec(
        crop.TRANSFORM_NAME, step.transform_version, crop.STEP_VERSION, step.parameters()
    )


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
        detect=_build_detection(context),
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
        description="top ImageNet-1k labels (EfficientNet-Lite0, onnxruntime)",
    ),
    Step(
        name=StepName.OCR,
        version=ocr.STEP_VERSION,
        build=_build_ocr,
        result_type=ocr.RESULT_TYPE,
        add_options=_ocr_options,
        description="text lines with boxes and scores (RapidOCR, PP-OCR models)",
    ),
    Step(
        name=StepName.FACE_DETECTION,
        version=detection.STEP_VERSION,
        build=_build_detection,
        result_type=detection.RESULT_TYPE,
        add_options=_detection_options,
        description="face boxes, keypoints and scores (BlazeFace full-range)",
    ),
    Step(
        name=StepName.FACE_CROP,
        version=crop.STEP_VERSION,
        build=_build_crop,
        depends_on=(StepName.FACE_DETECTION,),
        result_type=crop.RESULT_TYPE,
        add_options=_crop_options,
        transform_spec=_crop_spec,
        description="aligned 150 px face chips under transform/facecrop/<version>/",
    ),
    Step(
        name=StepName.FACE_PRINT,
        version=embed.STEP_VERSION,
        build=lambda context: embed.EmbedFaces(),
        depends_on=(StepName.FACE_CROP,),
        result_type=embed.RESULT_TYPE,
        description="128-d face embeddings (dlib ResNet)",
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
