"""The result store: every step result ever computed, keyed by content and configuration.

A result is keyed by (image SHA-256, step, fingerprint), where the fingerprint hashes
the step's version, the parameters that change its result (model, backend, options)
and the fingerprints of the steps it builds on. A run looks up the results its
images already have, whatever version, set or earlier run they came from, and
computes only the rest; the same bytes in two folders are computed once.

Workers append what they compute every few seconds, in Delta commits that never
conflict, so a run killed half-way keeps what it had computed. A result computed
twice at once (two runs racing) is appended twice; readers keep the newest.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
from apache_beam.metrics import Metrics

from transforms.io.azure_access import AzureAccess
from transforms.records import ImageRecord
from transforms.tables import delta, schemas

# Workers commit what they computed at least this often, and at the end of a bundle.
FLUSH_SECONDS = 10.0
FLUSH_ROWS = 2000
NAMESPACE = "results"


def fingerprint(
    step: str, step_version: str, parameters: Mapping[str, Any], upstream: Iterable[str] = ()
) -> str:
    """A pure function of what makes a step's result what it is."""
    described = json.dumps(
        {
            "step": step,
            "version": step_version,
            "parameters": dict(parameters),
            "upstream": sorted(upstream),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(described.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in a result")


def encode(result: Any) -> str:
    return json.dumps(result, default=_plain, separators=(",", ":"))


def decode(text: str) -> Any:
    return json.loads(text)


@dataclasses.dataclass(frozen=True)
class ResultPlan:
    """Which results a run can reuse, and which steps an image must still run.

    Attributes:
        order: every step of the run, in order.
        fingerprints: stored step -> its fingerprint in this run.
        dependencies: step -> the steps it needs.
        needs_pixels: steps that read pixels or what an earlier step left in memory.
        hands_on: steps whose in-memory output later steps read (decode's pixels,
            facecrop's chips): one of those that runs makes them run too.
        recompute: steps computed even when a result is stored.
    """

    order: tuple[str, ...]
    fingerprints: Mapping[str, str]
    dependencies: Mapping[str, tuple[str, ...]]
    needs_pixels: frozenset[str]
    hands_on: frozenset[str]
    recompute: frozenset[str] = frozenset()

    def pending(self, stored: Iterable[str]) -> frozenset[str]:
        """The steps an image runs, given the steps it has a stored result for."""
        stored = set(stored) - self.recompute
        pending = {step for step in self.order if step not in stored}
        for step in reversed(self.order):
            if step in pending and step in self.needs_pixels:
                pending.update(d for d in self.dependencies.get(step, ()) if d in self.hands_on)
        return frozenset(pending)

    def wanted(self) -> pads.Expression:
        """The store's rows this run can use: its steps at their fingerprints (but not
        the steps it computes again)."""
        expression = None
        for step, step_fingerprint in self.fingerprints.items():
            if step in self.recompute:
                continue
            one = (pads.field("step") == step) & (pads.field("fingerprint") == step_fingerprint)
            expression = one if expression is None else expression | one
        return expression if expression is not None else pads.scalar(False)


@dataclasses.dataclass(frozen=True)
class ResultStore:
    """The `results` table of one corpus."""

    corpus_root: str
    access: AzureAccess | None = None

    @property
    def location(self) -> delta.DeltaLocation:
        return delta.location(self.corpus_root, schemas.RESULTS, self.access)

    def append(self, rows: list[dict[str, Any]], corpus_version: str) -> None:
        delta.append(
            self.location,
            pa.Table.from_pylist(rows, schema=schemas.RESULTS_SCHEMA),
            schemas.TABLES[schemas.RESULTS].partition_by,
            delta.commit_metadata("run", corpus_version=corpus_version, stored="results"),
        )

    def stored_steps(self, plan: ResultPlan, hashes: Iterable[str]) -> dict[str, set[str]]:
        """image SHA-256 -> the run's steps with a stored result for it (keys only)."""
        wanted = plan.wanted() & pads.field("image_sha256").isin(list(hashes))
        table = delta.read(self.location, ("image_sha256", "step"), wanted)
        found: dict[str, set[str]] = {}
        if table.num_rows:
            for sha, step in zip(*(c.to_pylist() for c in table.columns), strict=True):
                found.setdefault(sha, set()).add(step)
        return found

    def stored_results(self, plan: ResultPlan, image_sha256: str) -> list[tuple[str, Any, str]]:
        """(step, computed_at, result JSON) of every stored result the plan can use
        for one image."""
        wanted = plan.wanted() & (pads.field("image_sha256") == image_sha256)
        table = delta.read(self.location, STORED_COLUMNS[1:], wanted)
        return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


# What a run reads of each stored result it can reuse.
STORED_COLUMNS = ("image_sha256", "step", "computed_at", "result")


def result_row(
    image_sha256: str,
    step: str,
    step_version: str,
    step_fingerprint: str,
    result: Any,
    corpus_version: str,
) -> dict[str, Any]:
    """A row of the `results` table, computed now."""
    return {
        "image_sha256": image_sha256,
        "step": step,
        "step_version": step_version,
        "fingerprint": step_fingerprint,
        "result": encode(result),
        "computed_at": datetime.datetime.now(datetime.UTC),
        "corpus_version": corpus_version,
    }


def _computed_row(record: ImageRecord, step: str, step_fingerprint: str) -> dict[str, Any]:
    result = record.results[step]
    entry = record.entry
    version = str(result.get("step_version", "")) if isinstance(result, dict) else ""
    return result_row(
        entry.image_sha256, step, version, step_fingerprint, result, entry.corpus_version
    )


class _StoreNewResults(beam.DoFn):
    """Appends the results an image computed, a batch every few seconds; passes it on."""

    def __init__(self, store: ResultStore, fingerprints: Mapping[str, str]) -> None:
        self._store = store
        self._fingerprints = dict(fingerprints)

    def setup(self) -> None:
        self._stored = Metrics.counter(NAMESPACE, "stored")
        self._rows: list[dict[str, Any]] = []
        self._flushed = time.monotonic()

    def process(self, record: ImageRecord):
        pending = record.pending if record.pending is not None else frozenset(self._fingerprints)
        for step in sorted(pending - record.reused):  # a result is stored once
            if step in self._fingerprints and record.results.get(step) is not None:
                self._rows.append(_computed_row(record, step, self._fingerprints[step]))
        if len(self._rows) >= FLUSH_ROWS or time.monotonic() - self._flushed > FLUSH_SECONDS:
            self._flush()
        yield record

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        self._flushed = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        self._store.append(rows, rows[0]["corpus_version"])
        self._stored.inc(len(rows))


@dataclasses.dataclass(eq=False)
class StoreNewResults(beam.PTransform):
    """Keeps every result the run computed, as it goes; records pass on unchanged."""

    store: ResultStore
    fingerprints: Mapping[str, str]

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, records):
        return records | beam.ParDo(_StoreNewResults(self.store, self.fingerprints))
