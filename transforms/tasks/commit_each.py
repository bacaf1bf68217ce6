"""The sink of `imaginem watch`: each image's rows are committed as soon as it is done.

A batch run merges a version's rows a shard at a time and cleans up after its last
commit; a watch never ends, so its records and errors are merged into the tables at
the end of every bundle (on the local runner, what one poll found) and at least every
`COMMIT_SECONDS`. Rows are
merged by key: nothing is deleted, and only the columns of the watch's steps change.
A file that was never ingested (copied in by another tool) gets its manifest row,
so a later batch run of the version keeps it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import apache_beam as beam
import pyarrow as pa

from transforms import progress
from transforms.corpus.arrivals import WATCH, arrived_entry
from transforms.records import READ_STEP, ErrorRecord, ImageRecord, StepName
from transforms.tables import delta, schemas
from transforms.tasks.faces.table import FACES_SCHEMA, face_update_columns
from transforms.tasks.output import (
    error_rows,
    image_rows,
    image_update_columns,
    record_face_rows,
)

COMMIT_SECONDS = 2.0
COMMITTED = "committed"


@dataclasses.dataclass(frozen=True)
class CommitSettings:
    """Where the rows go and which columns the watch's steps own."""

    corpus_root: str
    corpus_version: str
    step_columns: Mapping[str, pa.DataType]
    run_steps: tuple[str, ...]

    def merges(self) -> dict[str, tuple[pa.Schema, tuple[str, ...]]]:
        """table -> (schema, the columns an existing row takes)."""
        # A watch never clusters: the cluster ids a batch run set stay.
        faces = tuple(c for c in face_update_columns(self.run_steps) if c != "cluster_id")
        return {
            schemas.MANIFEST: (schemas.MANIFEST_SCHEMA, ()),  # never changes an ingested row
            schemas.IMAGES: (
                schemas.images_schema(self.step_columns),
                image_update_columns(self.run_steps, self.step_columns),
            ),
            schemas.FACES: (FACES_SCHEMA, faces),
            schemas.ERRORS: (schemas.ERRORS_SCHEMA, tuple(schemas.ERRORS_SCHEMA.names)),
        }


class _CommitEach(beam.DoFn):
    """Buffers the rows of records and errors; merges them at each bundle's end."""

    def __init__(self, settings: CommitSettings) -> None:
        self._settings = settings

    def setup(self) -> None:
        self._merges = self._settings.merges()
        self._committed = progress.counter(WATCH, COMMITTED)
        self._rows: dict[str, list[dict]] = {table: [] for table in self._merges}
        self._files = 0
        self._since = time.monotonic()

    def process(self, element):
        settings = self._settings
        if isinstance(element, ImageRecord):
            self._rows[schemas.IMAGES] += image_rows(element, dict(settings.step_columns))
            if self._merges[schemas.FACES][1]:
                self._rows[schemas.FACES] += record_face_rows(element, {})
            entries = element.entries
            self._files += 1
        else:
            self._rows[schemas.ERRORS] += error_rows(element, {})
            entries = _entries_of(settings, element)
            # A file that failed a later step also has its image's rows, counted there.
            self._files += element.step in (READ_STEP, StepName.DECODE)
        self._rows[schemas.MANIFEST] += [schemas.manifest_row(entry) for entry in entries]
        if time.monotonic() - self._since > COMMIT_SECONDS:
            self._commit()

    def finish_bundle(self) -> None:
        self._commit()

    def _commit(self) -> None:
        self._since = time.monotonic()
        settings = self._settings
        metadata = delta.commit_metadata(
            "watch", corpus_version=settings.corpus_version, steps=",".join(settings.run_steps)
        )
        for table, rows in self._rows.items():
            if not rows:
                continue
            schema, update_columns = self._merges[table]
            spec = schemas.TABLES[table]
            keyed = {tuple(row[key] for key in spec.keys): row for row in rows}
            delta.merge(
                delta.location(settings.corpus_root, table),
                pa.Table.from_pylist(list(keyed.values()), schema=schema),
                delta.Merge(spec.keys, update_columns=update_columns),
                spec.partition_by,
                metadata,
            )
            rows.clear()
        # Counted once every table has them: a reader sees the file's rows by now.
        self._committed.inc(self._files)
        self._files = 0
        progress.flush()


def _entries_of(settings: CommitSettings, error: ErrorRecord):
    """The manifest entry of a file that failed, if its bytes were read."""
    entry = arrived_entry(settings.corpus_root, settings.corpus_version, error.uri)
    if entry is None or not error.image_sha256:
        return ()
    return (dataclasses.replace(entry, image_sha256=error.image_sha256),)


@dataclasses.dataclass(eq=False)
class CommitEach(beam.PTransform):
    """Merges the rows of each record or error into the tables soon after it arrives.

    Apply it to each PCollection of records or errors on its own: on the local runner
    a Flatten of collections made in different stages holds its elements back until
    the pipeline ends.
    """

    settings: CommitSettings

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, records_or_errors):
        return records_or_errors | "Commit" >> beam.ParDo(_CommitEach(self.settings))
