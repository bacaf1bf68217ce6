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
from collections.abc import Iterable, Mapping, Sequence

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
REGROUP_TRIES = 5
_SETTING = f"{delta.COMMIT_KEY}.grouping."  # commit metadata keys of the settings


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


def group_rows(files: Sequence[HashedFile], max_distance: int, mirrored: bool) -> list[dict]:
    """The `duplicates` rows of these files, sorted by group and file."""
    if not files:
        return []
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


def hashed_files(corpus_root: str, hash_version: str) -> list[HashedFile]:
    """Every image of every version with a `phash` result of `hash_version` (hashes
    of another version are not comparable)."""
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
        if row[StepName.PHASH]["step_version"] == hash_version
    ]


def _as_set(rows: Iterable[Mapping]) -> set[tuple]:
    return {tuple(row[name] for name in DUPLICATES_SCHEMA.names) for row in rows}


@dataclasses.dataclass(frozen=True)
class Grouping:
    """How near two hashes must be for their images to be near-duplicates."""

    max_distance: int
    mirrored: bool
    hash_version: str  # the `phash` step version whose hashes are compared

    def settings(self) -> dict[str, str]:
        """What each commit of the table records, so a later run groups alike."""
        return {
            _SETTING + "max_distance": str(self.max_distance),
            _SETTING + "mirrored": str(self.mirrored).lower(),
            _SETTING + "hash_version": self.hash_version,
        }

    @classmethod
    def stored(cls, corpus_root: str) -> Grouping | None:
        """The settings the table was last grouped with; None if it never was."""
        for commit in delta.history(delta.location(corpus_root, schemas.DUPLICATES)):
            if _SETTING + "max_distance" in commit:
                return cls(
                    int(commit[_SETTING + "max_distance"]),
                    commit[_SETTING + "mirrored"] == "true",
                    commit[_SETTING + "hash_version"],
                )
        return None

    def regroup(self, corpus_root: str, metadata: Mapping[str, str]) -> list[dict]:
        """Groups the corpus's images again and stores the groups, in one commit if
        they changed and none if not; returns the table's rows.

        If `images` changed while the groups were made, they are made again: of two
        runs grouping at once, the one that read the older rows may commit last.
        """
        images = delta.location(corpus_root, schemas.IMAGES)
        where = delta.location(corpus_root, schemas.DUPLICATES)
        spec = schemas.TABLES[schemas.DUPLICATES]
        for _ in range(REGROUP_TRIES):
            seen = delta.snapshot(images)
            files = hashed_files(corpus_root, self.hash_version)
            rows = group_rows(files, self.max_distance, self.mirrored)
            stored = delta.read_rows(where) if delta.exists(where) else None
            if (
                stored is None
                or _as_set(stored) != _as_set(rows)
                or self != Grouping.stored(corpus_root)
            ):
                delta.merge(
                    where,
                    delta.as_table(rows, DUPLICATES_SCHEMA),
                    delta.Merge(spec.keys, delete_unmatched="true"),
                    spec.partition_by,
                    {**metadata, **self.settings()},
                )
            if delta.snapshot(images) == seen:
                break
        return rows
