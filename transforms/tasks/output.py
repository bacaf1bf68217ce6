"""The `pipelineoutput` step: keep the run's new results, and merge its rows into the
`images`, `faces`, `candidates`, `clusters` and `errors` Delta tables.

A run merges, never wipes: it updates the columns of the steps it included and
leaves every other step's column as an earlier run left it. Rows of files that left
the version are deleted; a run with face steps deletes the faces no longer found and
updates only its face steps' columns; `errors` rows change only for its steps.

Each worker merges the rows of the images it processed a shard at a time, so
no process holds a version's rows (Beam's local runner would hold every row that
crosses a shuffle in the driver). What needs the whole run comes after: cluster ids,
the `clusters` and `errors` tables (one commit each), and removing the rows of files
that left the version or could not be read this time.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import paths
from transforms.corpus.read import ALIASES, manifest_rows, set_paths
from transforms.per_image import ERRORS, RECORDS
from transforms.records import INGEST_STEP, READ_STEP, ErrorRecord, ImageRecord, StepName
from transforms.tables import delta, schemas
from transforms.tables.azure_sink import WriteAzureTables
from transforms.tables.azure_tables import AzureTables
from transforms.tables.delta import version_filter
from transforms.tables.duplicates import Grouping, group_count
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
from transforms.tasks.phash import STEP_VERSION as PHASH_VERSION
from transforms.tasks.phash import YES, PhashSettings

# A worker merges its images' rows a shard at a time (about 2,000 files), and at least
# every `COMMIT_IMAGES` files or `COMMIT_SECONDS`. Of workers that merge at once into
# the same files, all but the first retry: `images` merges read only their shard's
# files, but `faces` and `candidates` merges read the version's, so few, large commits
# keep those retries rare.
COMMIT_IMAGES = 5000
COMMIT_SECONDS = 120.0
PACK_ROWS = 200
# Files of a later shard that show an earlier one has arrived whole: more than the
# model batches of every step can hold back.
LATER_SHARD_FILES = 64
# A shard of fewer files waits for the end of the bundle, to be merged with the
# worker's other small shards in one commit: a small version gains little from files
# of one hash range, and every merge costs a fraction of a second.
SMALL_SHARD_FILES = 1000
# Files whose rows one delete removes.
DELETE_BATCH = 1000
# A file that failed one of these has no rows from this run.
NO_RECORD_STEPS = (INGEST_STEP, READ_STEP, StepName.DECODE)

IMAGE_ROWS = "image_rows"
ERROR_ROWS = "error_rows"
FACE_ROWS = "face_rows"
DUPLICATE_ROWS = "duplicate_rows"
DUPLICATE_GROUPS = "duplicate_groups"


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
        yield schemas.image_row(dataclasses.replace(record, entry=entry), step_columns)


def record_face_rows(record: ImageRecord, clusters: dict[str, str]):
    for entry in record.entries:
        yield from face_rows(dataclasses.replace(record, entry=entry), clusters)


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
        if not rows and not self._plan.insert:
            return  # an update of nothing (and perhaps of a table no run created yet)
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
    (an empty run still deletes what it owns); an update-only merge of no rows makes
    no commit.

    Attributes:
        after: a PCollection that must be complete before the commit (e.g. earlier
            commits this one must follow).

    Returns:
        A PCollection with the number of rows merged.
    """

    where: delta.DeltaLocation
    schema: pa.Schema
    plan: delta.Merge
    partition_by: tuple[str, ...]
    metadata: Mapping[str, str]
    after: beam.PCollection | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, rows):
        gathered = {
            "rows": rows | "OneCommit" >> beam.Map(lambda row: (None, row)),
            "go": rows.pipeline | "EvenIfEmpty" >> beam.Create([(None, None)]),
        }
        if self.after is not None:
            gathered["after"] = self.after | "Wait" >> beam.Map(lambda done: (None, done))
        return (
            gathered
            | "Gather" >> beam.CoGroupByKey()
            | "Merge"
            >> beam.ParDo(
                _MergeRows(self.where, self.schema, self.plan, self.partition_by, self.metadata)
            )
        )


def rows_of_files(corpus_version: str, source_paths: Sequence[str], alias: str = "t.") -> str:
    """A predicate: the rows of these files of the version."""
    listed = ", ".join(delta.quote(path) for path in source_paths)
    version = delta.quote(corpus_version)
    return f"{alias}corpus_version = {version} AND {alias}source_path IN ({listed})"


@dataclasses.dataclass(frozen=True)
class FileTables:
    """The tables with a row per file (or per face, or candidate, of a file) that a
    run writes, and how it merges into each."""

    corpus_root: str
    corpus_version: str
    step_columns: Mapping[str, pa.DataType]
    run_steps: tuple[str, ...]
    metadata: Mapping[str, str]

    def names(self) -> tuple[str, ...]:
        faces = (schemas.FACES,) if face_update_columns(self.run_steps) else ()
        match = (schemas.CANDIDATES,) if StepName.FACE_MATCH in self.run_steps else ()
        return (schemas.IMAGES, *faces, *match)

    def schema(self, table: str) -> pa.Schema:
        if table == schemas.IMAGES:
            return schemas.images_schema(dict(self.step_columns))
        return FACES_SCHEMA if table == schemas.FACES else CANDIDATES_SCHEMA

    def merge(self, table: str, rows: pa.Table, source_paths: Sequence[str]) -> None:
        """Merges the rows of these files (each once); their faces and candidates not
        among the rows are deleted (an image keeps every step's column; a file's faces
        are all found again by a run with face steps)."""
        spec = schemas.TABLES[table]
        if table == schemas.IMAGES:
            # A file's bytes never change within a version (ingest refuses that), so
            # the hash joins too: delta-rs then reads only the files whose hash range
            # meets this shard's, not the whole version.
            columns = image_update_columns(self.run_steps, self.step_columns)
            keys = (*spec.keys, "image_sha256")
            plan = delta.Merge(keys, update_columns=columns, prune=True)
        else:
            columns = face_update_columns(self.run_steps) if table == schemas.FACES else None
            scope = rows_of_files(self.corpus_version, source_paths)
            plan = delta.Merge(spec.keys, update_columns=columns, delete_unmatched=scope)
        where = delta.location(self.corpus_root, table)
        delta.merge(where, rows, plan, spec.partition_by, self.metadata)

    def delete(self, table: str, source_paths: Sequence[str]) -> None:
        where = delta.location(self.corpus_root, table)
        for start in range(0, len(source_paths), DELETE_BATCH):
            batch = source_paths[start : start + DELETE_BATCH]
            delta.delete(where, rows_of_files(self.corpus_version, batch, ""), self.metadata)


class _ShardRows:
    """The rows of one shard's records that wait for their commit, as Arrow tables of
    `PACK_ROWS` (a row as a Python dict takes several times the memory)."""

    def __init__(self, tables: FileTables) -> None:
        self.tables = tables
        self.rows: dict[str, list[dict]] = {table: [] for table in tables.names()}
        self.packed: dict[str, list[pa.Table]] = {table: [] for table in tables.names()}
        self.paths: list[str] = []
        self.since = time.monotonic()

    def add(self, table: str, rows: list[dict]) -> None:
        self.rows[table] += rows
        if len(self.rows[table]) >= PACK_ROWS:
            self._pack(table)

    def _pack(self, table: str) -> None:
        rows = self.rows[table]
        self.packed[table].append(pa.Table.from_pylist(rows, self.tables.schema(table)))
        rows.clear()

    @classmethod
    def joined(cls, shards: list[_ShardRows]) -> _ShardRows:
        """The rows of several shards, to be merged in one commit."""
        joined = cls(shards[0].tables)
        for shard in shards:
            for table, packed in shard.packed.items():
                shard._pack(table)
                joined.packed[table] += packed
            joined.paths += shard.paths
        return joined

    def commit(self) -> int:
        for table, packed in self.packed.items():
            self._pack(table)
            self.tables.merge(table, pa.concat_tables(packed), self.paths)
        return len(self.paths)


class _CommitRecords(beam.DoFn):
    """Merges the rows of a worker's records one shard at a time (or `COMMIT_IMAGES`,
    or what `COMMIT_SECONDS` gathered); outputs how many files each commit merged.

    A shard is a range of content hashes: its rows land in files of that range, which
    later merges of other shards need not read. Records of a shard can still arrive
    after the next shard's first ones (they wait in model batches): a shard's rows are
    merged once `LATER_SHARD_FILES` files of a later shard arrived, and any stragglers in a
    commit of their own. Shards under `SMALL_SHARD_FILES` wait for the bundle's end."""

    def __init__(self, tables: FileTables) -> None:
        self._tables = tables

    def setup(self) -> None:
        self._image_rows = Metrics.counter(StepName.PIPELINE_OUTPUT, IMAGE_ROWS)
        self._face_rows = Metrics.counter(StepName.PIPELINE_OUTPUT, FACE_ROWS)
        self._step_columns = dict(self._tables.step_columns)
        self._shards: dict[int | None, _ShardRows] = {}

    def process(self, record: ImageRecord):
        shard = self._shards.setdefault(record.shard, _ShardRows(self._tables))
        shard.add(schemas.IMAGES, list(image_rows(record, self._step_columns)))
        self._image_rows.inc(len(record.entries))
        if schemas.FACES in shard.rows:
            faces = list(record_face_rows(record, {}))  # clusters come once all are known
            shard.add(schemas.FACES, faces)
            self._face_rows.inc(len(faces))
            if schemas.CANDIDATES in shard.rows:
                shard.add(schemas.CANDIDATES, [c for face in faces for c in candidate_rows(face)])
        shard.paths += (entry.source_path for entry in record.entries)
        yield from self._commit_ready(record.shard)

    def _commit_ready(self, newest: int | None):
        settled = len(self._shards[newest].paths) >= LATER_SHARD_FILES
        for key, shard in list(self._shards.items()):
            full = len(shard.paths) >= COMMIT_IMAGES
            overdue = time.monotonic() - shard.since > COMMIT_SECONDS
            whole = key != newest and settled and len(shard.paths) >= SMALL_SHARD_FILES
            if full or overdue or whole:
                del self._shards[key]
                yield shard.commit()

    def finish_bundle(self):
        if self._shards:
            rest = _ShardRows.joined(list(self._shards.values()))
            self._shards = {}
            yield beam.transforms.window.GlobalWindows.windowed_value(rest.commit())


class _RemoveStaleRows(beam.DoFn):
    """Deletes the rows of files that left the version, or that this run could not
    read or decode; runs once, after every commit of the run's rows."""

    def __init__(self, tables: FileTables) -> None:
        self._tables = tables

    def process(self, keyed):
        _, grouped = keyed
        tables = self._tables
        failed = {path for path in grouped["failed"] if path}
        listed = manifest_rows(tables.corpus_root, tables.corpus_version, ("source_path",))
        in_version = set(listed.column(0).to_pylist()) if listed.num_rows else set()
        for table in tables.names():
            where = delta.location(tables.corpus_root, table)
            present = delta.read(where, ("source_path",), version_filter(tables.corpus_version))
            written = set(present.column(0).to_pylist()) if present.num_rows else set()
            stale = sorted((written - in_version) | (written & failed))
            tables.delete(table, stale)
            yield table, len(stale)


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
        grouping: how near-duplicates are grouped, when the run hashes images.

    Returns:
        A dict of PCollections: files merged per commit (`images`), rows merged
        (`errors`, `clusters`, `cluster_ids`), (table, rows deleted) of the stale
        rows (`stale`), and the Azure tables' partitions written (`azure`).
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
    grouping: Grouping | None = None

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

    def _file_tables(self) -> FileTables:
        return FileTables(
            self.corpus_root,
            self.corpus_version,
            self.step_columns,
            self.run_steps,
            self._metadata(),
        )

    def expand(self, outputs):
        records = outputs[RECORDS]
        if self.store is not None:
            records = records | "StoreNewResults" >> StoreNewResults(self.store, self.fingerprints)
        file_tables = self._file_tables()
        commits = records | "CommitRows" >> beam.ParDo(_CommitRecords(file_tables))
        aliases = _as_dict(outputs, ALIASES, "NoAliases")
        errors = outputs[ERRORS] | "ErrorRows" >> beam.FlatMap(error_rows, aliases)
        written = {
            schemas.IMAGES: commits,
            schemas.ERRORS: errors
            | "MergeErrors"
            >> self._merge(
                schemas.ERRORS, schemas.ERRORS_SCHEMA, delete_unmatched=self._error_steps()
            ),
        }
        # Every file of the failed content: an error row per file with those bytes.
        failed = errors | "NoRows" >> beam.FlatMap(
            lambda row: [(None, row["path"])] if row["step"] in NO_RECORD_STEPS else []
        )
        written["stale"] = (
            {
                "failed": failed,
                "after": commits | "Committed" >> beam.Map(lambda count: (None, count)),
                "go": records.pipeline | "Once" >> beam.Create([(None, None)]),
            }
            | "AfterCommits" >> beam.CoGroupByKey()
            | "RemoveStaleRows" >> beam.ParDo(_RemoveStaleRows(file_tables))
        )
        if self.grouping is not None:
            # Once every row is in: a departed file leaves its group too.
            written[schemas.DUPLICATES] = (
                written["stale"]
                | "AllCommitted" >> beam.combiners.Count.Globally()
                | "GroupNearDuplicates"
                >> beam.Map(
                    _group_near_duplicates, self.grouping, self.corpus_root, self._metadata()
                )
            )
        if StepName.FACE_MATCH in self.run_steps:
            # After the stale rows went: both rewrite `faces`, and would race.
            written.update(self._match_tables(outputs, written["stale"]))
        if self.azure_tables is not None:
            written["azure"] = self._azure_rows(outputs, records) | "WriteAzureTables" >> (
                WriteAzureTables(
                    self.azure_tables,
                    self.corpus_root,
                    self.corpus_version,
                    tuple(step for step in self.run_steps if step in self.step_columns),
                    self.set_paths,
                    face_update_columns(self.run_steps),
                )
            )
        return written

    def _match_tables(self, outputs, after) -> dict:
        """The faces' cluster ids, once every face is in the table (`after` is done; a
        reader sees none until then), and the version's clusters, replaced by this
        run's."""
        version = self.corpus_version
        cluster_ids = outputs[FACE_CLUSTERS] | "ClusterIds" >> beam.MapTuple(
            lambda face_id, cluster_id: {
                "corpus_version": version,
                "face_id": face_id,
                "cluster_id": cluster_id,
            }
        )
        clusters = outputs[CLUSTER_ROWS] | "ClusterRows" >> beam.Map(
            lambda row: {"corpus_version": version, **row}
        )
        spec = schemas.TABLES[schemas.FACES]
        set_cluster = delta.Merge(
            ("corpus_version", "face_id"), update_columns=("cluster_id",), insert=False
        )
        return {
            "cluster_ids": cluster_ids
            | "SetClusterIds"
            >> MergeIntoTable(
                delta.location(self.corpus_root, schemas.FACES),
                pa.schema(
                    [FACES_SCHEMA.field(name) for name in set_cluster.keys + ("cluster_id",)]
                ),
                set_cluster,
                spec.partition_by,
                self._metadata(),
                after=after,
            ),
            schemas.CLUSTERS: clusters
            | "MergeClusters"
            >> self._merge(schemas.CLUSTERS, CLUSTERS_SCHEMA, delete_unmatched=self._version_is()),
        }

    def _azure_rows(self, outputs, records) -> dict:
        """The run's image rows, and face rows when it has face steps, for Azure."""
        step_columns = dict(self.step_columns)
        rows = {"images": records | "ImageRows" >> beam.FlatMap(image_rows, step_columns)}
        if face_update_columns(self.run_steps):
            clusters = _as_dict(outputs, FACE_CLUSTERS, "NoClusters")
            rows["faces"] = records | "FaceRows" >> beam.FlatMap(record_face_rows, clusters)
        return rows


def _group_near_duplicates(
    _, grouping: Grouping, corpus_root: str, metadata: Mapping[str, str]
) -> int:
    """Regroups the corpus's near-duplicates; returns the table's rows."""
    rows = grouping.regroup(corpus_root, metadata)
    Metrics.counter(StepName.PIPELINE_OUTPUT, DUPLICATE_ROWS).inc(len(rows))
    Metrics.counter(StepName.PIPELINE_OUTPUT, DUPLICATE_GROUPS).inc(group_count(rows))
    return len(rows)


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
        grouping=grouping_of(context),
    )


def grouping_of(context: StepContext) -> Grouping | None:
    """How the run groups near-duplicates: with its own settings when it hashes
    images; else as the table was last grouped, since rows of files that left go
    from `images`; None when there is nothing to group."""
    if StepName.PHASH not in context.run_steps:
        return Grouping.stored(context.corpus_root)
    settings = context.settings_for(PhashSettings)
    return Grouping(settings.max_distance, settings.mirrored == YES, PHASH_VERSION)


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
