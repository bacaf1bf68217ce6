"""Runs need no torch: the classification model is exported once, ahead of them."""

import os
import subprocess
import sys

from tests.corpus_files import imaginem, table_rows
from tools.check_runtime_requirements import refused
from transforms.inference.model_files import CACHE_ENV
from transforms.tables import schemas
from transforms.tasks import classify

# Loaded by every Python process of the run (driver and workers) through PYTHONPATH:
# the export's packages cannot be found, let alone imported.
HIDE_EXPORT_PACKAGES = f"""
import sys

class _Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {[module for module, _ in classify.EXPORT_REQUIRES]!r}:
            raise ModuleNotFoundError(f"{{name}} is hidden from this run")
        return None

sys.meta_path.insert(0, _Hidden())
"""


def _without_torch(tmp_path, **extra):
    hiding = tmp_path / "hide"
    hiding.mkdir(exist_ok=True)
    (hiding / "sitecustomize.py").write_text(HIDE_EXPORT_PACKAGES)
    return {**os.environ, "PYTHONPATH": str(hiding), **extra}


def test_classification_runs_without_torch_once_exported(small_corpus, tmp_path):
    classify.onnx_model_path()  # the export, made here where torch is installed
    environment = _without_torch(tmp_path)
    hidden = imaginem("steps", env=environment)
    assert hidden.returncode == 0
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=environment)
    assert probe.returncode != 0
    argv = ["run", "--corpus", small_corpus, "--version", "v1"]
    done = imaginem(*argv, "--steps", "generalclassification", env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(small_corpus, schemas.IMAGES)
    assert all(row["generalclassification"]["labels"] for row in rows)


def test_without_the_export_or_torch_a_run_says_how_to_export(small_corpus, tmp_path):
    environment = _without_torch(tmp_path, **{CACHE_ENV: str(tmp_path / "empty-cache")})
    argv = ["run", "--corpus", small_corpus, "--version", "v1", "--steps", "generalclassification"]
    done = imaginem(*argv, env=environment)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "imaginem models export" in done.stderr and "Traceback" not in done.stderr
    exported = imaginem("models", "export", env=environment)
    assert exported.returncode == 2 and "requirements-export.txt" in exported.stderr


def test_the_requirement_check_refuses_torch_and_cuda():
    assert refused(["numpy", "Torch", "nvidia-cublas-cu12", "onnxruntime"]) == [
        "Torch",
        "nvidia-cublas-cu12",
    ]
