"""The `duplicates` table: images of the corpus that are near-duplicates of each other.

Every image with a `phash` result, in every version, takes part. Contents (distinct
`image_sha256`) whose hashes differ in at most `max_distance` bits are linked, and
linked contents form a group (single linkage: a chain of close copies is one
group). A group is kept when it holds two different contents, or one content under
two paths of a version; a file carried unchanged from version to version is not a
duplicate of itself.

A group's first image is its file that sorts first by (corpus_version,
source_path); its content hash is the `group_id`, and each row's `distance` is in
bits from that image's hash. So the table is a pure function of the hashes in the
`images` table: grouping again after a run changes only the rows that changed.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from transforms.records import StepName
from transforms.tables import delta, schemas

DUPLICATES_SCHEMA = pa.schema(
    [
        ("group_id", pa.string()),
        ("image_sha256", pa.string()),
        ("source_path", pa.string()),
        ("corpus_version", pa.string()),
        ("distance", pa.int32()),
    ]
)
# Hashes compared at once: a block of rows against a block of columns.
_ROWS, _COLUMNS = 512, 32768


@dataclasses.dataclass(frozen=True)
class HashedFile:
    """One image of one version, with the perceptual hashes of its content."""

    corpus_version: str
    source_path: str
    image_sha256: str
    hash: int
    mirrored: int


def _close_pairs(hashes: np.ndarray, others: np.ndarray, max_distance: int) -> np.ndarray:
    """(i, j) with i < j and hashes[i] within `max_distance` bits of others[j]."""
    found = []
    for row in range(0, len(hashes), _ROWS):
        block = hashes[row : row + _ROWS, None]
        for column in range(row, len(others), _COLUMNS):
            bits = np.bitwise_count(block ^ others[None, column : column + _COLUMNS])
            i, j = np.nonzero(bits <= max_distance)
            i, j = i + row, j + column
            found.append(np.stack([i[i < j], j[i < j]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def _distance(a: HashedFile, b: HashedFile, mirrored: bool) -> int:
    distance = (a.hash ^ b.hash).bit_count()
    return min(distance, (a.hash ^ b.mirrored).bit_count()) if mirrored else distance


def group_rows(files: Iterable[HashedFile], max_distance: int, mirrored: bool) -> list[dict]:
    """The `duplicates` rows of these files, sorted by group and file."""
    by_content: dict[str, list[HashedFile]] = defaultdict(list)
    for file in files:
        by_content[file.image_sha256].append(file)
    contents = sorted(by_content)
    first_files = [by_content[content][0] for content in contents]
    hashes = np.array([file.hash for file in first_files], dtype=np.uint64)
    pairs = [_close_pairs(hashes, hashes, max_distance)]
    if mirrored:
        flipped = np.array([file.mirrored for file in first_files], dtype=np.uint64)
        pairs.append(_close_pairs(hashes, flipped, max_distance))
        pairs.append(_close_pairs(flipped, hashes, max_distance))
    linked = np.concatenate(pairs)
    graph = coo_matrix(
        (np.ones(len(linked)), (linked[:, 0], linked[:, 1])), shape=(len(contents),) * 2
    )
    _, component = connected_components(graph, directed=False)
    members: dict[int, list[str]] = defaultdict(list)
    for index, content in enumerate(contents):
        members[int(component[index])].append(content)
    rows = []
    for group in members.values():
        group_files = sorted(
            (file for content in group for file in by_content[content]),
            key=lambda file: (file.corpus_version, file.source_path),
        )
        paths_per_version = defaultdict(int)
        for file in group_files:
            paths_per_version[file.corpus_version] += 1
        if len(group) < 2 and max(paths_per_version.values()) < 2:
            continue
        first = group_files[0]
        rows += [
            {
                "group_id": first.image_sha256,
                "image_sha256": file.image_sha256,
                "source_path": file.source_path,
                "corpus_version": file.corpus_version,
                "distance": _distance(first, file, mirrored),
            }
            for file in group_files
        ]
    return sorted(
        rows, key=lambda row: (row["group_id"], row["corpus_version"], row["source_path"])
    )


def group_count(rows: Iterable[Mapping]) -> int:
    return len({row["group_id"] for row in rows})


def hashed_files(corpus_root: str) -> list[HashedFile]:
    """Every image of every version that has a `phash` result."""
    where = delta.location(corpus_root, schemas.IMAGES)
    if StepName.PHASH not in delta.column_names(where):
        return []
    table = delta.read(
        where,
        ("corpus_version", "source_path", "image_sha256", StepName.PHASH),
        pads.field(StepName.PHASH).is_valid(),
    )
    return [
        HashedFile(
            row["corpus_version"],
            row["source_path"],
            row["image_sha256"],
            int(row[StepName.PHASH]["hash"], 16),
            int(row[StepName.PHASH]["mirrored"], 16),
        )
        for row in table.to_pylist()
    ]


def _as_set(rows: Iterable[Mapping]) -> set[tuple]:
    return {tuple(row[name] for name in DUPLICATES_SCHEMA.names) for row in rows}


@dataclasses.dataclass(frozen=True)
class Grouping:
    """How near two hashes must be for their images to be near-duplicates."""

    max_distance: int
    mirrored: bool = False

    def regroup(self, corpus_root: str, metadata: Mapping[str, str]) -> list[dict]:
        """Groups the corpus's images again and stores the groups, in one commit if
        they changed and none if not; returns the table's rows."""
        rows = group_rows(hashed_files(corpus_root), self.max_distance, self.mirrored)
        where = delta.location(corpus_root, schemas.DUPLICATES)
        if delta.exists(where) and _as_set(delta.read_rows(where)) == _as_set(rows):
            return rows
        spec = schemas.TABLES[schemas.DUPLICATES]
        delta.merge(
            where,
            delta.as_table(rows, DUPLICATES_SCHEMA),
            delta.Merge(spec.keys, delete_unmatched="true"),
            spec.partition_by,
            metadata,
        )
        return rows
