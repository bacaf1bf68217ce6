"""The metadata tables: their names, keys, partitions and Arrow schemas, and the rows
that fill them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from transforms.records import ErrorRecord, ImageRecord, ManifestEntry

# Table names: folders under <root>/metadata/.
MANIFEST = "manifest"
IMAGE_SETS = "image_sets"
IMAGES = "images"
FACES = "faces"
ERRORS = "errors"
TRANSFORMS = "transforms"
RESULTS = "results"
CANDIDATES = "candidates"
CLUSTERS = "clusters"
DECISIONS = "decisions"
DUPLICATES = "duplicates"


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A table's name, the columns that identify a row, and its partition columns."""

    name: str
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ("corpus_version",)


TABLES = {
    spec.name: spec
    for spec in (
        TableSpec(MANIFEST, ("corpus_version", "source_path")),
        TableSpec(IMAGE_SETS, ("corpus_version", "set_path")),
        TableSpec(IMAGES, ("corpus_version", "source_path")),
        TableSpec(FACES, ("corpus_version", "source_path", "face_index")),
        TableSpec(ERRORS, ("corpus_version", "path", "step")),
        TableSpec(TRANSFORMS, ("transform_name", "transform_version"), ()),
        TableSpec(RESULTS, ("image_sha256", "step", "fingerprint"), ("step",)),
        TableSpec(CANDIDATES, ("corpus_version", "source_path", "face_index", "rank")),
        TableSpec(CLUSTERS, ("corpus_version", "cluster_id")),
        # A decision holds for a face wherever it appears: not per version.
        TableSpec(DECISIONS, ("face_id", "person"), ()),
        # Near-duplicates are grouped across versions: one table for the corpus.
        TableSpec(DUPLICATES, ("corpus_version", "source_path"), ()),
    )
}

MANIFEST_SCHEMA = pa.schema(
    [
        ("source_path", pa.string()),
        ("set_path", pa.string()),
        ("file_name", pa.string()),
        ("corpus_version", pa.string()),
        ("uri", pa.string()),
        ("image_sha256", pa.string()),
        ("bytes", pa.int64()),
        ("rejected_reason", pa.string()),
        ("same_bytes_as", pa.string()),
    ]
)

IMAGE_SETS_SCHEMA = pa.schema(
    [
        ("set_path", pa.string()),
        ("corpus_version", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("blob_prefix", pa.string()),
        ("image_count", pa.int64()),
        ("bytes", pa.int64()),
    ]
)

ERRORS_SCHEMA = pa.schema([(field.name, pa.string()) for field in dataclasses.fields(ErrorRecord)])

TRANSFORMS_SCHEMA = pa.schema(
    [
        ("transform_name", pa.string()),
        ("transform_version", pa.string()),
        ("step_version", pa.string()),
        ("parameters", pa.string()),
    ]
)

# One row per result computed: the store that makes a result computed only once.
RESULTS_SCHEMA = pa.schema(
    [
        ("image_sha256", pa.string()),
        ("step", pa.string()),
        ("step_version", pa.string()),
        ("fingerprint", pa.string()),  # step version, parameters and upstream fingerprints
        ("result", pa.string()),  # JSON of the step's result
        ("computed_at", pa.timestamp("us", tz="UTC")),
        ("corpus_version", pa.string()),  # where it was first computed
    ]
)

_IMAGE_BASE_FIELDS = [
    ("image_sha256", pa.string()),
    ("corpus_version", pa.string()),
    ("set_path", pa.string()),
    ("tags", pa.list_(pa.string())),
    ("source_path", pa.string()),
    ("file_name", pa.string()),
    ("uri", pa.string()),
    ("bytes", pa.int64()),
    ("format", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mode", pa.string()),
    ("frames", pa.int32()),
]


def images_schema(step_columns: Mapping[str, pa.DataType]) -> pa.Schema:
    """The `images` schema: base columns plus one column per step result."""
    return pa.schema(_IMAGE_BASE_FIELDS + list(step_columns.items()))


def manifest_row(entry: ManifestEntry) -> dict[str, Any]:
    return dataclasses.asdict(entry)


def image_row(record: ImageRecord, step_columns: Mapping[str, pa.DataType]) -> dict[str, Any]:
    """Flattens a record into an `images` row; steps that did not run are null."""
    entry = record.entry
    row: dict[str, Any] = {
        "image_sha256": entry.image_sha256,
        "corpus_version": entry.corpus_version,
        "set_path": entry.set_path,
        "tags": entry.tags,
        "source_path": entry.source_path,
        "file_name": entry.file_name,
        "uri": entry.uri,
        "bytes": entry.bytes,
        "format": record.format,
        "width": record.width,
        "height": record.height,
        "mode": record.mode,
        "frames": record.frames,
    }
    for column in step_columns:
        row[str(column)] = record.results.get(column)
    return row


def error_row(error: ErrorRecord) -> dict[str, Any]:
    return dataclasses.asdict(error)
