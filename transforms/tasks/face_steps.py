"""Registrations of the face steps: detection, crop, embedding and matching.

The work and the composites are in `transforms.tasks.faces`; this module builds them
from a run's settings.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from transforms.io import storage
from transforms.records import StepName
from transforms.tables.transforms import TransformSpec
from transforms.tasks.base import Step, StepContext
from transforms.tasks.decode import DecodeImages, DecodeSettings
from transforms.tasks.faces import crop, detection, embed, match
from transforms.tasks.faces.crop import FaceCropSettings
from transforms.tasks.faces.decisions import read_reviewed
from transforms.tasks.faces.detection import FaceDetectionSettings
from transforms.tasks.faces.match import FaceMatchSettings
from transforms.tasks.on_api import on_chosen_backend


def _build_detection(context: StepContext) -> beam.PTransform:
    settings = context.settings_for(FaceDetectionSettings)
    return on_chosen_backend(
        context,
        StepName.FACE_DETECTION,
        settings,
        lambda: detection.DetectFaces(settings),
        detection.faces_result,
        detector=settings.detector(),
        min_score=settings.min_score,
    )


def _build_crop(context: StepContext) -> crop.CropFaces:
    return crop.CropFaces(
        corpus_root=context.corpus_root,
        settings=context.settings_for(FaceCropSettings),
        detector=context.settings_for(FaceDetectionSettings).detector(),
    )


def _crop_spec(context: StepContext) -> TransformSpec:
    step = _build_crop(context)
    return TransformSpec(
        crop.TRANSFORM_NAME, step.settings.version, crop.STEP_VERSION, step.parameters()
    )


def _crop_parameters(context: StepContext) -> dict[str, Any]:
    step = _build_crop(context)
    return {"transform_version": step.settings.version, **step.parameters()}


def _build_match(context: StepContext) -> match.MatchFaces:
    settings = context.settings_for(FaceMatchSettings)
    gallery_images = []
    if settings.gallery:
        gallery_images = match.list_gallery(storage.absolute_root(settings.gallery))
    decode = DecodeImages(
        context.settings_for(DecodeSettings), step=match.gallery_step(StepName.DECODE)
    )
    return match.MatchFaces(
        gallery_images=gallery_images,
        reviewed=read_reviewed(context.corpus_root),
        corpus_version=context.corpus_version,
        decode=decode,
        settings=settings,
        detection=context.settings_for(FaceDetectionSettings),
    )


STEPS = [
    Step(
        name=StepName.FACE_DETECTION,
        version=detection.STEP_VERSION,
        build=_build_detection,
        result_type=detection.RESULT_TYPE,
        settings=FaceDetectionSettings,
        parameters=lambda context: {
            "detector": context.settings_for(FaceDetectionSettings).detector()
        },
        description="face boxes, keypoints and scores (BlazeFace full-range), or API faces",
    ),
    Step(
        name=StepName.FACE_CROP,
        version=crop.STEP_VERSION,
        build=_build_crop,
        depends_on=(StepName.FACE_DETECTION,),
        result_type=crop.RESULT_TYPE,
        settings=FaceCropSettings,
        transform_spec=_crop_spec,
        parameters=_crop_parameters,
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
        settings=FaceMatchSettings,
        side_outputs=(match.FACE_CLUSTERS, match.CLUSTER_ROWS),
        description="match faces to a --gallery of people; cluster unknown faces",
        needs_pixels=False,
    ),
]
