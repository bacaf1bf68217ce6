"""What every step shares: its context, its spec, and the per-image error contract.

A step is a composite `PTransform` from `PCollection[ImageRecord]` to outputs tagged
`records` and `errors`. A step that fails on one image emits an `ErrorRecord` for it
and passes the record on without its result, so one bad image never stops the run
and never disappears from the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms.azure_tables import AzureTables
from transforms.records import ErrorRecord, ImageRecord

if TYPE_CHECKING:
    from transforms.remote.api_step import ApiSettings
    from transforms.tables.result_store import ResultPlan, ResultStore

RECORDS = "records"
ERRORS = "errors"


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a step is built from: where the corpus is and the parsed options."""

    corpus_root: str
    corpus_version: str
    options: argparse.Namespace = dataclasses.field(default_factory=argparse.Namespace)
    expected_images: int = 0  # manifest size, to size outputs
    step_columns: Mapping[str, pa.DataType] = dataclasses.field(default_factory=dict)
    azure_tables: AzureTables | None = None  # where the Azure Table copy goes, if any
    api: ApiSettings | None = None  # how steps on a remote backend call their APIs
    run_steps: tuple[str, ...] = ()  # every step of the run, in order
    step_versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    results: ResultPlan | None = None  # which stored results the run reuses
    result_store: ResultStore | None = None

    def option(self, name: str, default: Any = None) -> Any:
        return getattr(self.options, name, default)


@dataclasses.dataclass(frozen=True)
class TransformSpec:
    """A versioned image transform a step writes (a row of the `transforms` table)."""

    transform_name: str
    transform_version: str
    step_version: str
    parameters: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Step:
    """A registered pipeline step.

    Attributes:
        name: the name used in a pipeline definition.
        version: bumped when the step's results change; stored with every result.
        build: makes the step's `PTransform` from a context; validates its options.
        depends_on: steps whose results this one needs (`decode` is always implied).
        result_type: Arrow type of the step's column in `images`, or None.
        add_options: declares the step's own command-line options.
        transform_spec: the versioned transform it writes, if any.
        terminal: consumes `{"records", "errors"}` and writes the tables.
        description: one line for `imaginem steps`.
        needs_pixels: reads the image's pixels, bytes or artifacts; once no later
            step does, records travel without them.
        parameters: what changes the step's result besides its version (model,
            backend, options); with it, results are stored and reused, keyed by
            their fingerprint. None: computed on every run (cheap or global steps).
        hands_on: later steps read what it leaves in memory (pixels, chips): when
            one of them runs on an image, this step runs too.
    """

    name: str
    version: str
    build: Callable[[StepContext], beam.PTransform]
    depends_on: tuple[str, ...] = ()
    result_type: pa.DataType | None = None
    add_options: Callable[[argparse._ArgumentGroup], None] | None = None
    transform_spec: Callable[[StepContext], TransformSpec] | None = None
    terminal: bool = False
    description: str = ""
    needs_pixels: bool = True
    parameters: Callable[[StepContext], Mapping[str, Any]] | None = None
    hands_on: bool = False


class Outcome(enum.StrEnum):
    PROCESSED = "processed"  # computed by this run
    SKIPPED_EXISTING = "skipped_existing"  # computed, its output file already there
    REUSED = "reused"  # a stored result of an earlier run, not computed again


ImageFunction = Callable[[ImageRecord], tuple[ImageRecord, Outcome]]


def upstream_failed(record: ImageRecord, needs_pixels: bool, requires: tuple[str, ...]) -> bool:
    """An earlier step failed on this image (and reported why): skip it."""
    if needs_pixels and record.image is None:
        return True
    return any(record.results.get(step) is None for step in requires)


class _ApplyToEachImage(beam.DoFn):
    """Runs a plain per-image function, counting outcomes and catching failures."""

    def __init__(
        self,
        step: str,
        function: ImageFunction,
        drop_failed: bool,
        needs_pixels: bool,
        requires: tuple[str, ...],
    ) -> None:
        self._step = step
        self._function = function
        self._drop_failed = drop_failed
        self._needs_pixels = needs_pixels
        self._requires = requires

    def setup(self) -> None:
        self._counters = {
            name: Metrics.counter(self._step, name)
            for name in [*Outcome, "failed", "skipped_upstream_failed"]
        }
        self._latency = Metrics.distribution(self._step, "latency_ms")

    def process(self, record: ImageRecord):
        if not record.must_run(self._step):
            self._counters[Outcome.REUSED].inc()
            yield record
            return
        if upstream_failed(record, self._needs_pixels, self._requires):
            # An earlier step already failed on this image and reported why.
            self._counters["skipped_upstream_failed"].inc()
            yield record
            return
        started = time.perf_counter()
        try:
            updated, outcome = self._function(record)
        except Exception as error:  # noqa: BLE001 - one bad image must not fail the run
            self._counters["failed"].inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS, ErrorRecord.for_entry(record.entry, self._step, error)
            )
            if not self._drop_failed:
                yield record
            return
        self._latency.update(int((time.perf_counter() - started) * 1000))
        self._counters[outcome].inc()
        yield updated


class ApplyToEachImage(beam.PTransform):
    """Applies a per-image function as a step, with errors tagged `errors`.

    Args:
        step: the step name, used as the metrics namespace and in error rows.
        function: `record -> (record with result, Outcome)`; may raise.
        drop_failed: drop a failed image from `records` (decode: an undecodable
            file is not an image) instead of passing it on without its result.
        needs_pixels: skip images that were not decoded.
        requires: skip images missing any of these steps' results.
    """

    def __init__(
        self,
        step: str,
        function: ImageFunction,
        drop_failed: bool = False,
        needs_pixels: bool = True,
        requires: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self._do_fn = _ApplyToEachImage(step, function, drop_failed, needs_pixels, requires)

    def expand(self, records):
        return records | beam.ParDo(self._do_fn).with_outputs(ERRORS, main=RECORDS)
