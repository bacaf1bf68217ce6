"""Reading and replacing Parquet table partitions on any Beam filesystem.

Every table is a hive-partitioned dataset under `<root>/metadata/<table>/`. A writer
owns whole partitions: it writes its shard files, then deletes any other shard file
left in the partition by an earlier run. Re-running therefore replaces rows instead
of appending them, and shard names are pure functions of the shard index and count.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from transforms import paths, storage

SHARD_PATTERN = "part-*.parquet"
# Row groups bound a writer's memory however large a shard grows.
_ROW_GROUP_ROWS = 10_000


def shard_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.parquet"


def write_rows(handle: BinaryIO, rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> int:
    """Streams `rows` into one Parquet file; returns the number of rows written."""
    written = 0
    with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        batch: list[Mapping[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == _ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written += len(batch)
                batch = []
        if batch or written == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            written += len(batch)
    return written


def write_shard(
    partition: str, index: int, count: int, rows: Iterable[Mapping[str, Any]], schema: pa.Schema
) -> str:
    """Atomically writes one shard file of a partition; returns its path."""
    uri = paths.join(partition, shard_name(index, count))
    storage.write_atomically(uri, lambda handle: write_rows(handle, rows, schema))
    return uri


def prune_partition(partition: str, keep: Iterable[str]) -> list[str]:
    """Deletes shard files of `partition` not in `keep`; returns what was deleted."""
    keep_names = {uri.rsplit("/", 1)[-1] for uri in keep}
    stale = [
        uri
        for uri in storage.list_files(partition, SHARD_PATTERN)
        if uri.rsplit("/", 1)[-1] not in keep_names
    ]
    storage.delete(stale)
    return stale


def replace_partition(partition: str, rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> str:
    """Replaces a small partition with a single shard holding `rows`."""
    uri = write_shard(partition, 0, 1, rows, schema)
    prune_partition(partition, [uri])
    return uri


def read_partition(partition: str, schema: pa.Schema | None = None) -> list[dict[str, Any]]:
    """All rows of a partition, or [] if it does not exist."""
    rows: list[dict[str, Any]] = []
    for uri in storage.list_files(partition, SHARD_PATTERN):
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)), schema=schema)
        rows.extend(table.to_pylist())
    return rows
