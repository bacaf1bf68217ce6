"""What a report shows, read from a version's tables and the reviewers' decisions.

Decisions apply at once: a face a reviewer confirmed shows as that person, a
rejected match or lead is not shown, and a named cluster's faces leave the
clusters, even before `facematch` runs again.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections import Counter
from typing import Any

import pyarrow.dataset as pads

from transforms.tables import delta, schemas
from transforms.tasks.faces.decisions import Reviewed, read_decisions, read_reviewed
from transforms.tasks.faces.match import CONFIRMED, list_gallery

STEP_ORDER = (
    "thumbnail",
    "phash",
    "generalclassification",
    "ocr",
    "facedetection",
    "facecrop",
    "faceprint",
    "facematch",
)
_IMAGE_COLUMNS = (
    "image_sha256", "source_path", "set_path", "tags", "file_name", "uri", "width", "height",
)  # fmt: skip
_FACE_COLUMNS = (
    "face_id", "image_sha256", "source_path", "face_index", "box", "crop_uri", "person",
    "distance", "decision", "candidates", "cluster_id",
)  # fmt: skip


@dataclasses.dataclass
class Image:
    source_path: str
    set_path: str
    tags: list[str]
    file_name: str
    uri: str
    width: int
    height: int
    image_sha256: str
    thumbnail_uri: str | None
    labels: list[str]
    ocr_text: str
    faces: int = 0


@dataclasses.dataclass
class Face:
    face_id: str
    image_sha256: str
    source_path: str
    face_index: int
    box: dict[str, float]
    crop_uri: str | None
    person: str | None  # after the reviewers' decisions
    distance: float | None
    confirmed: bool  # a reviewer said it is `person`
    candidates: list[tuple[str, float]]  # without the people rejected for it
    cluster_id: str | None


@dataclasses.dataclass
class Cluster:
    cluster_id: str
    faces: list[Face]
    nearest_person: str | None
    distance: float | None


@dataclasses.dataclass
class Copy:
    """One image of a near-duplicate group, in whichever version it is."""

    corpus_version: str
    source_path: str
    image_sha256: str
    distance: int  # bits from the group's first image
    uri: str | None  # None: no longer in the images table
    thumbnail_uri: str | None


@dataclasses.dataclass
class DuplicateGroup:
    group_id: str
    copies: list[Copy]  # the group's first image first


@dataclasses.dataclass
class ReportData:
    corpus_root: str
    version: str
    images: dict[str, Image]  # by source_path
    faces: list[Face]
    clusters: list[Cluster]  # largest first
    duplicates: list[DuplicateGroup]  # groups with an image of this version, largest first
    errors: list[dict[str, Any]]
    threshold: float | None  # None: facematch never ran on the version
    step_counts: dict[str, int]  # images with each step's result
    computed: dict[str, int]  # results first computed for this version, by step
    last_run: dict[str, str] | None  # time and steps of the version's latest run
    decisions: list[dict[str, Any]]
    gallery: dict[str, list[str]]  # person -> photo uris (from --gallery)

    def people(self) -> list[str]:
        """Gallery people and everyone a face is matched or confirmed to, by name."""
        return sorted(set(self.gallery) | {face.person for face in self.faces if face.person})


def _rows(corpus_root: str, table: str, columns, version: str) -> list[dict[str, Any]]:
    where = delta.location(corpus_root, table)
    available = set(delta.column_names(where))
    if not available:
        return []
    wanted = [column for column in columns if column in available]
    return delta.read(where, columns=wanted, filter=delta.version_filter(version)).to_pylist()


def _image(row: dict[str, Any]) -> Image:
    thumbnail = row.get("thumbnail") or {}
    labels = (row.get("generalclassification") or {}).get("labels") or []
    return Image(
        **{column: row[column] for column in _IMAGE_COLUMNS},
        thumbnail_uri=thumbnail.get("uri"),
        labels=[label["label"] for label in labels],
        ocr_text=(row.get("ocr") or {}).get("text") or "",
    )


def _face(row: dict[str, Any], reviewed: Reviewed) -> Face:
    rejected = reviewed.rejected.get(row["face_id"], frozenset())
    person = reviewed.person_of(row["face_id"], row["person"])
    # Tables written before reviews have no `decision` column.
    confirmed = row["face_id"] in reviewed.confirmed or row.get("decision") == CONFIRMED
    return Face(
        face_id=row["face_id"],
        image_sha256=row["image_sha256"],
        source_path=row["source_path"],
        face_index=row["face_index"],
        box=row["box"],
        crop_uri=row["crop_uri"],
        person=person,
        distance=row["distance"] if person == row["person"] else None,
        confirmed=confirmed and person is not None,
        candidates=[
            (c["person"], c["distance"])
            for c in row.get("candidates") or ()
            if c["person"] not in rejected
        ],
        cluster_id=row["cluster_id"] if person is None else None,
    )


def _clusters(corpus_root: str, version: str, faces: list[Face]) -> list[Cluster]:
    columns = ("cluster_id", "nearest_person", "distance")
    rows = _rows(corpus_root, schemas.CLUSTERS, columns, version)
    nearest = {row["cluster_id"]: row for row in rows}
    members: dict[str, list[Face]] = {}
    for face in faces:
        if face.cluster_id:
            members.setdefault(face.cluster_id, []).append(face)
    clusters = [
        Cluster(
            cluster_id,
            sorted(group, key=lambda face: (face.source_path, face.face_index)),
            nearest.get(cluster_id, {}).get("nearest_person"),
            nearest.get(cluster_id, {}).get("distance"),
        )
        for cluster_id, group in members.items()
    ]
    return sorted(clusters, key=lambda cluster: (-len(cluster.faces), cluster.cluster_id))


def _duplicates(corpus_root: str, version: str, images: dict[str, Image]) -> list[DuplicateGroup]:
    """The near-duplicate groups that hold an image of `version`, with every copy."""
    where = delta.location(corpus_root, schemas.DUPLICATES)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in delta.read(where).to_pylist():
        groups.setdefault(row["group_id"], []).append(row)
    groups = {
        group_id: rows
        for group_id, rows in groups.items()
        if any(row["corpus_version"] == version for row in rows)
    }
    elsewhere = {
        (row["corpus_version"], row["source_path"])
        for rows in groups.values()
        for row in rows
        if row["corpus_version"] != version
    }
    pictures = {
        (version, path): (image.uri, image.thumbnail_uri) for path, image in images.items()
    } | _pictures_of(corpus_root, elsewhere)
    found = [
        DuplicateGroup(
            group_id,
            [
                Copy(
                    row["corpus_version"],
                    row["source_path"],
                    row["image_sha256"],
                    row["distance"],
                    *pictures.get((row["corpus_version"], row["source_path"]), (None, None)),
                )
                for row in sorted(rows, key=lambda row: (row["corpus_version"], row["source_path"]))
            ],
        )
        for group_id, rows in groups.items()
    ]
    return sorted(found, key=lambda group: (-len(group.copies), group.group_id))


def _pictures_of(
    corpus_root: str, files: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(version, path) -> (uri, thumbnail uri) of files of other versions."""
    if not files:
        return {}
    where = delta.location(corpus_root, schemas.IMAGES)
    columns = ["corpus_version", "source_path", "uri"]
    if "thumbnail" in delta.column_names(where):
        columns.append("thumbnail")
    wanted = pads.field("source_path").isin(sorted({path for _, path in files}))
    wanted &= pads.field("corpus_version").isin(sorted({version for version, _ in files}))
    return {
        (row["corpus_version"], row["source_path"]): (
            row["uri"],
            (row.get("thumbnail") or {}).get("uri"),
        )
        for row in delta.read(where, columns, wanted).to_pylist()
        if (row["corpus_version"], row["source_path"]) in files
    }


def _last_run(corpus_root: str, version: str) -> dict[str, str] | None:
    for commit in delta.history(delta.location(corpus_root, schemas.IMAGES)):
        if (
            commit.get(f"{delta.COMMIT_KEY}.command") == "run"
            and commit.get(f"{delta.COMMIT_KEY}.corpus_version") == version
        ):
            when = datetime.datetime.fromtimestamp(commit["timestamp"] / 1000, datetime.UTC)
            steps = commit.get(f"{delta.COMMIT_KEY}.steps", "")
            return {"time": when.strftime("%Y-%m-%d %H:%M UTC"), "steps": steps}
    return None


def _computed(corpus_root: str, version: str) -> dict[str, int]:
    where = delta.location(corpus_root, schemas.RESULTS)
    if not delta.exists(where):
        return {}
    steps = delta.read(where, columns=["step"], filter=delta.version_filter(version))
    return dict(sorted(Counter(steps.column("step").to_pylist()).items()))


def load(corpus_root: str, version: str, gallery: str | None = None) -> ReportData:
    """Everything the report shows about one version."""
    image_columns = (*_IMAGE_COLUMNS, *STEP_ORDER)
    image_rows = _rows(corpus_root, schemas.IMAGES, image_columns, version)
    images = {row["source_path"]: _image(row) for row in image_rows}
    reviewed = read_reviewed(corpus_root)
    faces = [
        _face(row, reviewed)
        for row in _rows(corpus_root, schemas.FACES, _FACE_COLUMNS, version)
        if row["source_path"] in images
    ]
    faces.sort(key=lambda face: (face.source_path, face.face_index))
    for face in faces:
        images[face.source_path].faces += 1
    thresholds = {
        row["facematch"]["threshold"] for row in image_rows if row.get("facematch") is not None
    }
    errors = _rows(corpus_root, schemas.ERRORS, [f.name for f in schemas.ERRORS_SCHEMA], version)
    return ReportData(
        corpus_root=corpus_root,
        version=version,
        images=dict(sorted(images.items())),
        faces=faces,
        clusters=_clusters(corpus_root, version, faces),
        duplicates=_duplicates(corpus_root, version, images),
        errors=sorted(errors, key=lambda row: (row["step"], row["path"])),
        threshold=max(thresholds) if thresholds else None,
        step_counts={
            step: sum(row.get(step) is not None for row in image_rows) for step in STEP_ORDER
        },
        computed=_computed(corpus_root, version),
        last_run=_last_run(corpus_root, version),
        decisions=read_decisions(corpus_root),
        gallery=_gallery(gallery),
    )


def _gallery(gallery: str | None) -> dict[str, list[str]]:
    people: dict[str, list[str]] = {}
    for person, uri in list_gallery(gallery) if gallery else ():
        people.setdefault(person, []).append(uri)
    return people
