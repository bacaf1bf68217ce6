"""Applying a function to each image, with the per-image error contract.

A step is a composite `PTransform` from `PCollection[ImageRecord]` to outputs tagged
`records` and `errors`. A step that fails on one image emits an `ErrorRecord` for it
and passes the record on without its result, so one bad image never stops the run
and never disappears from the tables.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import progress
from transforms.records import ErrorRecord, ImageRecord

RECORDS = "records"
ERRORS = "errors"


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
            name: progress.counter(self._step, name)
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
