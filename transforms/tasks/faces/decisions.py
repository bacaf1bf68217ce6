"""Reviewers' decisions about faces: "this face is person X" and "this face is not X".

A decision is about a face (its `face_id`, a pure function of the image's bytes and
the detector settings), so it holds in every version that shows the image and
survives re-runs and re-clustering; naming a cluster records a confirmation for each
of its faces. A decision carries the face's embedding, so a confirmed face joins
the gallery of later matches without any model running again.

The `decisions` table keeps one row per (face, person): deciding again about the
same pair replaces the earlier row (the table's history keeps every version).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from transforms.tables import delta, schemas

CONFIRM, REJECT = "confirm", "reject"
VERDICTS = (CONFIRM, REJECT)
KEYS = schemas.TABLES[schemas.DECISIONS].keys

DECISIONS_SCHEMA = pa.schema(
    [
        ("face_id", pa.string()),
        ("person", pa.string()),
        ("verdict", pa.string()),  # confirm | reject
        ("reviewer", pa.string()),
        ("decided_at", pa.timestamp("us", tz="UTC")),
        ("embedding", pa.list_(pa.float32())),
        # Where the reviewer saw the face, and the cluster they named, if any.
        ("corpus_version", pa.string()),
        ("source_path", pa.string()),
        ("cluster_id", pa.string()),
    ]
)


@dataclasses.dataclass(frozen=True)
class Decision:
    face_id: str
    person: str
    verdict: str
    reviewer: str
    embedding: Sequence[float]
    corpus_version: str
    source_path: str
    cluster_id: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"a verdict is one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        check_person(self.person)


def check_person(person: str) -> None:
    """A person's name is what a gallery folder may be called.

    Raises:
        ValueError: empty, surrounded by spaces, or with a path separator or
            control character.
    """
    if (
        not person
        or person != person.strip()
        or person in (".", "..")
        or any(c in person for c in "/\\")
        or any(ord(c) < 32 for c in person)
    ):
        raise ValueError(
            f"a person's name must be non-empty, without surrounding spaces, '/', '\\' or "
            f"control characters, got {person!r}"
        )


@dataclasses.dataclass(frozen=True)
class Reviewed:
    """What the decisions say, face by face.

    Attributes:
        confirmed: face_id -> the person a reviewer said it is (the latest such decision).
        rejected: face_id -> the people a reviewer said it is not.
        gallery_faces: (person, face_id, embedding) of every confirmed face: these
            join the gallery.
    """

    confirmed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    rejected: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    gallery_faces: tuple[tuple[str, str, np.ndarray], ...] = ()

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Reviewed:
        latest: dict[str, Mapping[str, Any]] = {}
        rejected: dict[str, set[str]] = {}
        for row in sorted(rows, key=lambda row: (row["decided_at"], row["person"])):
            if row["verdict"] == CONFIRM:
                latest[row["face_id"]] = row
            else:
                rejected.setdefault(row["face_id"], set()).add(row["person"])
        confirmed = {
            face: row for face, row in latest.items() if row["person"] not in rejected.get(face, ())
        }
        return cls(
            confirmed={face: row["person"] for face, row in confirmed.items()},
            rejected={face: frozenset(people) for face, people in rejected.items()},
            gallery_faces=tuple(
                (row["person"], face, np.asarray(row["embedding"], np.float32))
                for face, row in sorted(confirmed.items())
                if row["embedding"] is not None
            ),
        )

    def person_of(self, face_id: str, matched: str | None) -> str | None:
        """The face's person after review: confirmed, else the match unless rejected."""
        if face_id in self.confirmed:
            return self.confirmed[face_id]
        return None if matched in self.rejected.get(face_id, ()) else matched


def _where(corpus_root: str) -> delta.DeltaLocation:
    return delta.location(corpus_root, schemas.DECISIONS)


def read_reviewed(corpus_root: str) -> Reviewed:
    """Every decision recorded for the corpus (none if the table does not exist)."""
    where = _where(corpus_root)
    if not delta.exists(where):
        return Reviewed()
    return Reviewed.from_rows(delta.read_rows(where))


def read_decisions(corpus_root: str) -> list[dict[str, Any]]:
    """The decision rows, newest first, without the embeddings."""
    where = _where(corpus_root)
    if not delta.exists(where):
        return []
    columns = [f.name for f in DECISIONS_SCHEMA if f.name != "embedding"]
    rows = delta.read(where, columns=columns).to_pylist()
    return sorted(rows, key=lambda row: row["decided_at"], reverse=True)


def record(corpus_root: str, decisions: Sequence[Decision], command: str) -> int:
    """Stores decisions in one commit, each replacing any earlier one about the same
    face and person; returns how many."""
    now = datetime.datetime.now(datetime.UTC)
    rows = [
        {**dataclasses.asdict(decision), "decided_at": now, "embedding": list(decision.embedding)}
        for decision in decisions
    ]
    delta.merge(
        _where(corpus_root),
        pa.Table.from_pylist(rows, schema=DECISIONS_SCHEMA),
        delta.Merge(KEYS),
        metadata=delta.commit_metadata("review", action=command),
    )
    return len(rows)
