"""Converts the Parquet tables of an older release into Delta tables, once.

Older releases kept each table as hive-partitioned Parquet shards. Every table found
in that form is read whole, written as a Delta table in its place, and its old folder
is kept beside it as `<table>.parquet-before-delta` until you delete it.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from transforms import paths
from transforms.io import storage
from transforms.tables import delta, schemas

BACKUP_SUFFIX = ".parquet-before-delta"


def _legacy_rows(folder: str) -> pa.Table:
    """Every shard's rows; each shard carries its partition columns."""
    shards = [
        os.path.join(dirpath, name)
        for dirpath, _, names in os.walk(folder)
        for name in sorted(names)
        if name.endswith(".parquet")
    ]
    tables = [pq.read_table(shard) for shard in sorted(shards)]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def migrate_corpus(corpus_root: str) -> list[str]:
    """Converts each legacy table of a local corpus; returns the tables converted.

    Raises:
        ValueError: the corpus is not a local folder.
    """
    converted = []
    for table, spec in schemas.TABLES.items():
        where = delta.location(corpus_root, table)
        backup = where.folder + BACKUP_SUFFIX
        # An earlier migration may have stopped between moving the old files aside and
        # committing the new table: it is taken up from the old files.
        interrupted = storage.is_local(corpus_root) and os.path.isdir(backup)
        if not (interrupted and not delta.exists(where)):
            try:
                delta.check_not_legacy(where)
                continue
            except delta.LegacyTableError:
                pass
            if not storage.is_local(corpus_root):
                raise ValueError(
                    "only local corpora can be migrated in place: copy the corpus to a "
                    "local folder, migrate it there, and copy its metadata/ folder back"
                )
            os.rename(where.folder, backup)
        rows = _legacy_rows(backup)
        if rows.num_rows:
            delta.append(where, rows, spec.partition_by, delta.commit_metadata("migrate"))
        converted.append(paths.join(corpus_root, paths.METADATA_DIR, table))
    return converted
