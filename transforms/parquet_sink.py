"""`WriteTablePartition`: replace one Parquet partition from a PCollection of rows.

Rows go to a shard chosen by hashing their key, so the same row always lands in
the same shard file and a re-run rewrites identical files. Once every shard is
written, shard files of the partition that this run did not write are deleted:
the partition then holds exactly this run's rows, never an earlier run's as well.
A run with no rows leaves one empty shard, so the table stays readable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa

from transforms import tables

ROWS_PER_SHARD = 100_000

Row = Mapping[str, Any]


def shard_count(expected_rows: int) -> int:
    return max(1, math.ceil(expected_rows / ROWS_PER_SHARD))


def shard_of(key: str, shards: int) -> int:
    """A stable shard index (Python's `hash` differs between processes)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % shards


class _WriteShard(beam.DoFn):
    def __init__(self, partition: str, shards: int, schema: pa.Schema, key) -> None:
        self._partition = partition
        self._shards = shards
        self._schema = schema
        self._key = key

    def process(self, shard_and_rows):
        index, rows = shard_and_rows
        ordered = sorted(rows, key=self._key)
        yield tables.write_shard(self._partition, index, self._shards, ordered, self._schema)


def _finish_partition(partition: str, written: list[str], schema: pa.Schema):
    """Deletes stale shards; an empty result still leaves a readable, empty table."""
    if not written:
        written = [tables.write_shard(partition, 0, 1, [], schema)]
    yield from tables.prune_partition(partition, written)


@dataclasses.dataclass(eq=False)
class WriteTablePartition(beam.PTransform):
    """Replaces the Parquet partition `partition` with the input rows.

    Args:
        partition: folder of the partition, e.g. `<root>/metadata/images/corpus_version=v1`.
        schema: Arrow schema of the rows.
        key: a row's unique key; it picks the shard and orders rows inside it.
        shards: number of shard files.

    Returns:
        A PCollection of the shard files written.
    """

    partition: str
    schema: pa.Schema
    key: Callable[[Row], str]
    shards: int = 1

    def __post_init__(self) -> None:
        super().__init__()
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1, got {self.shards}")

    def expand(self, rows):
        shards, key = self.shards, self.key
        written = (
            rows
            | "KeyByShard" >> beam.Map(lambda row: (shard_of(key(row), shards), row))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShard(self.partition, shards, self.schema, key))
        )
        _ = (
            rows.pipeline
            | "Partition" >> beam.Create([self.partition])
            | "DeleteStaleShards"
            >> beam.FlatMap(_finish_partition, beam.pvalue.AsList(written), self.schema)
        )
        return written
