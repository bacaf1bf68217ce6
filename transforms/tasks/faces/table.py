"""The `faces` table: one row per detected face, joining every face step's result."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from transforms.records import ImageRecord, StepName
from transforms.tasks.faces.detection import BOX, KEYPOINT, POINT
from transforms.tasks.faces.match import CANDIDATE

FACES_SCHEMA = pa.schema(
    [
        ("face_id", pa.string()),
        ("image_sha256", pa.string()),
        ("corpus_version", pa.string()),
        ("source_path", pa.string()),
        ("set_path", pa.string()),
        ("face_index", pa.int32()),
        ("box", BOX),
        ("keypoints", pa.list_(KEYPOINT)),
        ("score", pa.float32()),
        ("detection_model", pa.string()),
        ("crop_uri", pa.string()),
        ("landmarks", pa.list_(POINT)),
        # Variable-length: pyarrow cannot read back a null fixed-size list from Parquet.
        ("embedding", pa.list_(pa.float32())),
        ("embedding_model", pa.string()),
        ("person", pa.string()),
        ("distance", pa.float32()),
        ("decision", pa.string()),  # "confirmed" when a reviewer named the person
        ("candidates", pa.list_(CANDIDATE)),
        ("cluster_id", pa.string()),
    ]
)

# One row per face and candidate: the ranked leads, flat for queries.
CANDIDATES_SCHEMA = pa.schema(
    [
        ("corpus_version", pa.string()),
        ("source_path", pa.string()),
        ("face_index", pa.int32()),
        ("face_id", pa.string()),
        ("rank", pa.int32()),  # 1 = nearest
        ("person", pa.string()),
        ("distance", pa.float32()),
        ("matched", pa.bool_()),  # the face's match is this person
    ]
)

# One row per cluster of faces that matched no one.
CLUSTERS_SCHEMA = pa.schema(
    [
        ("corpus_version", pa.string()),
        ("cluster_id", pa.string()),
        ("size", pa.int32()),  # distinct faces
        ("nearest_person", pa.string()),  # the gallery person nearest any of its faces
        ("distance", pa.float32()),
    ]
)


# The columns each face step fills: a run updates those of the steps it includes.
FACE_STEP_COLUMNS = {
    StepName.FACE_DETECTION: (
        "face_id", "image_sha256", "set_path", "box", "keypoints", "score", "detection_model",
    ),
    StepName.FACE_CROP: ("crop_uri", "landmarks"),
    StepName.FACE_PRINT: ("embedding", "embedding_model"),
    StepName.FACE_MATCH: ("person", "distance", "decision", "candidates", "cluster_id"),
}  # fmt: skip


def face_update_columns(run_steps: Iterable[str]) -> tuple[str, ...]:
    """The `faces` columns a run's rows change: those of its face steps."""
    steps = set(run_steps)
    return tuple(
        column for step, columns in FACE_STEP_COLUMNS.items() if step in steps for column in columns
    )


def _by_face_index(result: Mapping[str, Any] | None, items: str) -> dict[int, dict]:
    return {item["face_index"]: item for item in (result or {}).get(items) or []}


def face_rows(record: ImageRecord, clusters: Mapping[str, str]) -> list[dict[str, Any]]:
    """The faces of one image, with whatever later face steps added to each."""
    detection = record.results.get(StepName.FACE_DETECTION)
    if detection is None:
        return []
    crops = _by_face_index(record.results.get(StepName.FACE_CROP), "crops")
    prints = record.results.get(StepName.FACE_PRINT)
    embeddings = _by_face_index(prints, "embeddings")
    matches = _by_face_index(record.results.get(StepName.FACE_MATCH), "matches")
    entry = record.entry
    rows = []
    for face in detection["faces"]:
        index = face["face_index"]
        crop = crops.get(index, {})
        match = matches.get(index, {})
        embedding = embeddings.get(index, {}).get("embedding")
        rows.append(
            {
                "face_id": face["face_id"],
                "image_sha256": entry.image_sha256,
                "corpus_version": entry.corpus_version,
                "source_path": entry.source_path,
                "set_path": entry.set_path,
                "face_index": index,
                "box": face["box"],
                "keypoints": face["keypoints"],
                "score": face["score"],
                "detection_model": detection["model"],
                "crop_uri": crop.get("uri"),
                "landmarks": crop.get("landmarks"),
                "embedding": None if embedding is None else list(embedding),
                "embedding_model": prints["model"] if embedding is not None else None,
                "person": match.get("person"),
                "distance": match.get("distance"),
                "decision": match.get("decision"),
                "candidates": match.get("candidates"),
                "cluster_id": clusters.get(face["face_id"]),
            }
        )
    return rows


def candidate_rows(face: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `candidates` rows of one `faces` row."""
    return [
        {
            "corpus_version": face["corpus_version"],
            "source_path": face["source_path"],
            "face_index": face["face_index"],
            "face_id": face["face_id"],
            "rank": rank,
            "person": candidate["person"],
            "distance": candidate["distance"],
            "matched": candidate["person"] == face["person"],
        }
        for rank, candidate in enumerate(face["candidates"] or (), start=1)
    ]
