"""A vision step run by a remote API: stored answers first, then batched, paced calls.

`CallVisionApi` is the step. For each image it first looks for a stored answer
(`AnswerStore`); only images without one reach `RunInference`, whose batches are
split into requests of as many images as the API takes and sent a few at a time,
each request first taking a slot from the job's quota. Every answer is stored the
moment it arrives. An image the API refuses, or that still fails after the retries,
goes to `errors` with the reason; none is dropped.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import httpx
from apache_beam.metrics import Metrics
from PIL import Image

from transforms.inference.run_model import LocalModel, RunModelOnImages
from transforms.records import ImageRecord
from transforms.remote.answer_store import AnswerStore, StoredAnswer
from transforms.remote.api import Api, Reader
from transforms.remote.endpoints import ApiEndpoint
from transforms.remote.http_call import ApiRefusedError, CallStats, call_json
from transforms.remote.quota import QuotaClient
from transforms.retry import RetryPolicy

API_RETRY = RetryPolicy(tries=6, first_delay=1.0, max_delay=30.0)
# Counters in the step's namespace; the run summary reads them.
REQUESTS, IMAGES_SENT, RETRIES = "api_requests", "api_images_sent", "api_retries"
THROTTLED, THROTTLED_MS, QUOTA_WAIT_MS = "api_throttled", "api_throttled_ms", "api_quota_wait_ms"


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    """How a job calls the APIs: endpoints by API name, its quota, timeouts, retries."""

    endpoints: Mapping[str, ApiEndpoint]
    quota_url: str | None = None
    timeout_seconds: float = 60.0
    concurrency: int = 4  # requests in flight per worker process
    retry: RetryPolicy = API_RETRY


@dataclasses.dataclass(frozen=True)
class SentImage:
    """An image as it is sent: shrunk to the API's size, and by how much."""

    image_sha256: str
    image: Image.Image
    scale: float  # the file's pixels per pixel sent
    corpus_version: str = ""  # where the answer is first stored


def shrink(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """The image with its longest side at most `max_side`, and the scale undone later."""
    longest = max(image.size)
    if longest <= max_side:
        return image, 1.0
    factor = max_side / longest
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS), longest / max_side


class _Connection:
    """A worker's client, key, quota handle and request threads."""

    def __init__(self, settings: ApiSettings, endpoint: ApiEndpoint) -> None:
        self.client = httpx.Client(timeout=settings.timeout_seconds)
        self.url = endpoint.url
        self.key = endpoint.key()
        self.quota = QuotaClient(settings.quota_url) if settings.quota_url else None
        self.threads = ThreadPoolExecutor(settings.concurrency)


class _ApiModel(LocalModel):
    """Calls one API feature for a batch of images; answers are stored as they arrive."""

    requires = (("httpx", "httpx"),)

    def __init__(
        self, step: str, api: Api, settings: ApiSettings, store: AnswerStore, read: Reader
    ) -> None:
        self.model_id = f"{api.name}/{api.model_version}"
        self._step = step
        self._api = api
        self._settings = settings
        self._endpoint = settings.endpoints[api.name]
        self._store = store
        self._read = read

    def load(self) -> _Connection:
        return _Connection(self._settings, self._endpoint)

    def predict(self, loaded: _Connection, inputs: Sequence[SentImage]) -> list[Any]:
        # The same image twice in a batch is sent once.
        unique = list({sent.image_sha256: sent for sent in inputs}.values())
        size = self._api.images_per_request
        requests = [unique[start : start + size] for start in range(0, len(unique), size)]
        answers: dict[str, Any] = {}
        for outcome, stats in loaded.threads.map(
            functools.partial(self._request, loaded), requests
        ):
            answers.update(outcome)
            self._count(stats)  # here: Beam's metrics belong to the bundle's thread
        return [answers[sent.image_sha256] for sent in inputs]

    def _request(
        self, loaded: _Connection, sent: list[SentImage]
    ) -> tuple[dict[str, Any], CallStats]:
        """One request: image hash -> stored answer, or the error for that image."""
        stats = CallStats(images=len(sent))
        try:
            packed = self._api.pack([one.image for one in sent])
            per_image = call_json(
                lambda: self._api.send(loaded.client, loaded.url, loaded.key, packed),
                loaded.quota,
                self._settings.retry,
                stats,
                parse=lambda payload: self._api.split(payload, packed),
            )
        except Exception as error:  # noqa: BLE001 - the error of every image in the request
            if len(sent) > 1 or not isinstance(error, ApiRefusedError):
                return {one.image_sha256: error for one in sent}, stats
            per_image = [error]  # one image, refused: its own answer
        outcomes = {
            one.image_sha256: self._neutral(one, answer)
            for one, answer in zip(sent, per_image, strict=True)
        }
        return self._keep(outcomes, sent[0].corpus_version), stats

    def _neutral(self, sent: SentImage, answer: Any) -> Any:
        """One image's answer (or refusal) as it is stored, or the error to report."""
        try:
            if isinstance(answer, ApiRefusedError) and answer.refuses_the_image:
                refused = {"status": answer.status, "message": answer.message}
                return StoredAnswer(self._api.model_version, None, refused)
            if isinstance(answer, Exception):
                return answer
            return StoredAnswer(self._api.reported_model(answer), self._read(answer, sent.scale))
        except Exception as error:  # noqa: BLE001 - an answer we cannot read
            return error

    def _keep(self, outcomes: dict[str, Any], corpus_version: str) -> dict[str, Any]:
        """Stores the request's answers in one commit; a refusal goes on as its error."""
        answers = {sha: out for sha, out in outcomes.items() if isinstance(out, StoredAnswer)}
        try:
            self._store.put(answers, corpus_version)
        except Exception as error:  # noqa: BLE001 - answers we cannot keep are errors
            return {sha: error if sha in answers else out for sha, out in outcomes.items()}
        return {
            sha: _refusal(out) if isinstance(out, StoredAnswer) and out.refused else out
            for sha, out in outcomes.items()
        }

    def _count(self, stats: CallStats) -> None:
        for name, value in (
            (REQUESTS, stats.requests),
            (IMAGES_SENT, stats.images),
            (RETRIES, stats.retries),
            (THROTTLED, stats.throttled),
            (THROTTLED_MS, round(stats.throttled_seconds * 1000)),
            (QUOTA_WAIT_MS, round(stats.quota_seconds * 1000)),
        ):
            if value:
                Metrics.counter(self._step, name).inc(value)

    def input_bytes(self, model_input: SentImage) -> int:
        return model_input.image.width * model_input.image.height * 3


def _prepare(record: ImageRecord, max_side: int) -> SentImage:
    image, scale = shrink(record.image, max_side)
    return SentImage(
        record.entry.image_sha256, image, scale * record.scale, record.entry.corpus_version
    )


def _refusal(stored: StoredAnswer) -> ApiRefusedError:
    return ApiRefusedError(**stored.refused)


def _lookup(record: ImageRecord, store: AnswerStore) -> StoredAnswer | None:
    return store.get(record)


def answer_store(corpus_root: str, step: str, api: Api) -> AnswerStore:
    """Where the answers of `api` for `step` are kept."""
    return AnswerStore(corpus_root, step, api.name, api.model_version)


ResultMaker = Callable[[ImageRecord, StoredAnswer], dict[str, Any]]


def _attach(record: ImageRecord, stored: StoredAnswer, step: str, make: ResultMaker):
    if stored.refused is not None:
        # Refused when it was sent before: the same error row, without a call.
        raise _refusal(stored)
    return record.with_result(step, make(record, stored))


@dataclasses.dataclass(eq=False)
class CallVisionApi(beam.PTransform):
    """Runs a step on a remote API, never paying twice for an image's answer.

    Args:
        step: the step name, used as the metrics namespace, in error rows and keys.
        api: the API feature to call.
        corpus_root: where answers are stored.
        settings: endpoints, quota, timeouts and retries for the job.
        read: (API answer for one image, scale) -> neutral answer, as stored.
        make_result: (record, stored answer) -> the step's result.

    Returns:
        Outputs `records` (with the step's result) and `errors`.
    """

    step: str
    api: Api
    corpus_root: str
    settings: ApiSettings
    read: Reader
    make_result: ResultMaker

    def __post_init__(self) -> None:
        super().__init__()
        if self.api.name not in self.settings.endpoints:
            raise ValueError(f"no endpoint configured for {self.api.name}")

    def expand(self, records):
        store = answer_store(self.corpus_root, self.step, self.api)
        batch = self.api.images_per_request * self.settings.concurrency
        return records | RunModelOnImages(
            self.step,
            _ApiModel(self.step, self.api, self.settings, store, self.read),
            prepare=functools.partial(_prepare, max_side=self.api.max_side),
            attach=functools.partial(_attach, step=self.step, make=self.make_result),
            lookup=functools.partial(_lookup, store=store),
            # Full requests: a batch is cut into requests of `images_per_request`.
            min_batch_size=batch,
            max_batch_size=batch,
            full_batches=True,
        )
