"""The `pipelineoutput` step: keep the run's new results, and merge its rows into the
`images`, `faces`, `candidates`, `clusters` and `errors` Delta tables.

A run merges, never wipes: it updates the columns of the steps it included and
leaves every other step's column as an earlier run left it. Rows of files that left
the version are deleted; a run with face steps deletes the faces no longer found and
updates only its face steps' columns; `errors` rows change only for its steps.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import paths
from transforms.corpus.read import ALIASES, set_paths
from transforms.per_image import ERRORS, RECORDS
from transforms.records import INGEST_STEP, READ_STEP, ErrorRecord, ImageRecord, StepName
from transforms.tables import delta, schemas
from transforms.tables.azure_sink import WriteAzureTables
from transforms.tables.azure_tables import AzureTables
from transforms.tables.result_store import ResultStore, StoreNewResults
from transforms.tasks.base import Step, StepContext
from transforms.tasks.faces.match import CLUSTER_ROWS, FACE_CLUSTERS, GALLERY_STEP
from transforms.tasks.faces.table import (
    CANDIDATES_SCHEMA,
    CLUSTERS_SCHEMA,
    FACES_SCHEMA,
    candidate_rows,
    face_rows,
    face_update_columns,
)

IMAGE_ROWS = "image_rows"
ERROR_ROWS = "error_rows"
FACE_ROWS = "face_rows"


def image_update_columns(
    run_steps: Sequence[str], step_columns: Mapping[str, pa.DataType]
) -> tuple[str, ...]:
    """The `images` columns a run's rows change: the file's own (not the keys) and the
    results of the run's steps; other steps' results stay as earlier runs left them."""
    keys = schemas.TABLES[schemas.IMAGES].keys
    base = [f.name for f in schemas.images_schema({}) if f.name not in keys]
    return (*base, *(step for step in run_steps if step in step_columns))


def image_rows(record: ImageRecord, step_columns: dict[str, pa.DataType]):
    for entry in record.entries:
        Metrics.counter(StepName.PIPELINE_OUTPUT, IMAGE_ROWS).inc()
        yield schemas.image_row(dataclasses.replace(record, entry=entry), step_columns)


def record_face_rows(record: ImageRecord, clusters: dict[str, str]):
    for entry in record.entries:
        rows = face_rows(dataclasses.replace(record, entry=entry), clusters)
        Metrics.counter(StepName.PIPELINE_OUTPUT, FACE_ROWS).inc(len(rows))
        yield from rows


def error_rows(error: ErrorRecord, aliases: dict):
    """The error's row, and one for every other file with the same bytes: a step that
    failed on the content failed for each of them (reading failed for one file only)."""
    rows = [schemas.error_row(error)]
    shared = error.image_sha256 and error.step not in (INGEST_STEP, READ_STEP)
    for alias in aliases.get(error.image_sha256, ()) if shared else ():
        if alias.source_path != error.path:
            rows.append({**rows[0], "path": alias.source_path, "uri": alias.uri})
    Metrics.counter(StepName.PIPELINE_OUTPUT, ERROR_ROWS).inc(len(rows))
    return rows


class _MergeRows(beam.DoFn):
    """Merges every row of one table in one Delta commit, on one worker."""

    def __init__(
        self,
        where: delta.DeltaLocation,
        schema: pa.Schema,
        plan: delta.Merge,
        partition_by: tuple[str, ...],
        metadata: Mapping[str, str],
    ) -> None:
        self._where = where
        self._schema = schema
        self._plan = plan
        self._partition_by = partition_by
        self._metadata = dict(metadata)

    def process(self, keyed):
        _, grouped = keyed
        keys = self._plan.keys
        unique = {tuple(row[k] for k in keys): row for row in grouped["rows"]}
        rows = [unique[key] for key in sorted(unique, key=lambda key: tuple(map(str, key)))]
        delta.merge(
            self._where,
            pa.Table.from_pylist(rows, schema=self._schema),
            self._plan,
            self._partition_by,
            self._metadata,
        )
        yield len(rows)


@dataclasses.dataclass(eq=False)
class MergeIntoTable(beam.PTransform):
    """Merges a PCollection of rows into a Delta table in one commit, even if empty
    (an empty run still deletes what it owns).

    Returns:
        A PCollection with the number of rows merged.
    """

    where: delta.DeltaLocation
    schema: pa.Schema
    plan: delta.Merge
    partition_by: tuple[str, ...]
    metadata: Mapping[str, str]

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, rows):
        keyed = rows | "OneCommit" >> beam.Map(lambda row: (None, row))
        always = rows.pipeline | "EvenIfEmpty" >> beam.Create([(None, None)])
        return (
            {"rows": keyed, "go": always}
            | "Gather" >> beam.CoGroupByKey()
            | "Merge"
            >> beam.ParDo(
                _MergeRows(self.where, self.schema, self.plan, self.partition_by, self.metadata)
            )
        )


@dataclasses.dataclass(eq=False)
class WriteTables(beam.PTransform):
    """Stores the run's new results and merges its rows into the version's tables.

    With `azure_tables`, the same images and faces also go to Azure Table Storage.
    Input is a dict with `records` and `errors`, and `face_clusters` when the run
    clusters faces.

    Args:
        corpus_root: where `metadata/` lives.
        corpus_version: the version whose rows this run writes.
        step_columns: step name -> Arrow type of its result column, every known step.
        run_steps: the steps this run included: only their columns and errors change.
        step_versions: their versions, recorded with each commit.
        fingerprints: stored step -> fingerprint, for the results this run computes.
        store: where results are kept; None keeps none.
        azure_tables: where the Azure copy goes, or None.
        set_paths: the version's set paths (the Azure partitions the run owns).

    Returns:
        A dict of PCollections of the rows merged, by table.
    """

    corpus_root: str
    corpus_version: str
    step_columns: Mapping[str, pa.DataType]
    run_steps: tuple[str, ...] = ()
    step_versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fingerprints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    store: ResultStore | None = None
    azure_tables: AzureTables | None = None
    set_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__init__()
        paths.check_version(self.corpus_version)

    def _metadata(self) -> dict[str, str]:
        return delta.commit_metadata(
            "run",
            corpus_version=self.corpus_version,
            steps=",".join(self.run_steps),
            step_versions=json.dumps(dict(self.step_versions), sort_keys=True),
            fingerprints=json.dumps(dict(self.fingerprints), sort_keys=True),
        )

    def _merge(self, table: str, schema: pa.Schema, **plan) -> MergeIntoTable:
        where = delta.location(self.corpus_root, table)
        spec = schemas.TABLES[table]
        plan = delta.Merge(spec.keys, **plan)
        return MergeIntoTable(where, schema, plan, spec.partition_by, self._metadata())

    def _version_is(self) -> str:
        return f"t.corpus_version = {delta.quote(self.corpus_version)}"

    def _error_steps(self) -> str:
        steps = [INGEST_STEP, READ_STEP, *self.run_steps]
        owned = " OR ".join(f"t.step = {delta.quote(step)}" for step in steps)
        if StepName.FACE_MATCH in self.run_steps:
            owned += f" OR t.step LIKE {delta.quote(GALLERY_STEP + '.%')}"
        return f"{self._version_is()} AND ({owned})"

    def expand(self, outputs):
        step_columns = dict(self.step_columns)
        records = outputs[RECORDS]
        if self.store is not None:
            records = records | "StoreNewResults" >> StoreNewResults(self.store, self.fingerprints)
        image_rows_ = records | "ImageRows" >> beam.FlatMap(image_rows, step_columns)
        run_columns = [step for step in self.run_steps if step in step_columns]
        images = image_rows_ | "MergeImages" >> self._merge(
            schemas.IMAGES,
            schemas.images_schema(step_columns),
            update_columns=image_update_columns(self.run_steps, step_columns),
            delete_unmatched=self._version_is(),
        )
        aliases = _as_dict(outputs, ALIASES, "NoAliases")
        errors = (
            outputs[ERRORS]
            | "ErrorRows" >> beam.FlatMap(error_rows, aliases)
            | "MergeErrors"
            >> self._merge(
                schemas.ERRORS, schemas.ERRORS_SCHEMA, delete_unmatched=self._error_steps()
            )
        )
        written = {schemas.IMAGES: images, schemas.ERRORS: errors}
        rows = {"images": image_rows_}
        face_columns = face_update_columns(self.run_steps)
        if face_columns:
            # The run has every face of the version (face steps need facedetection):
            # faces no longer found go, and only the run's face steps' columns change.
            face_rows_ = self._face_rows(outputs, records)
            written[schemas.FACES] = face_rows_ | "MergeFaces" >> self._merge(
                schemas.FACES,
                FACES_SCHEMA,
                update_columns=face_columns,
                delete_unmatched=self._version_is(),
            )
            rows["faces"] = face_rows_
        if StepName.FACE_MATCH in self.run_steps:
            written.update(self._match_tables(outputs, rows["faces"]))
        if self.azure_tables is not None:
            written["azure"] = rows | "WriteAzureTables" >> WriteAzureTables(
                self.azure_tables,
                self.corpus_root,
                self.corpus_version,
                tuple(run_columns),
                self.set_paths,
                face_columns,
            )
        return written

    def _match_tables(self, outputs, face_rows_) -> dict:
        """The version's ranked candidates and clusters, replaced by this run's."""
        version = self.corpus_version
        candidates = face_rows_ | "CandidateRows" >> beam.FlatMap(candidate_rows)
        clusters = outputs[CLUSTER_ROWS] | "ClusterRows" >> beam.Map(
            lambda row: {"corpus_version": version, **row}
        )
        replace = {"delete_unmatched": self._version_is()}
        return {
            schemas.CANDIDATES: candidates
            | "MergeCandidates" >> self._merge(schemas.CANDIDATES, CANDIDATES_SCHEMA, **replace),
            schemas.CLUSTERS: clusters
            | "MergeClusters" >> self._merge(schemas.CLUSTERS, CLUSTERS_SCHEMA, **replace),
        }

    def _face_rows(self, outputs, records):
        clusters = _as_dict(outputs, FACE_CLUSTERS, "NoClusters")
        return records | "FaceRows" >> beam.FlatMap(record_face_rows, clusters)


def _as_dict(outputs: dict, tag: str, label: str):
    """An optional input as a dict side input, empty where no step produced it."""
    if tag in outputs:
        return beam.pvalue.AsDict(outputs[tag])
    return beam.pvalue.AsDict(outputs[RECORDS].pipeline | label >> beam.Create([]))


def _build(context: StepContext) -> WriteTables:
    azure = context.azure_tables
    return WriteTables(
        corpus_root=context.corpus_root,
        corpus_version=context.corpus_version,
        step_columns=context.step_columns,
        run_steps=context.run_steps,
        step_versions=context.step_versions,
        fingerprints=context.results.fingerprints if context.results else {},
        store=context.result_store,
        azure_tables=azure,
        set_paths=set_paths(context.corpus_root, context.corpus_version) if azure else (),
    )


STEP = Step(
    name=StepName.PIPELINE_OUTPUT,
    version="1",
    build=_build,
    depends_on=(StepName.DECODE,),
    terminal=True,
    needs_pixels=False,
    side_inputs=(ALIASES, FACE_CLUSTERS, CLUSTER_ROWS),
    description="store new results; merge the images, faces, candidates, clusters and "
    "errors tables (always last)",
)
