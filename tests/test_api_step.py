"""`CallVisionApi` as a composite: stored answers, refusals, request failures, metrics."""

import functools

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from tests.conftest import make_test_pipeline
from tests.fake_apis import FakeApiSettings, FakeVisionApi
from transforms.per_image import ERRORS, RECORDS
from transforms.records import ImageRecord, ManifestEntry, StepName
from transforms.remote.answer_store import StoredAnswer
from transforms.remote.api_step import ApiSettings, CallVisionApi, answer_store
from transforms.remote.azure_face import AzureFace
from transforms.remote.azure_vision import AzureVision, labels_from_azure
from transforms.remote.endpoints import ApiEndpoint
from transforms.remote.google_vision import GoogleVision, labels_from_google
from transforms.retry import RetryPolicy
from transforms.tasks.classify import labels_result

STEP = StepName.GENERAL_CLASSIFICATION
KEY_ENV = "IMAGINEM_TEST_API_KEY"


def _record(index: int, side: int = 64) -> ImageRecord:
    name = f"img{index}.png"
    entry = ManifestEntry(name, "", name, "v1", f"/corpus/{name}", f"{index:064x}", 1)
    image = Image.new("RGB", (side, side), (index * 40 % 256, 90, 30))
    return ImageRecord(entry=entry, image=image)


def _run(corpus_root, url, records, api):
    settings = ApiSettings(
        endpoints={api.name: ApiEndpoint(url, KEY_ENV)},
        retry=RetryPolicy(tries=2, first_delay=0.01, max_delay=0.02),
    )
    step = CallVisionApi(
        step=STEP,
        api=api,
        corpus_root=corpus_root,
        settings=settings,
        read=labels_from_google if isinstance(api, GoogleVision) else labels_from_azure,
        make_result=functools.partial(labels_result, backend=api.name, top_k=3),
    )
    pipeline = make_test_pipeline()
    outputs = pipeline | beam.Create(records) | step
    labelled = outputs[RECORDS] | beam.Map(
        lambda record: (record.entry.file_name, bool(record.results.get(STEP)))
    )
    errors = outputs[ERRORS] | beam.Map(lambda error: (error.path, error.error_type))
    return pipeline, labelled, errors


def _as_read(records, root, api):
    """The records with their stored answers, as `ReadCorpus` hands them to the step."""
    store = answer_store(root, STEP, api)
    stored = store.get_many(record.entry.image_sha256 for record in records)
    return [
        record.with_result(store.key, stored[record.entry.image_sha256].to_dict())
        if record.entry.image_sha256 in stored
        else record
        for record in records
    ]


def _nothing_stored(root, api):
    return answer_store(root, STEP, api).stored_hashes() == set()


def _counters(result):
    found = result.metrics().query(MetricsFilter().with_namespace(STEP))["counters"]
    return {counter.key.metric.name: counter.committed for counter in found}


def test_answers_are_stored_refusals_kept_and_nothing_is_sent_twice(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "k")
    api = AzureVision("tags")
    records = [_record(i) for i in range(6)] + [_record(9, side=30)]  # too small for Azure
    root = str(tmp_path)
    with FakeVisionApi(FakeApiSettings(key="k")) as fake:
        pipeline, labelled, errors = _run(root, fake.url, records, api)
        assert_that(labelled, equal_to([(f"img{i}.png", i != 9) for i in (*range(6), 9)]))
        assert_that(errors, equal_to([("img9.png", "ApiRefusedError")]), label="Errors")
        first = _counters(pipeline.run())
        assert len(fake.log) == 7

        # A run reads the stored answers with the corpus (`ReadCorpus`); as it would:
        pipeline, labelled, errors = _run(root, fake.url, _as_read(records, root, api), api)
        assert_that(labelled, equal_to([(f"img{i}.png", i != 9) for i in (*range(6), 9)]))
        assert_that(errors, equal_to([("img9.png", "ApiRefusedError")]), label="Errors")
        again = _counters(pipeline.run())
        assert len(fake.log) == 7, "stored answers and refusals are not asked for again"
    assert (first["api_requests"], first["processed"], first["failed"]) == (7, 6, 1)
    assert "api_requests" not in again and again["answers_reused"] == 7


def test_a_request_that_keeps_failing_sends_its_images_to_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "k")
    api = GoogleVision("LABEL_DETECTION")
    records = [_record(i) for i in range(3)]
    settings = FakeApiSettings(key="k", fault_rate=1.0, faults=("503",))
    with FakeVisionApi(settings) as fake:
        pipeline, labelled, errors = _run(str(tmp_path), fake.url, records, api)
        assert_that(labelled, equal_to([(f"img{i}.png", False) for i in range(3)]))
        assert_that(
            errors,
            equal_to([(f"img{i}.png", "ApiUnavailableError") for i in range(3)]),
            label="Errors",
        )
        counters = _counters(pipeline.run())
    assert counters["api_requests"] == 2 and counters["api_retries"] == 1
    assert counters["failed"] == 3
    assert _nothing_stored(str(tmp_path), api), "a failed request stores nothing"


def test_a_wrong_key_is_not_stored_as_a_refusal(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong")
    api = AzureVision("tags")
    with FakeVisionApi(FakeApiSettings(key="k")) as fake:
        pipeline, _, errors = _run(str(tmp_path), fake.url, [_record(1)], api)
        assert_that(errors, equal_to([("img1.png", "ApiRefusedError")]))
        pipeline.run()
    assert _nothing_stored(str(tmp_path), api)


def test_stored_answers_are_kept_apart_per_model_version(tmp_path):
    single = answer_store(str(tmp_path), STEP, AzureFace())
    grid = answer_store(str(tmp_path), STEP, AzureFace(grid_columns=2))
    assert single.key == grid.key == f"{STEP}:answer"
    assert single.fingerprint != grid.fingerprint
    single.put({"ab" * 32: StoredAnswer("detection_03", {"faces": []})}, "v1")
    assert single.stored_hashes() == {"ab" * 32} and grid.stored_hashes() == set()
