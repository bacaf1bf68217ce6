"""Beam transforms that write the run's rows to Azure Table Storage.

Entities are grouped by PartitionKey, so each partition is written by one worker in
transactions of up to 100 entities. A run writes every image of its version, so
after writing an `Images` partition (one per image set) rows it did not write, files
that left the version, are deleted; an image's entity is merged, so the results of
steps this run did not include are kept. `Faces` partitions are replaced the same
way by a run with face steps, which merges only its face steps' columns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.tables import azure_tables
from transforms.tables.azure_tables import AzureTables

NAMESPACE = "azure_tables"
_ROWS, _OWNED = "rows", "owned"


def upserted_counter(table: str) -> str:
    return f"{table}.upserted"


def deleted_counter(table: str) -> str:
    return f"{table}.deleted_stale"


class _WritePartition(beam.DoFn):
    def __init__(self, tables: AzureTables, table: str, replace: bool, merge: bool) -> None:
        self._tables = tables
        self._table = table
        self._replace = replace
        self._merge = merge
        self._upserted = Metrics.counter(NAMESPACE, upserted_counter(table))
        self._deleted = Metrics.counter(NAMESPACE, deleted_counter(table))

    def setup(self) -> None:
        self._client = self._tables.table_client(self._table)

    def process(self, keyed):
        partition_key, grouped = keyed
        written: set[str] = set()

        def remember(entities: Iterable[dict]):
            for entity in entities:
                written.add(entity["RowKey"])
                yield entity

        self._upserted.inc(azure_tables.upsert(self._client, remember(grouped[_ROWS]), self._merge))
        if self._replace:
            self._deleted.inc(azure_tables.delete_others(self._client, partition_key, written))
        yield partition_key


@dataclasses.dataclass(eq=False)
class WriteAzureTable(beam.PTransform):
    """Upserts entities into one table, partition by partition.

    Args:
        tables: the account and table prefix.
        table: e.g. `azure_tables.IMAGES`.
        owned_partitions: with `replace`, partitions this run owns whole: each ends
            holding exactly the run's rows, and none if the run wrote none to it.
        replace: delete rows of a written or owned partition that this run did not write.
        merge: keep the properties of an existing entity that a new one does not carry.

    Returns:
        A PCollection of the partition keys written.
    """

    tables: AzureTables
    table: str
    owned_partitions: tuple[str, ...] = ()
    replace: bool = False
    merge: bool = False

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, entities):
        keyed = entities | "ByPartition" >> beam.Map(lambda e: (e["PartitionKey"], e))
        owned = entities.pipeline | "OwnedPartitions" >> beam.Create(
            [(key, None) for key in self.owned_partitions]
        )
        return (
            {_ROWS: keyed, _OWNED: owned}
            | "GroupByPartition" >> beam.CoGroupByKey()
            | "Write"
            >> beam.ParDo(_WritePartition(self.tables, self.table, self.replace, self.merge))
        )


def _transform_outputs(row: dict, step_columns: tuple[str, ...]):
    """(set path, transform name, transform version) of each transform that ran on a row."""
    for step in step_columns:
        result = row.get(step)
        if isinstance(result, dict) and result.get("transform_version"):
            yield (row["set_path"], step, result["transform_version"]), 1


@dataclasses.dataclass(eq=False)
class WriteAzureTables(beam.PTransform):
    """Writes a run's `Images` and `Faces` rows and its transformed `ImageSets`.

    Input is a dict with the `images` rows of the run, and its `faces` rows if it
    ran the face steps.

    Args:
        step_columns: the result columns of the steps this run included.
        face_columns: the `faces` columns of the face steps this run included.
        set_paths: every set path of the corpus version (the partitions it owns).
    """

    tables: AzureTables
    corpus_root: str
    corpus_version: str
    step_columns: tuple[str, ...]
    set_paths: tuple[str, ...]
    face_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, rows):
        owned = tuple(
            azure_tables.image_partition_key(self.corpus_root, self.corpus_version, set_path)
            for set_path in self.set_paths
        )
        images = (
            rows["images"]
            | "ImageEntities"
            >> beam.Map(azure_tables.image_entity, self.step_columns, self.corpus_root)
            | "WriteImages"
            >> WriteAzureTable(self.tables, azure_tables.IMAGES, owned, replace=True, merge=True)
        )
        written = {"images": images}
        if "faces" in rows:
            written["faces"] = (
                rows["faces"]
                | "FaceEntities"
                >> beam.Map(azure_tables.face_entity, self.corpus_root, self.face_columns)
                | "WriteFaces"
                >> WriteAzureTable(self.tables, azure_tables.FACES, owned, replace=True, merge=True)
            )
        root, version = self.corpus_root, self.corpus_version
        sets = (
            rows["images"]
            | "TransformOutputs" >> beam.FlatMap(_transform_outputs, self.step_columns)
            | "CountPerSet" >> beam.CombinePerKey(sum)
            | "SetEntities"
            >> beam.MapTuple(
                lambda key, count: azure_tables.transformed_set_entity(
                    root, key[0], version, key[1], key[2], count
                )
            )
            | "WriteImageSets" >> WriteAzureTable(self.tables, azure_tables.IMAGE_SETS)
        )
        return {**written, "image_sets": sets}
