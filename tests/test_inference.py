"""RunModelOnImages with a fake model: batching, per-image failures, pass-through."""

import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from tests.conftest import make_test_pipeline
from transforms.inference.native_stderr import stderr_without
from transforms.inference.run_model import (
    LocalModel,
    RunModelOnImages,
    _Example,
    _LocalModelHandler,
    _PredictionFailed,
)
from transforms.per_image import ERRORS, RECORDS
from transforms.records import ImageRecord, ManifestEntry
from transforms.tasks.faces.match import _ReadGallery


class _MeanModel(LocalModel):
    """Doubles its input; a batch holding a negative input fails as a whole."""

    model_id = "fake-mean"

    def load(self):
        return "weights"

    def predict(self, loaded, inputs):
        assert loaded == "weights"
        if any(value < 0 for value in inputs):
            raise ValueError("negative input")
        return [value * 2 for value in inputs]


def _record(name: str, value: int, decoded: bool = True) -> ImageRecord:
    entry = ManifestEntry(name, "", name, "v1", f"/corpus/{name}", name * 4, 1)
    image = Image.new("RGB", (4, 4), (value % 256,) * 3) if decoded else None
    return ImageRecord(entry=entry, image=image, results={"seed": value})


def _prepare(record):
    if record.results["seed"] == 13:
        raise ValueError("unlucky image")
    return record.results["seed"]


def _attach(record, doubled):
    return record.with_result("double", doubled)


def test_one_bad_input_fails_alone_and_every_record_passes_on():
    records = [_record(f"img{i}", i) for i in range(20)]
    records += [_record("negative", -1), _record("unlucky", 13), _record("undecoded", 5, False)]
    pipeline = make_test_pipeline()
    outputs = (
        pipeline
        | beam.Create(records)
        | RunModelOnImages("double", _MeanModel(), _prepare, _attach, max_batch_size=8)
    )
    results = outputs[RECORDS] | beam.Map(lambda r: (r.entry.source_path, r.results.get("double")))
    expected = [(f"img{i}", 2 * i) for i in range(20) if i != 13]
    expected += [("img13", None), ("negative", None), ("unlucky", None), ("undecoded", None)]
    assert_that(results, equal_to(expected), label="records")
    errors = outputs[ERRORS] | beam.Map(lambda e: (e.path, e.step, e.error_type, e.message))
    assert_that(
        errors,
        equal_to(
            [
                ("negative", "double", "ValueError", "negative input"),
                ("unlucky", "double", "ValueError", "unlucky image"),
                ("img13", "double", "ValueError", "unlucky image"),
            ]
        ),
        label="errors",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace("double"))["counters"]:
        name = counter.key.metric.name
        counters[name] = counters.get(name, 0) + counter.committed
    assert counters == {"processed": 19, "failed": 3, "skipped_upstream_failed": 1}


def test_a_failed_batch_is_retried_one_input_at_a_time():
    handler = _LocalModelHandler(_MeanModel(), min_batch_size=1, max_batch_size=8)
    loaded = handler.load_model()
    batch = [
        _Example(_record(name, value), value) for name, value in [("a", 1), ("b", -1), ("c", 3)]
    ]
    predictions = list(handler.run_inference(batch, loaded))
    assert [p.example.record.entry.source_path for p in predictions] == ["a", "b", "c"]
    assert (predictions[0].inference, predictions[2].inference) == (2, 6)
    assert isinstance(predictions[1].inference, _PredictionFailed)
    assert str(predictions[1].inference.error) == "negative input"
    assert {p.model_id for p in predictions} == {"fake-mean"}


def test_fake_model_is_checked_for_its_packages():
    class _Needs(LocalModel):
        model_id = "needs-things"
        requires = (("numpy", "numpy"), ("no_such_module_xyz", "no-such-dist"))

        def load(self):
            return None

        def predict(self, loaded, inputs):
            return inputs

    with pytest.raises(ValueError, match=r"needs-things needs no-such-dist: install") as raised:
        _Needs.check_installed()
    assert "numpy" not in str(raised.value)  # only what is missing is named


def test_an_unreadable_gallery_photo_becomes_an_error_row(tmp_path):
    readable = tmp_path / "ann" / "1.jpg"
    readable.parent.mkdir()
    readable.write_bytes(b"bytes")
    pipeline = make_test_pipeline()
    read = (
        pipeline
        | beam.Create([("ann", str(readable)), ("bob", str(tmp_path / "bob" / "gone.jpg"))])
        | beam.ParDo(_ReadGallery("v1")).with_outputs(ERRORS, main=RECORDS)
    )
    records = read[RECORDS] | "Paths" >> beam.Map(lambda r: (r.entry.source_path, r.entry.bytes))
    assert_that(records, equal_to([("gallery:ann/1.jpg", 5)]), label="records")
    errors = read[ERRORS] | "Errors" >> beam.Map(lambda e: (e.path, e.step))
    assert_that(errors, equal_to([("gallery:bob/gone.jpg", "gallery.read")]), label="errors")
    pipeline.run().wait_until_finish()


def test_records_never_cross_a_flatten():
    """Beam's local runner ends a fused stage at every Flatten: a step that routed
    records around its model would copy every image's pixels between processes."""
    pipeline = make_test_pipeline()
    _ = (
        pipeline
        | beam.Create([_record("a", 1)])
        | RunModelOnImages("double", _MeanModel(), _prepare, _attach, lookup=lambda r: None)
    )
    kinds = []

    class _Kinds(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            kinds.append(type(node.transform).__name__)

    pipeline.visit(_Kinds())
    assert "ParDo" in kinds and "Flatten" not in kinds


def test_workers_do_not_import_torch():
    """torch is only for the one-time ONNX export; a worker that imports it starts
    2 s slower and holds 200 MB more. A worker imports the `transforms` plugin, then
    whatever its steps unpickle, Beam's RunInference module first among them."""
    code = (
        "import sys, transforms, apache_beam.ml.inference.base, transforms.tasks.classify; "
        "print('torch' in sys.modules)"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "False"


class _RecordingModel(_MeanModel):
    batches: list = []

    def predict(self, loaded, inputs):
        _RecordingModel.batches.append(sorted(inputs))
        return super().predict(loaded, inputs)


def test_full_batches_hold_only_images_the_model_must_see():
    """A remote API step's batches are cut into full requests: known answers and
    skipped images must not take their places."""
    _RecordingModel.batches = []
    records = [_record(f"img{i}", i) for i in range(10)] + [_record("undecoded", 5, False)]
    pipeline = make_test_pipeline()
    outputs = (
        pipeline
        | beam.Create(records)
        | RunModelOnImages(
            "double",
            _RecordingModel(),
            _prepare,
            _attach,
            lookup=lambda r: -100 if r.results["seed"] % 2 == 0 else None,
            min_batch_size=5,
            max_batch_size=5,
            full_batches=True,
        )
    )
    results = outputs[RECORDS] | beam.Map(lambda r: (r.entry.source_path, r.results.get("double")))
    expected = [(f"img{i}", -100 if i % 2 == 0 else 2 * i) for i in range(10)]
    assert_that(results, equal_to(expected + [("undecoded", None)]))
    pipeline.run().wait_until_finish()
    assert _RecordingModel.batches == [[1, 3, 5, 7, 9]]  # one full batch


def test_native_stderr_is_passed_on_without_the_noise(capfd):
    with stderr_without("Created TensorFlow Lite XNNPACK delegate"):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nreal warning\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "real warning\nafter\n"
