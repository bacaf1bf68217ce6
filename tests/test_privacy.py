"""Nothing is recorded about the user outside the corpus and the model cache."""

import os
import subprocess
import sys

from transforms.inference.model_files import CACHE_ENV, model_cache_dir

LOAD_ONNX_MODELS = """
from transforms.tasks.classify import EfficientNetLite0
from transforms.tasks.ocr import RapidOcr
EfficientNetLite0().load()
RapidOcr().load()
"""


def test_loading_the_onnx_models_writes_no_telemetry(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), CACHE_ENV: str(model_cache_dir())}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_ONNX_MODELS], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    written = sorted(str(path.relative_to(home)) for path in home.rglob("*"))
    assert written == []
