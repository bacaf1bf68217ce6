"""The Azure Table copy of the metadata: entities, their keys, and batched upserts.

Tables (names optionally prefixed). Every PartitionKey starts with the corpus — the
root's container and path, without the account — so several corpora in one account
never touch each other's rows:

* `ImageSets`: PartitionKey = (corpus, set path); RowKey = corpus version for an
  original set, or (corpus version, transform name, transform version) for a
  transformed one, so a transformed set never overwrites its original.
* `ImageTransforms`: PartitionKey = (corpus, transform name); RowKey = transform version.
* `Images`: PartitionKey = (corpus, corpus version, set path); RowKey = file name.
* `Faces`: PartitionKey = (corpus, corpus version, set path); RowKey = (file name,
  face index).

Keys come from `table_keys.table_key`; the original values are properties. Writes are
upserts that replace the whole entity, sent as transactions of up to 100 entities of
one partition, so re-running writes the same rows again instead of new ones.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from transforms import paths
from transforms.io.azure_access import AzureAccess, is_azfs, split_azfs
from transforms.io.table_keys import table_key

IMAGE_SETS = "ImageSets"
IMAGE_TRANSFORMS = "ImageTransforms"
IMAGES = "Images"
FACES = "Faces"
TABLES = (IMAGE_SETS, IMAGE_TRANSFORMS, IMAGES, FACES)

# Azure's limits: 64 KiB per string (UTF-16), 1 MiB per entity, 252 properties of
# one's own, and 100 entities or 4 MiB per transaction.
MAX_STRING_BYTES = 64 * 1024
MAX_ENTITY_BYTES = 1024 * 1024
MAX_PROPERTIES = 252
MAX_BATCH_ENTITIES = 100
# The 4 MiB limit is on the request body: JSON with ASCII escapes and type annotations.
MAX_BATCH_BYTES = 3_500_000
_OPERATION_FRAMING_BYTES = 1024
OMITTED = "omitted_results"
_TABLE_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9]{0,40}")
_PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_RESERVED_PROPERTIES = frozenset({"PartitionKey", "RowKey", "Timestamp", OMITTED})


def check_property_names(names) -> None:
    """Raises ValueError for names Azure Table Storage cannot take as properties."""
    bad = sorted(n for n in names if not _PROPERTY_NAME.fullmatch(n) or n in _RESERVED_PROPERTIES)
    if bad:
        raise ValueError(
            f"step name(s) {', '.join(bad)} cannot be Azure Table property names (letters, "
            "digits and '_', not starting with a digit): rename the step(s) or pass "
            "--no-azure-tables"
        )


def corpus_key_part(corpus_root: str) -> str:
    """The corpus in keys: its container and path (the account is the tables' own)."""
    if is_azfs(corpus_root):
        _, container, path = split_azfs(corpus_root)
        return f"{container}/{path}".rstrip("/")
    return corpus_root


Entity = dict[str, Any]


def check_table_prefix(prefix: str) -> str:
    if prefix and not _TABLE_PREFIX.fullmatch(prefix):
        raise ValueError(
            f"invalid Azure table prefix {prefix!r}: use up to 41 letters and digits, "
            "starting with a letter"
        )
    return prefix


@dataclasses.dataclass(frozen=True)
class AzureTables:
    """Where the tables are: an account, and a prefix for their names."""

    access: AzureAccess
    prefix: str = ""

    def name(self, table: str) -> str:
        return self.prefix + table

    def table_client(self, table: str):
        return self.access.table_service().get_table_client(self.name(table))

    def create_all(self) -> None:
        """Creates the tables that are missing (fails early on a bad credential)."""
        service = self.access.table_service()
        for table in TABLES:
            service.create_table_if_not_exists(self.name(table))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a table property")


def _property(value: Any) -> Any:
    """A table property value: scalars as they are (Int64 only past 32 bits, so most
    read back as plain ints), anything structured as JSON."""
    from azure.data.tables import EdmType, EntityProperty

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | float | str | bytes):
        return value
    if isinstance(value, int) and not -(2**31) <= value < 2**31:
        return EntityProperty(value, EdmType.INT64)
    if isinstance(value, int):
        return value
    return _json(value)


def _value_bytes(value: Any) -> int:
    """A property value's size as Azure counts it."""
    value = getattr(value, "value", value)
    if isinstance(value, str):
        return 4 + len(value.encode("utf-16-le"))
    if isinstance(value, bytes):
        return 4 + len(value)
    if isinstance(value, bool):
        return 1
    return 8


def entity_bytes(entity: Mapping[str, Any]) -> int:
    return 4 + sum(8 + 2 * len(name) + _value_bytes(value) for name, value in entity.items())


def request_bytes(entity: Mapping[str, Any]) -> int:
    """An upper bound of the entity's size in a transaction's body (JSON, ASCII escapes,
    base64 binary, a type annotation per property, the operation's framing)."""
    size = _OPERATION_FRAMING_BYTES
    for name, value in entity.items():
        value = getattr(value, "value", value)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        size += len(json.dumps(name)) + len(json.dumps(value, default=str)) + 2
        size += 60  # "name@odata.type":"Edm.Xxx",
    return size


def build_entity(
    partition_key: str,
    row_key: str,
    properties: Mapping[str, Any],
    results: Mapping[str, Any] | None = None,
) -> Entity:
    """An entity holding `properties` and as many `results` as Azure's limits allow.

    `properties` are small and always kept (null values are left out: Azure has no
    null). Each result is stored as JSON; one over 64 KiB, or the largest ones when
    the entity would pass 1 MiB or 252 properties, are left out and named in
    `omitted_results` (the Parquet `images` table has them all).
    """
    entity: Entity = {"PartitionKey": partition_key, "RowKey": row_key}
    entity.update({name: _property(v) for name, v in properties.items() if v is not None})
    encoded = {name: _json(v) for name, v in (results or {}).items() if v is not None}
    omitted = sorted(n for n, text in encoded.items() if _value_bytes(text) - 4 > MAX_STRING_BYTES)
    fitting = {n: text for n, text in encoded.items() if n not in omitted}
    room = MAX_ENTITY_BYTES - entity_bytes(entity) - entity_bytes({OMITTED: "x" * 1024})
    own_properties = len(entity) - 2  # PartitionKey and RowKey do not count
    slots = MAX_PROPERTIES - own_properties - 1  # one kept for omitted_results
    for name in sorted(fitting, key=lambda n: entity_bytes({n: fitting[n]})):
        size = entity_bytes({name: fitting[name]}) - 4
        if size <= room and slots > 0:
            entity[name] = fitting[name]
            room -= size
            slots -= 1
        else:
            omitted.append(name)
    if omitted:
        entity[OMITTED] = ",".join(sorted(omitted))
    return entity


def image_set_entity(row: Mapping[str, Any], corpus_root: str) -> Entity:
    """An original ImageSet, from an `image_sets` Parquet row."""
    return build_entity(
        table_key(corpus_key_part(corpus_root), row["set_path"]),
        table_key(row["corpus_version"]),
        {
            "kind": "original",
            "set_path": row["set_path"],
            "corpus_version": row["corpus_version"],
            "tags": list(row["tags"]),
            "blob_prefix": row["blob_prefix"],
            "image_count": row["image_count"],
            "bytes": row["bytes"],
            "corpus_root": corpus_root,
        },
    )


def transformed_set_entity(
    corpus_root: str,
    set_path: str,
    corpus_version: str,
    transform_name: str,
    transform_version: str,
    image_count: int,
) -> Entity:
    """A transformed ImageSet: same partition as its original, its own RowKey."""
    prefix = paths.transform_set_prefix(
        corpus_root, transform_name, transform_version, set_path, corpus_version
    )
    return build_entity(
        table_key(corpus_key_part(corpus_root), set_path),
        table_key(corpus_version, transform_name, transform_version),
        {
            "kind": "transform",
            "set_path": set_path,
            "corpus_version": corpus_version,
            "transform_name": transform_name,
            "transform_version": transform_version,
            "tags": paths.tags_of(set_path),
            "blob_prefix": prefix,
            "image_count": image_count,
            "corpus_root": corpus_root,
        },
    )


def transform_entity(row: Mapping[str, str], corpus_root: str) -> Entity:
    """An ImageTransforms row, from a `transforms` Parquet row."""
    return build_entity(
        table_key(corpus_key_part(corpus_root), row["transform_name"]),
        table_key(row["transform_version"]),
        {**row, "corpus_root": corpus_root},
    )


def image_partition_key(corpus_root: str, corpus_version: str, set_path: str) -> str:
    return table_key(corpus_key_part(corpus_root), corpus_version, set_path)


_IMAGE_PROPERTIES = (
    "image_sha256",
    "corpus_version",
    "set_path",
    "tags",
    "source_path",
    "file_name",
    "uri",
    "bytes",
    "format",
    "width",
    "height",
    "mode",
    "frames",
)


def image_entity(row: Mapping[str, Any], step_columns: Iterable[str], corpus_root: str) -> Entity:
    """An Images row from an `images` row; the given steps' results as JSON properties.

    The entity is merged into the stored one, which keeps the other steps' results: a
    given step without a result (failed, or left out for size) is written as "", and
    `omitted_results` always, so no value of an earlier run survives for them.
    """
    step_columns = list(step_columns)
    entity = build_entity(
        image_partition_key(corpus_root, row["corpus_version"], row["set_path"]),
        table_key(row["file_name"]),
        {name: row[name] for name in _IMAGE_PROPERTIES},
        {step: row.get(step) for step in step_columns},
    )
    for step in step_columns:
        entity.setdefault(step, "")
    entity.setdefault(OMITTED, "")
    return entity


_FACE_KEY_PROPERTIES = ("corpus_version", "source_path", "face_index")


def face_entity(
    row: Mapping[str, Any], corpus_root: str, columns: Iterable[str] | None = None
) -> Entity:
    """A Faces row from a `faces` row; the embedding as 128 little-endian float32.

    Args:
        columns: only these columns (those of the run's face steps), each written even
            without a value (as ""), so that merged into the stored entity no value
            of an earlier run survives for them; None for all.
    """
    file_name = row["source_path"].rpartition("/")[2]
    kept = None if columns is None else {*_FACE_KEY_PROPERTIES, *columns}
    properties = {k: v for k, v in row.items() if kept is None or k in kept}
    properties["file_name"] = file_name
    embedding = properties.pop("embedding", None)
    if embedding is not None:
        properties["embedding"] = np.asarray(embedding, dtype="<f4").tobytes()
    entity = build_entity(
        image_partition_key(corpus_root, row["corpus_version"], row["set_path"]),
        table_key(file_name, f"{row['face_index']:04d}"),
        properties,
    )
    for column in columns or ():
        entity.setdefault(column, "")
    return entity


def transactions(entities: Iterable[Entity]) -> Iterator[list[Entity]]:
    """Groups entities of one partition into chunks Azure accepts in one transaction."""
    chunk: list[Entity] = []
    size = 0
    for entity in entities:
        entity_size = request_bytes(entity)
        if chunk and (
            len(chunk) == MAX_BATCH_ENTITIES
            or size + entity_size > MAX_BATCH_BYTES
            or entity["PartitionKey"] != chunk[0]["PartitionKey"]
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(entity)
        size += entity_size
    if chunk:
        yield chunk


def upsert(table_client, entities: Iterable[Entity], keep_other_properties: bool = False) -> int:
    """Writes entities (sorted by partition) as upserts; returns how many.

    Args:
        keep_other_properties: merge into an existing entity, keeping properties the
            new one does not carry (a partial run's other steps), instead of replacing it.
    """
    from azure.data.tables import UpdateMode

    mode = UpdateMode.MERGE if keep_other_properties else UpdateMode.REPLACE
    written = 0
    for chunk in transactions(entities):
        table_client.submit_transaction([("upsert", entity, {"mode": mode}) for entity in chunk])
        written += len(chunk)
    return written


def delete_others(table_client, partition_key: str, keep: set[str]) -> int:
    """Deletes the partition's rows whose RowKey is not in `keep`; returns how many."""
    stale = [
        {"PartitionKey": partition_key, "RowKey": entity["RowKey"]}
        for entity in table_client.query_entities(
            "PartitionKey eq @key", parameters={"key": partition_key}, select=["RowKey"]
        )
        if entity["RowKey"] not in keep
    ]
    for chunk in transactions(stale):
        table_client.submit_transaction([("delete", entity) for entity in chunk])
    return len(stale)
