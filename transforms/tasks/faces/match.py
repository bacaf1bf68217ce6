"""The `facematch` step: faces matched to a gallery of known people, the rest clustered.

The gallery is a folder (any Beam filesystem path) with one sub-folder per person
holding one or more photos of them. It is read, and its faces embedded by the same
detect/align/embed transforms as the corpus, once per run; with the faces reviewers
confirmed (`decisions`) it reaches every worker as a side input. A face matches the
person whose nearest gallery photo is within the threshold, unless a reviewer said
otherwise; every face also lists its nearest people, whatever the threshold, for
review. Faces that match no one are grouped by single linkage at the same threshold,
so one unknown person across many images gets one `cluster_id`: the smallest
`face_id` in the group, a pure function of the faces.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import progress
from transforms.corpus.ingest import is_image_name
from transforms.io import storage
from transforms.per_image import ERRORS, RECORDS
from transforms.records import (
    LOCAL_BACKEND,
    READ_STEP,
    ErrorRecord,
    ImageRecord,
    ManifestEntry,
    StepName,
)
from transforms.settings import setting
from transforms.tasks.faces.crop import CropFaces
from transforms.tasks.faces.decisions import Reviewed
from transforms.tasks.faces.detection import DetectFaces, FaceDetectionSettings, box_of
from transforms.tasks.faces.embed import EmbedFaces

STEP_VERSION = "3"  # 2: ranked candidates for every face; 3: reviewers' decisions
GALLERY_STEP = "gallery"  # gallery work is reported as gallery.<step>
# A gallery photo is known to show its person: accept a less certain detection.
GALLERY_MIN_SCORE = 0.5
DEFAULT_THRESHOLD = 0.5
DEFAULT_CANDIDATES = 5
FACE_CLUSTERS = "face_clusters"
CLUSTER_ROWS = "cluster_rows"
CONFIRMED = "confirmed"  # the `decision` of a face a reviewer said is its person
NO_DECISIONS = Reviewed()
_BLOCK = 2048  # rows of the distance matrix computed at once

# A gallery person and the distance to their nearest photo, for a reviewer.
CANDIDATE = pa.struct([("person", pa.string()), ("distance", pa.float32())])
RESULT_TYPE = pa.struct(
    [
        ("step_version", pa.string()),
        ("threshold", pa.float32()),
        ("gallery_people", pa.int32()),
        (
            "matches",
            pa.list_(
                pa.struct(
                    [
                        ("face_index", pa.int32()),
                        ("face_id", pa.string()),
                        ("person", pa.string()),
                        ("distance", pa.float32()),
                        ("decision", pa.string()),
                        ("candidates", pa.list_(CANDIDATE)),
                    ]
                )
            ),
        ),
    ]
)


class GalleryError(ValueError):
    """A gallery that cannot be used; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Gallery:
    """Embeddings of known people: row i of `embeddings` shows `people[owners[i]]`.

    `face_ids[i]` names the corpus face a reviewer confirmed for row i, or is empty
    for a gallery photo: a face is never compared with itself.
    """

    people: tuple[str, ...]
    owners: np.ndarray  # (n,) int
    embeddings: np.ndarray  # (n, 128) float32
    face_ids: np.ndarray  # (n,) object

    @classmethod
    def empty(cls) -> Gallery:
        return cls.from_faces([])

    @classmethod
    def from_faces(
        cls, faces: Iterable[tuple[str, np.ndarray]], confirmed: Iterable[tuple] = ()
    ) -> Gallery:
        """The gallery of (person, embedding) photos and (person, face_id, embedding)
        faces a reviewer confirmed."""
        rows = [(person, "", embedding) for person, embedding in faces] + list(confirmed)
        rows.sort(key=lambda row: (row[0], row[1]))
        people = tuple(sorted({person for person, _, _ in rows}))
        index = {person: i for i, person in enumerate(people)}
        return cls(
            people,
            np.array([index[person] for person, _, _ in rows], np.int64),
            np.array([np.asarray(e, np.float32) for _, _, e in rows], np.float32).reshape(-1, 128),
            np.array([face for _, face, _ in rows], object),
        )

    def with_reviewed(self, reviewed: Reviewed) -> Gallery:
        """This gallery and the faces reviewers confirmed as someone."""
        photo = self.face_ids == ""
        photos = [
            (self.people[owner], embedding)
            for owner, embedding in zip(self.owners[photo], self.embeddings[photo], strict=True)
        ]
        return Gallery.from_faces(photos, reviewed.gallery_faces)


def person_distances(
    gallery: Gallery,
    embeddings: np.ndarray,
    face_ids: Sequence[str] = (),
    reviewed: Reviewed = NO_DECISIONS,
) -> np.ndarray:
    """(faces, people): each face's distance to each person's nearest photo.

    Infinite where a reviewer said the face is not that person; a face's own
    confirmed embedding does not count as a photo of its person.
    """
    distances = np.linalg.norm(embeddings[:, None, :] - gallery.embeddings[None, :, :], axis=2)
    if len(face_ids):
        distances[np.array(face_ids, object)[:, None] == gallery.face_ids[None, :]] = np.inf
    per_person = np.full((len(embeddings), len(gallery.people)), np.inf, np.float32)
    for person in range(len(gallery.people)):
        if len(embeddings):
            per_person[:, person] = distances[:, gallery.owners == person].min(axis=1)
    column = {person: i for i, person in enumerate(gallery.people)}
    for row, face in enumerate(face_ids):
        for person in reviewed.rejected.get(face, ()):
            if person in column:
                per_person[row, column[person]] = np.inf
    return per_person


def _ranked(gallery: Gallery, per_person: np.ndarray, count: int) -> list[list[tuple[str, float]]]:
    # A stable sort: people at the same distance stay in name order.
    order = np.argsort(per_person, axis=1, kind="stable")[:, :count]
    return [
        [
            (gallery.people[person], float(per_person[row, person]))
            for person in ranked
            if np.isfinite(per_person[row, person])
        ]
        for row, ranked in enumerate(order)
    ]


def _decided(ranked: list[tuple[str, float]], threshold: float) -> tuple[str | None, float | None]:
    """The nearest candidate if within `threshold`, and its distance."""
    if not ranked:
        return None, None
    person, distance = ranked[0]
    return (person if distance <= threshold else None), distance


def match_faces(
    gallery: Gallery,
    embeddings: np.ndarray,
    face_ids: Sequence[str],
    threshold: float,
    count: int,
    reviewed: Reviewed = NO_DECISIONS,
) -> list[dict[str, Any]]:
    """Each face's person, distance, ranked candidates and whether a reviewer decided.

    A face a reviewer confirmed is that person, at the distance to their nearest
    other photo (None if it is their only one); any other face is the nearest
    person within `threshold` that no reviewer rejected for it.
    """
    per_person = person_distances(gallery, embeddings, face_ids, reviewed)
    column = {person: i for i, person in enumerate(gallery.people)}
    matches = []
    for row, (face, ranked) in enumerate(
        zip(face_ids, _ranked(gallery, per_person, count), strict=True)
    ):
        person, distance, decision = *_decided(ranked, threshold), None
        if face in reviewed.confirmed:
            person, decision = reviewed.confirmed[face], CONFIRMED
            nearest = per_person[row, column[person]] if person in column else np.inf
            distance = float(nearest) if np.isfinite(nearest) else None
        candidates = [{"person": name, "distance": d} for name, d in ranked]
        matches.append(
            {"person": person, "distance": distance, "decision": decision, "candidates": candidates}
        )
    return matches


def cluster_faces(face_ids: list[str], embeddings: np.ndarray, threshold: float) -> dict[str, str]:
    """Single-linkage groups of faces closer than `threshold`: face_id -> cluster_id.

    Union-find over the distance matrix, computed in blocks so memory stays
    O(block x n); the work is O(n^2), fine up to some hundred thousand faces.
    """
    parent = list(range(len(face_ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    squared_norms = (embeddings**2).sum(axis=1)
    for start in range(0, len(face_ids), _BLOCK):
        block = embeddings[start : start + _BLOCK]
        squared = (
            squared_norms[start : start + _BLOCK, None]
            + squared_norms[None, :]
            - 2 * block @ embeddings.T
        )
        rows, columns = np.nonzero(squared <= threshold**2)
        for row, column in zip(rows + start, columns, strict=True):
            if row < column:
                parent[root(row)] = root(column)
    members: dict[int, list[str]] = {}
    for i, face in enumerate(face_ids):
        members.setdefault(root(i), []).append(face)
    return {face: min(group) for group in members.values() for face in group}


def list_gallery(gallery_root: str) -> list[tuple[str, str]]:
    """(person, uri) of every image in the gallery's person folders.

    Raises:
        GalleryError: no person folder with an image in it.
    """
    try:
        matched = storage.list_files(gallery_root, "*/*")
    except Exception as error:  # noqa: BLE001 - reported as a usage problem
        raise GalleryError(f"cannot list the gallery {gallery_root}: {error}") from error
    prefix = gallery_root.rstrip("/") + "/"
    found = []
    for path in matched:
        relative = path[len(prefix) :].replace("\\", "/")
        person, _, name = relative.partition("/")
        if person and "/" not in name and not name.startswith(".") and is_image_name(name):
            found.append((person, path))
    if not found:
        raise GalleryError(
            f"the gallery {gallery_root} has no images: it needs one sub-folder per person "
            "with one or more photos in it"
        )
    return sorted(found)


class _ReadGallery(beam.DoFn):
    """(person, uri) -> a record of the photo's bytes, or an error row if unreadable."""

    def __init__(self, corpus_version: str) -> None:
        self._corpus_version = corpus_version

    def process(self, person_and_uri: tuple[str, str]):
        person, uri = person_and_uri
        file_name = uri.rsplit("/", 1)[-1]
        entry = ManifestEntry(
            source_path=f"gallery:{person}/{file_name}",
            set_path=person,
            file_name=file_name,
            corpus_version=self._corpus_version,
            uri=uri,
            image_sha256="",
            bytes=0,
        )
        try:
            data = storage.read_bytes(uri)
        except Exception as error:  # noqa: BLE001 - reported; the run goes on
            step = gallery_step(READ_STEP)
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord.for_entry(entry, step, error))
        else:
            sha256 = hashlib.sha256(data).hexdigest()
            entry = dataclasses.replace(entry, image_sha256=sha256, bytes=len(data))
            yield ImageRecord(entry=entry, data=data)


class NoGalleryFaceError(ValueError):
    pass


def gallery_step(step: str) -> str:
    """How a step's work on the gallery is named in metrics and error rows."""
    return f"{GALLERY_STEP}.{step}"


def _area(face: dict) -> float:
    left, top, right, bottom = box_of(face)
    return (right - left) * (bottom - top)


class _LargestFace(beam.DoFn):
    """The gallery photo's subject, (person, embedding) of its largest face."""

    def process(self, record: ImageRecord):
        embeddings = record.results.get(StepName.FACE_PRINT)
        faces = record.results.get(StepName.FACE_DETECTION, {}).get("faces")
        if embeddings is None:
            pass  # an earlier step failed on this photo and reported why
        elif not faces:
            error = NoGalleryFaceError("no face found in this gallery photo")
            step = gallery_step(StepName.FACE_MATCH)
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord.for_entry(record.entry, step, error))
        else:
            largest = max(faces, key=_area)["face_index"]
            vector = next(
                e["embedding"] for e in embeddings["embeddings"] if e["face_index"] == largest
            )
            yield record.entry.set_path, np.asarray(vector, np.float32)


class _BuildGallery(beam.PTransform):
    """Reads, decodes, detects, aligns and embeds the gallery photos; one `Gallery` out."""

    def __init__(
        self,
        gallery_images: list[tuple[str, str]],
        corpus_version: str,
        decode: beam.PTransform,
        detection: FaceDetectionSettings,
    ) -> None:
        super().__init__()
        self._gallery_images = gallery_images
        self._corpus_version = corpus_version
        self._decode = decode
        self._detection = detection

    def expand(self, pipeline):
        listed = pipeline | "ListGallery" >> beam.Create(self._gallery_images)
        read = listed | "ReadGallery" >> beam.ParDo(
            _ReadGallery(self._corpus_version)
        ).with_outputs(ERRORS, main=RECORDS)
        decoded = read[RECORDS] | "Decode" >> self._decode
        # Gallery photos are few: they always go through the local detector.
        local = dataclasses.replace(
            self._detection,
            backend=LOCAL_BACKEND,
            grid=1,
            min_score=min(self._detection.min_score, GALLERY_MIN_SCORE),
        )
        detected = decoded[RECORDS] | "DetectFaces" >> DetectFaces(
            local, step=gallery_step(StepName.FACE_DETECTION)
        )
        cropped = detected[RECORDS] | "AlignFaces" >> CropFaces(
            None, step=gallery_step(StepName.FACE_CROP)
        )
        embedded = cropped[RECORDS] | "EmbedFaces" >> EmbedFaces(
            step=gallery_step(StepName.FACE_PRINT)
        )
        faces = embedded[RECORDS] | "LargestFace" >> beam.ParDo(_LargestFace()).with_outputs(
            ERRORS, main="faces"
        )
        gallery = (
            faces.faces
            | "Collect" >> beam.combiners.ToList()
            | "Gallery" >> beam.Map(Gallery.from_faces)
        )
        errors = (
            read[ERRORS],
            decoded[ERRORS],
            detected[ERRORS],
            cropped[ERRORS],
            embedded[ERRORS],
            faces[ERRORS],
        ) | "GalleryErrors" >> beam.Flatten()
        return gallery, errors


def _match(
    record: ImageRecord, gallery: Gallery, threshold: float, candidates: int, reviewed: Reviewed
) -> ImageRecord:
    if record.results.get(StepName.FACE_PRINT) is None:
        progress.counter(StepName.FACE_MATCH, "skipped_upstream_failed").inc()
        return record
    embeddings = record.results[StepName.FACE_PRINT]["embeddings"]
    vectors = np.array([e["embedding"] for e in embeddings], np.float32).reshape(-1, 128)
    face_ids = [e["face_id"] for e in embeddings]
    matches = match_faces(gallery, vectors, face_ids, threshold, candidates, reviewed)
    for embedding, match in zip(embeddings, matches, strict=True):
        match.update(face_index=embedding["face_index"], face_id=embedding["face_id"])
        matched = "faces_matched" if match["person"] else "faces_unmatched"
        Metrics.counter(StepName.FACE_MATCH, matched).inc()
    progress.counter(StepName.FACE_MATCH, "processed").inc()
    result = {
        "step_version": STEP_VERSION,
        "threshold": threshold,
        "gallery_people": len(gallery.people),
        "matches": matches,
    }
    return record.with_result(StepName.FACE_MATCH, result)


def _unmatched_faces(record: ImageRecord):
    """(face_id, (embedding, nearest candidate or None)) of faces that matched no one."""
    result = record.results.get(StepName.FACE_MATCH)
    if result is None:
        return
    embeddings = {
        e["face_id"]: e["embedding"] for e in record.results[StepName.FACE_PRINT]["embeddings"]
    }
    for match in result["matches"]:
        if match["person"] is None:
            nearest = match["candidates"][0] if match["candidates"] else None
            yield match["face_id"], (embeddings[match["face_id"]], nearest)


def _clusters(faces: list[tuple[str, Any]], threshold: float):
    """(face_id, cluster_id) of every unmatched face, and a `clusters` row per cluster:
    its size and the gallery person nearest to any of its faces."""
    unique = dict(faces)  # an image present at two paths has the same faces
    face_ids = sorted(unique)
    if not face_ids:
        return
    vectors = np.array([unique[face][0] for face in face_ids], np.float32)
    clusters = cluster_faces(face_ids, vectors, threshold)
    yield from sorted(clusters.items())
    members: dict[str, list[str]] = {}
    for face, cluster in clusters.items():
        members.setdefault(cluster, []).append(face)
    for cluster, faces_in in sorted(members.items()):
        nearby = [unique[face][1] for face in faces_in if unique[face][1] is not None]
        nearest = min(nearby, key=lambda c: (c["distance"], c["person"]), default=None)
        row = {
            "cluster_id": cluster,
            "size": len(faces_in),
            "nearest_person": nearest and nearest["person"],
            "distance": nearest and nearest["distance"],
        }
        yield beam.pvalue.TaggedOutput(CLUSTER_ROWS, row)


@dataclasses.dataclass(frozen=True)
class FaceMatchSettings:
    gallery: str | None = setting(
        None,
        "folder of known people, one sub-folder per person with their photos "
        "(any corpus path); without it faces are only clustered",
        flag="--gallery",
    )
    threshold: float = setting(
        DEFAULT_THRESHOLD,
        "largest face-embedding distance counted as the same person; also links "
        "unknown faces into clusters",
        flag="--match-threshold",
    )

    candidates: int = setting(
        DEFAULT_CANDIDATES,
        "gallery people listed for every face, nearest first, whatever the threshold: "
        "the leads a reviewer checks",
        flag="--match-candidates",
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 2.0:
            raise ValueError(f"--match-threshold must be between 0 and 2, got {self.threshold}")
        if not 1 <= self.candidates <= 100:
            raise ValueError(f"--match-candidates must be 1-100, got {self.candidates}")


@dataclasses.dataclass(eq=False)
class MatchFaces(beam.PTransform):
    """Matches faces to a gallery of known people and clusters the unknown ones.

    Args:
        gallery_images: (person, uri) pairs, from `list_gallery`; may be empty.
        corpus_version: the run's version, for gallery error rows.
        decode: decodes the gallery photos (named `gallery_step("decode")`).
        settings: the largest embedding distance that counts as the same person.
        detection: the corpus's detector settings, reused on the gallery with the
            local model.
        reviewed: reviewers' decisions: confirmed faces join the gallery; rejected
            people are never a face's match or candidate.
        cluster: group the faces that match no one (a pipeline that never ends,
            such as a watch, cannot: the grouping waits for every face).

    Returns:
        Outputs `records` (with a `facematch` result), `errors` (including gallery
        photos without a usable face), `face_clusters` ((face_id, cluster_id)
        for every face that matched no one) and `cluster_rows` (a `clusters` row each).
    """

    gallery_images: list[tuple[str, str]]
    corpus_version: str
    decode: beam.PTransform
    settings: FaceMatchSettings = FaceMatchSettings()
    detection: FaceDetectionSettings = FaceDetectionSettings()
    reviewed: Reviewed = NO_DECISIONS
    cluster: bool = True

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, records):
        threshold = self.settings.threshold
        if self.gallery_images:
            gallery, gallery_errors = records.pipeline | "BuildGallery" >> _BuildGallery(
                self.gallery_images, self.corpus_version, self.decode, self.detection
            )
        else:
            gallery_errors = records.pipeline | "NoGalleryErrors" >> beam.Create([])
            gallery = records.pipeline | "EmptyGallery" >> beam.Create([Gallery.empty()])
        gallery = gallery | "WithReviewedFaces" >> beam.Map(Gallery.with_reviewed, self.reviewed)
        matched = records | "Match" >> beam.Map(
            _match,
            beam.pvalue.AsSingleton(gallery),
            threshold,
            self.settings.candidates,
            self.reviewed,
        )
        if not self.cluster:
            return {
                RECORDS: matched,
                ERRORS: gallery_errors,
                FACE_CLUSTERS: records.pipeline | "NoClusters" >> beam.Create([]),
                CLUSTER_ROWS: records.pipeline | "NoClusterRows" >> beam.Create([]),
            }
        clusters = (
            matched
            | "UnmatchedFaces" >> beam.FlatMap(_unmatched_faces)
            | "CollectUnmatched" >> beam.combiners.ToList()
            | "Cluster"
            >> beam.FlatMap(_clusters, threshold).with_outputs(CLUSTER_ROWS, main=FACE_CLUSTERS)
        )
        return {
            RECORDS: matched,
            ERRORS: gallery_errors,
            FACE_CLUSTERS: clusters[FACE_CLUSTERS],
            CLUSTER_ROWS: clusters[CLUSTER_ROWS],
        }
