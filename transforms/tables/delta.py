"""Delta Lake tables under `<root>/metadata/<table>`, through delta-rs (no JVM).

Every write is one Delta transaction: readers see a table before or after it, never
half of it. Writers that race are serialised by Delta's optimistic concurrency; a
writer whose commit lost the race re-reads the table and tries again, so concurrent
ingests and runs lose no rows.

delta-rs runs a tokio runtime that panics in a forked child: worker processes must
be spawned, never forked after a table was opened (Beam's local workers are spawned).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from apache_beam.io.filesystem import BeamIOError

from transforms import paths
from transforms.io import storage
from transforms.io.azure_access import AzureAccess, account_access, is_azfs, split_azfs

LOGGER = logging.getLogger(__name__)

# Commits that lose a race are retried this many times, with jittered backoff.
COMMIT_TRIES = 12
# Prefix of the commit metadata keys (`DeltaTable.history()` is the audit trail).
COMMIT_KEY = "imaginem"
# A data file no commit took is an orphan once it is this old: no writer takes a day
# between writing a file and committing it.
ORPHAN_AGE_SECONDS = 24 * 3600
# Checkpoints forget the removal of a file after Delta's default retention of a week,
# though older versions that read it stay in the log: a file this old may be one of
# them, so it is left to VACUUM, and an orphan is removed within its first week.
REMOVED_FILE_RETENTION_SECONDS = 7 * 24 * 3600


class LegacyTableError(RuntimeError):
    """A metadata folder still holds the Parquet tables of an older release."""


@dataclasses.dataclass(frozen=True)
class DeltaLocation:
    """Where one table lives and how delta-rs reaches it.

    Holds no secret: Azure credentials are read from the environment (or Azure AD)
    each time the table is opened, on whichever machine opens it.

    Attributes:
        uri: the table's URI for delta-rs (a local path or `abfs://container/path`).
        folder: the same folder as a Beam filesystem path, for messages.
        access: the Azure account, or None for a local table.
    """

    uri: str
    folder: str
    access: AzureAccess | None = None

    def storage_options(self) -> dict[str, str] | None:
        return self.access.delta_storage_options() if self.access else None


def location(corpus_root: str, table: str, access: AzureAccess | None = None) -> DeltaLocation:
    """The Delta table `table` of a corpus (local folder or `azfs://` root).

    Raises:
        ValueError: a root on a store delta-rs is not set up for here.
    """
    folder = paths.metadata_dir(corpus_root, table)
    if storage.is_local(corpus_root):
        return DeltaLocation(folder, folder)
    if is_azfs(corpus_root):
        account, container, prefix = split_azfs(folder)
        access = access or account_access(account)
        return DeltaLocation(f"abfs://{container}/{prefix}", folder, access)
    raise ValueError(
        f"metadata tables on {corpus_root.split('://')[0]}:// are not supported yet: use a "
        "local folder or an azfs:// root"
    )


def _open(where: DeltaLocation, version: int | None = None):
    from deltalake import DeltaTable

    return DeltaTable(where.uri, version=version, storage_options=where.storage_options())


def exists(where: DeltaLocation) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(where.uri, storage_options=where.storage_options())


def check_not_legacy(where: DeltaLocation) -> None:
    """Refuses a folder of Parquet shards written before the tables were Delta tables.

    Raises:
        LegacyTableError: with the command that migrates the corpus.
    """
    if exists(where):
        return
    if any(
        storage.list_files(where.folder, pattern)
        for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet")  # hive partition folders
    ):
        raise LegacyTableError(
            f"{where.folder} holds Parquet files of an older release, not a Delta table: "
            "run `imaginem migrate --corpus ROOT` once to convert the corpus's tables"
        )


def commit_metadata(command: str, **details: str) -> dict[str, str]:
    """What a commit records in the table history: the command and its context."""
    return {f"{COMMIT_KEY}.command": command} | {
        f"{COMMIT_KEY}.{name}": value for name, value in details.items() if value is not None
    }


def _lost_a_race(error: Exception) -> bool:
    """Another writer committed the version this one meant to write."""
    from deltalake.exceptions import CommitFailedError, DeltaError

    if isinstance(error, CommitFailedError):
        return True
    return isinstance(error, DeltaError) and "already exists" in str(error)


def _with_retries(what: str, where: DeltaLocation, attempt):
    """Runs one transaction, again from a fresh snapshot if another writer got there first."""
    for tried in range(1, COMMIT_TRIES + 1):
        try:
            return attempt()
        except Exception as error:
            if tried == COMMIT_TRIES or not _lost_a_race(error):
                raise
            LOGGER.debug("%s of %s lost a race with another writer; retrying", what, where.folder)
            time.sleep(min(2.0, 0.05 * 2**tried) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


def _properties(metadata: Mapping[str, str] | None):
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata=dict(metadata or {}))


def _delta_type(data_type: pa.DataType) -> pa.DataType:
    """The type as Delta stores it: list items are named `element`, not pyarrow's `item`."""
    if (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)  # older releases' embeddings
    ):
        item = data_type.value_field
        return pa.list_(pa.field("element", _delta_type(item.type), item.nullable))
    if pa.types.is_struct(data_type):
        return pa.struct([field.with_type(_delta_type(field.type)) for field in data_type])
    return data_type


def delta_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.with_type(_delta_type(field.type)) for field in schema])


def as_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def append(
    where: DeltaLocation,
    data: pa.Table,
    partition_by: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Appends rows in one commit (creating the table if needed); never conflicts."""
    from deltalake import write_deltalake

    data = data.cast(delta_schema(data.schema))

    def attempt():
        write_deltalake(
            where.uri,
            data,
            mode="append",
            partition_by=list(partition_by) or None,
            schema_mode="merge",
            storage_options=where.storage_options(),
            commit_properties=_properties(metadata),
        )

    _with_retries("append", where, attempt)


def ensure(where: DeltaLocation, schema: pa.Schema, partition_by: Sequence[str] = ()) -> None:
    """Creates an empty table unless one exists (racing creators are both fine)."""
    if not exists(where):
        append(where, schema.empty_table(), partition_by, commit_metadata("create"))


@dataclasses.dataclass(frozen=True)
class Merge:
    """One MERGE: rows keyed by `keys` are inserted or updated, others kept.

    Attributes:
        keys: columns that identify a row.
        update_columns: columns a matched row takes from the source; None for all.
        delete_unmatched: a SQL predicate on the target (alias `t`): its rows that
            no source row matched are deleted (e.g. "t.corpus_version = 'v1'").
        insert: insert source rows that match none (False: only update).
        prune: read the (small) source first, so that the target's files whose
            statistics rule out every key range of the source are not read. Not
            with `delete_unmatched`, which must see every row of the target.
    """

    keys: tuple[str, ...]
    update_columns: tuple[str, ...] | None = None
    delete_unmatched: str | None = None
    insert: bool = True
    prune: bool = False


def merge(
    where: DeltaLocation,
    data: pa.Table,
    plan: Merge,
    partition_by: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Applies `plan` with `data` as the source, in one commit; returns delta-rs's metrics."""
    data = data.cast(delta_schema(data.schema))
    ensure(where, data.schema, partition_by)
    predicate = " AND ".join(f"t.{key} = s.{key}" for key in plan.keys)

    def attempt():
        merger = _open(where).merge(
            data,
            predicate,
            source_alias="s",
            target_alias="t",
            merge_schema=True,
            streamed_exec=not plan.prune,
            commit_properties=_properties(metadata),
        )
        if plan.update_columns is None:
            merger = merger.when_matched_update_all()
        elif plan.update_columns:
            merger = merger.when_matched_update({c: f"s.{c}" for c in plan.update_columns})
        if plan.insert:
            merger = merger.when_not_matched_insert_all()
        if plan.delete_unmatched:
            merger = merger.when_not_matched_by_source_delete(plan.delete_unmatched)
        return merger.execute()

    return _with_retries("merge", where, attempt)


def delete(where: DeltaLocation, predicate: str, metadata: Mapping[str, str] | None = None):
    if exists(where):
        _with_retries(
            "delete",
            where,
            lambda: _open(where).delete(predicate, commit_properties=_properties(metadata)),
        )


def remove_orphans(where: DeltaLocation, older_than_seconds: float = ORPHAN_AGE_SECONDS) -> int:
    """Deletes the table's data files that no commit ever took; returns how many.

    A writer killed mid-write, or one whose commit lost a race and was retried, leaves
    its Parquet files behind, never referenced. Files younger than `older_than_seconds`
    may belong to a writer still at work, and files a commit removed stay for reads of
    earlier versions: neither is touched (see REMOVED_FILE_RETENTION_SECONDS).
    """
    if not exists(where):
        return 0
    table = _open(where)
    sweep = functools.partial(
        table.vacuum, retention_hours=0, dry_run=True, enforce_retention_duration=False
    )
    # `full` lists untracked files as well as removed ones; only the untracked go.
    untracked = sorted(set(sweep(full=True)) - set(sweep()))
    removed = 0
    for uri in (f"{where.folder}/{relative}" for relative in untracked):
        age = storage.seconds_since_modified(uri)
        if age is not None and older_than_seconds <= age < REMOVED_FILE_RETENTION_SECONDS:
            with contextlib.suppress(FileNotFoundError, BeamIOError):  # another run's sweep
                storage.delete([uri])
                removed += 1
    return removed


def _dataset(where: DeltaLocation, version: int | None = None) -> pads.Dataset:
    """A snapshot as a pyarrow dataset; a local table's files opened by pyarrow itself.

    Over delta-rs's (Python) filesystem, pyarrow's CPU-pool thread may drop the last
    reference to a Python file after the scan returned; that takes the GIL, and at
    interpreter exit the thread is ended inside a C++ destructor: std::terminate.
    Remote tables keep delta-rs's filesystem, which knows their storage options.
    """
    table = _open(where, version)
    if where.access is None:
        root = pafs.SubTreeFileSystem(os.path.abspath(where.uri), pafs.LocalFileSystem())
        return table.to_pyarrow_dataset(filesystem=root)
    return table.to_pyarrow_dataset()


def _scan(dataset: pads.Dataset, columns: Sequence[str] | None, filter) -> pa.Table:
    """Scans without pre-buffering or scan threads.

    Over delta-rs's Python filesystem (remote tables), pyarrow's pre-buffered reads
    leave futures that free Python buffers on an I/O thread during interpreter exit,
    which aborts the process (std::terminate) once Beam is imported.
    """
    return dataset.to_table(
        columns=list(columns) if columns else None,
        filter=filter,
        use_threads=False,
        fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=False),
    )


def read(
    where: DeltaLocation,
    columns: Sequence[str] | None = None,
    filter: pads.Expression | None = None,
    version: int | None = None,
) -> pa.Table:
    """Rows of the table's current (or given) snapshot; an empty table if it does not exist."""
    if not exists(where):
        return pa.table({})
    if where.access is not None and filter is None and version is None:
        # Whole columns of a remote table: delta-rs's engine, no Python filesystem.
        selected = ", ".join(f'"{name}"' for name in columns) if columns else "*"
        return query(where, f"SELECT {selected} FROM t")
    return _scan(_dataset(where, version), columns, filter)


def query(where: DeltaLocation, sql: str) -> pa.Table:
    """Runs `sql` over the table, named `t`, in delta-rs's own engine: only the
    columns it names are read, and no Python filesystem is involved (see `_dataset`)."""
    from deltalake import QueryBuilder

    return pa.table(QueryBuilder().register("t", _open(where)).execute(sql).read_all())


def column_names(where: DeltaLocation) -> list[str]:
    """The table's columns; none if it does not exist."""
    return list(_open(where).schema().to_arrow().names) if exists(where) else []


def read_rows(where: DeltaLocation, filter: pads.Expression | None = None) -> list[dict[str, Any]]:
    return read(where, filter=filter).to_pylist()


def snapshot(where: DeltaLocation) -> tuple[int, int] | None:
    """(version, number of data files) of the current snapshot, or None if no table."""
    if not exists(where):
        return None
    table = _open(where)
    return table.version(), len(table.file_uris())


def history(where: DeltaLocation) -> list[dict[str, Any]]:
    """The table's commits, newest first: the audit trail."""
    return _open(where).history() if exists(where) else []


def quote(value: str) -> str:
    """A SQL string literal for a Delta predicate."""
    return "'" + value.replace("'", "''") + "'"


def version_filter(corpus_version: str) -> pads.Expression:
    """Rows of one corpus version (its partition)."""
    return pads.field("corpus_version") == corpus_version
