"""Running a local model over images through Beam's `RunInference`.

A model step is three parts: a plain `prepare` function (record -> model input,
run where a failure belongs to one image), a `LocalModel` (load once per worker,
predict a batch), and a plain `attach` function (record + prediction -> record with
its result). `RunModelOnImages` wires them with `RunInference` and a
`KeyedModelHandler`, so the image URI travels with every example as its key.

The record rides inside the example rather than in the key: Beam pickles keys to
size batches, and a record holds the image's pixels.

Every record goes through `RunInference`, even one the model must not see (an earlier
step failed on it, its answer is already known, or `prepare` failed): its outcome is
settled before the model and carried in the example. Routing such records around the
model would need a Flatten, and Beam's local runner ends a fused stage at every Flatten,
copying every record's pixels between processes at every step. Only a remote API step,
whose batches must be full requests, routes settled records around (`full_batches`).
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from transforms import progress
from transforms.per_image import ERRORS, RECORDS, Outcome, upstream_failed
from transforms.records import ErrorRecord, ImageRecord

LOGGER = logging.getLogger(__name__)


class LocalModel(abc.ABC):
    """A model a worker runs: weights shipped in an installed package, or a remote API
    (`transforms.remote.api_step`).

    Subclasses keep only settings in `__init__` (they are pickled to the workers);
    weights are read (or clients made) in `load`, once per worker process.
    """

    #: Recorded with every result, e.g. "efficientnet-lite0-onnx".
    model_id: str = ""
    #: (import name, distribution) of what `load` needs, checked before a run.
    requires: tuple[tuple[str, str], ...] = ()

    @classmethod
    def check_installed(cls) -> None:
        """Raises ValueError naming what to install; imports nothing."""
        missing = [
            dist for module, dist in cls.requires if importlib.util.find_spec(module) is None
        ]
        if missing:
            raise ValueError(
                f"{cls.model_id} needs {', '.join(missing)}: install the project's "
                "requirements.txt and requirements-nodeps.txt"
            )

    @abc.abstractmethod
    def load(self) -> Any:
        """Reads the weights; runs on a worker."""

    @abc.abstractmethod
    def predict(self, loaded: Any, inputs: Sequence[Any]) -> list[Any]:
        """One result per input, in order; may raise for the whole batch.

        An exception instance in place of a result is that input's error alone.
        """

    def input_bytes(self, model_input: Any) -> int:
        """Size of one input, for Beam's batch metrics."""
        return int(getattr(model_input, "nbytes", 0))


class _PassBy:
    """The outcome of a record an earlier step failed on: it goes on unchanged."""


@dataclasses.dataclass(frozen=True)
class _Example:
    """What RunInference carries for one image: the record and its model input, or
    its outcome settled without the model (a known prediction, the exception that
    `prepare` raised, or `_PassBy`)."""

    record: ImageRecord
    model_input: Any = None
    settled: Any = None


class _PredictionFailed(Exception):
    """Wraps the error of one input so it can travel as that input's prediction."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _LoadedModel:
    """A model loaded on first use, and the lock that serialises calls to it.

    Beam loads a handler's model when a worker sets the step up, whether or not an
    image will need it; a run whose results are all stored would load every model
    for nothing. Beam shares one loaded model between a worker's threads; LiteRT
    interpreters and dlib's networks must not be called from two threads at once.
    """

    def __init__(self, model: LocalModel) -> None:
        self._model = model
        self._loaded: Any = None
        self.lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The loaded model; call with `lock` held."""
        if self._loaded is None:
            started = time.perf_counter()
            self._loaded = self._model.load()
            LOGGER.debug("Loaded %s in %.1fs", self._model.model_id, time.perf_counter() - started)
        return self._loaded


class _LocalModelHandler(ModelHandler[_Example, PredictionResult, _LoadedModel]):
    """Adapts a `LocalModel` to Beam; one bad input never fails its batch.

    If a batch fails, each input is retried alone and only the inputs that fail
    again are reported, each with its own error.
    """

    def __init__(self, model: LocalModel, min_batch_size: int, max_batch_size: int) -> None:
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._model = model

    def load_model(self) -> _LoadedModel:
        return _LoadedModel(self._model)

    def run_inference(
        self, batch: Sequence[_Example], model: _LoadedModel, inference_args: dict | None = None
    ) -> Iterable[PredictionResult]:
        inputs = [example.model_input for example in batch if example.settled is None]
        predictions = iter(self._predict(model, inputs) if inputs else [])
        return [
            self.result(example, next(predictions) if example.settled is None else example.settled)
            for example in batch
        ]

    def result(self, example: _Example, outcome: Any) -> PredictionResult:
        """An exception as the outcome is that image's error alone."""
        if isinstance(outcome, Exception):
            outcome = _PredictionFailed(outcome)
        return PredictionResult(example, outcome, self._model.model_id)

    def _predict(self, model: _LoadedModel, inputs: list[Any]) -> list[Any]:
        with model.lock:
            try:
                predictions = self._model.predict(model.model, inputs)
            except Exception:  # noqa: BLE001 - retried one by one below
                return [self._predict_one(model.model, one) for one in inputs]
        if len(predictions) != len(inputs):
            raise RuntimeError(
                f"{self._model.model_id} returned {len(predictions)} predictions "
                f"for {len(inputs)} inputs"
            )
        return predictions

    def _predict_one(self, model: Any, model_input: Any) -> Any:
        try:
            return self._model.predict(model, [model_input])[0]
        except Exception as error:  # noqa: BLE001 - reported as this image's error
            return error

    def get_num_bytes(self, batch: Sequence[_Example]) -> int:
        return sum(
            self._model.input_bytes(example.model_input)
            for example in batch
            if example.settled is None
        )

    def get_metrics_namespace(self) -> str:
        return f"RunInference[{self._model.model_id}]"


PrepareFunction = Callable[[ImageRecord], Any]
AttachFunction = Callable[[ImageRecord, Any], ImageRecord]
LookupFunction = Callable[[ImageRecord], Any]
ANSWERS_REUSED = "answers_reused"  # counter of predictions found by `lookup`
_SETTLED = "settled"  # examples routed around the model (`full_batches`)


class _Prepare(beam.DoFn):
    """record -> (uri, example), with the outcome settled where the model is not needed."""

    def __init__(
        self,
        step: str,
        prepare: PrepareFunction,
        requires: tuple[str, ...],
        lookup: LookupFunction | None,
        settled_aside: _LocalModelHandler | None,
    ) -> None:
        self._step = step
        self._prepare = prepare
        self._requires = requires
        self._lookup = lookup
        self._settled_aside = settled_aside

    def setup(self) -> None:
        self._skipped = progress.counter(self._step, "skipped_upstream_failed")
        self._reused = progress.counter(self._step, ANSWERS_REUSED)
        self._stored = progress.counter(self._step, Outcome.REUSED)

    def process(self, record: ImageRecord):
        example = self._example(record)
        if example.settled is not None and self._settled_aside is not None:
            yield beam.pvalue.TaggedOutput(
                _SETTLED,
                (record.entry.uri, self._settled_aside.result(example, example.settled)),
            )
            return
        yield record.entry.uri, example

    def _example(self, record: ImageRecord) -> _Example:
        if not record.must_run(self._step):
            self._stored.inc()  # its result is stored and already in the record
            return _Example(record, settled=_PassBy())
        if upstream_failed(record, needs_pixels=True, requires=self._requires):
            self._skipped.inc()
            return _Example(record, settled=_PassBy())
        try:
            known = self._lookup(record) if self._lookup else None
            if known is not None:
                self._reused.inc()
                return _Example(record, settled=known)
            return _Example(record, self._prepare(record))
        except Exception as error:  # noqa: BLE001 - one bad image must not fail the run
            return _Example(record, settled=error)


class _Attach(beam.DoFn):
    """(uri, prediction) -> record with the step's result, or an error row."""

    def __init__(self, step: str, attach: AttachFunction) -> None:
        self._step = step
        self._attach = attach

    def setup(self) -> None:
        self._processed = progress.counter(self._step, "processed")
        self._failed = progress.counter(self._step, "failed")

    def process(self, keyed_prediction: tuple[str, PredictionResult]):
        _, prediction = keyed_prediction
        record = prediction.example.record
        if isinstance(prediction.inference, _PassBy):
            yield record
            return
        try:
            if isinstance(prediction.inference, _PredictionFailed):
                raise prediction.inference.error
            updated = self._attach(record, prediction.inference)
        except Exception as error:  # noqa: BLE001 - one bad image must not fail the run
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS, ErrorRecord.for_entry(record.entry, self._step, error)
            )
            yield record
            return
        self._processed.inc()
        yield updated


class RunModelOnImages(beam.PTransform):
    """Runs a local model on every image as one step, batched by `RunInference`.

    Args:
        step: the step name, used as the metrics namespace and in error rows.
        model: the model; loaded once per worker process.
        prepare: record -> model input; may raise for a bad image.
        attach: (record, prediction) -> record with the step's result.
        requires: skip images missing any of these steps' results.
        min_batch_size, max_batch_size: bounds for Beam's adaptive batching.
        lookup: record -> its prediction if already known (e.g. a stored API
            answer), else None; known images skip the model.
        full_batches: only images the model must see enter `RunInference`, so
            every batch is full of them (a remote API billed per request); the
            rest rejoin through a Flatten, which splits the fused stage.

    Returns:
        Outputs `records` (every input record, with the result where it worked)
        and `errors` (one row per image the step failed on).
    """

    def __init__(
        self,
        step: str,
        model: LocalModel,
        prepare: PrepareFunction,
        attach: AttachFunction,
        requires: tuple[str, ...] = (),
        min_batch_size: int = 1,
        max_batch_size: int = 8,
        lookup: LookupFunction | None = None,
        full_batches: bool = False,
    ) -> None:
        super().__init__()
        self._step = step
        handler = _LocalModelHandler(model, min_batch_size, max_batch_size)
        self._handler = KeyedModelHandler(handler)
        self._prepare = _Prepare(step, prepare, requires, lookup, handler if full_batches else None)
        self._full_batches = full_batches
        self._attach = _Attach(step, attach)

    def expand(self, records):
        prepared = records | "Prepare" >> beam.ParDo(self._prepare).with_outputs(
            _SETTLED, main="examples"
        )
        predicted = prepared.examples | "RunInference" >> RunInference(self._handler)
        if self._full_batches:
            predicted = (predicted, prepared[_SETTLED]) | "WithSettled" >> beam.Flatten()
        attached = predicted | "Attach" >> beam.ParDo(self._attach).with_outputs(
            ERRORS, main=RECORDS
        )
        return {RECORDS: attached[RECORDS], ERRORS: attached[ERRORS]}
