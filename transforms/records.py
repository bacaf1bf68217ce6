"""Typed records that flow between pipeline steps."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from PIL import Image

from transforms import paths


class StepName(enum.StrEnum):
    """Built-in step names, as written in a pipeline definition."""

    DECODE = "decode"
    THUMBNAIL = "thumbnail"
    PHASH = "phash"
    GENERAL_CLASSIFICATION = "generalclassification"
    OCR = "ocr"
    FACE_DETECTION = "facedetection"
    FACE_CROP = "facecrop"
    FACE_PRINT = "faceprint"
    FACE_MATCH = "facematch"
    PIPELINE_OUTPUT = "pipelineoutput"


# What `backend` says in a result made by a model that ran here.
LOCAL_BACKEND = "local"

# Errors found before any step runs are reported under these pseudo-steps.
INGEST_STEP = "ingest"
READ_STEP = "read"


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One file of a drop, as recorded by ingest (a row of the `manifest` table)."""

    source_path: str
    set_path: str
    file_name: str
    corpus_version: str
    uri: str
    image_sha256: str
    bytes: int
    rejected_reason: str = ""
    # The original elsewhere in the corpus these bytes were linked or copied from.
    same_bytes_as: str | None = None

    @property
    def tags(self) -> list[str]:
        return paths.tags_of(self.set_path)

    def transform_uri(
        self, corpus_root: str, transform_name: str, transform_version: str, file_name: str
    ) -> str:
        """Where a transform of this file goes: beside its set path and corpus version."""
        return paths.transform_uri(
            corpus_root,
            transform_name,
            transform_version,
            self.set_path,
            self.corpus_version,
            file_name,
        )


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image travelling through the steps.

    `data` holds the original file bytes until decode; `image` holds the decoded,
    EXIF-oriented RGB pixels for the steps that need them. Neither is written to a
    table. Each step adds its result under its own name in `results`, and may leave
    data for later steps (never written) under its name in `artifacts`. Results found
    in the result store are in `results` from the start, and their steps are not
    `pending`.
    """

    entry: ManifestEntry
    data: bytes | None = None
    image: Image.Image | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    frames: int | None = None
    # The file's pixels per pixel of `image`: boxes are found in `image` and stored
    # in the file's pixels.
    scale: float = 1.0
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Steps still to run on this image (None: all); the others' results are stored.
    pending: frozenset[str] | None = None
    # Steps whose stored result was loaded (one may still run again for a later step).
    reused: frozenset[str] = frozenset()
    # Other files of the version with the same bytes: they share this record's results.
    aliases: tuple[ManifestEntry, ...] = ()
    # The shard of the version it was read in (a range of content hashes), if any.
    shard: int | None = None

    def must_run(self, step: str) -> bool:
        return self.pending is None or step in self.pending

    @property
    def entries(self) -> tuple[ManifestEntry, ...]:
        return (self.entry, *self.aliases)

    def without_pixels(self) -> ImageRecord:
        """The record with only its metadata and results: cheap to move between workers."""
        return dataclasses.replace(self, data=None, image=None, artifacts={})

    def with_result(self, step: str, result: Any, artifact: Any = None) -> ImageRecord:
        artifacts = self.artifacts if artifact is None else {**self.artifacts, step: artifact}
        return dataclasses.replace(
            self, results={**self.results, step: result}, artifacts=artifacts
        )


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    """Why one file failed one step (a row of the `errors` table; `path` is in the drop)."""

    corpus_version: str
    path: str
    uri: str
    image_sha256: str
    step: str
    error_type: str
    message: str

    @classmethod
    def for_entry(cls, entry: ManifestEntry, step: str, error: BaseException) -> ErrorRecord:
        return cls(
            corpus_version=entry.corpus_version,
            path=entry.source_path,
            uri=entry.uri,
            image_sha256=entry.image_sha256,
            step=step,
            error_type=type(error).__name__,
            message=str(error)[:2000] or type(error).__name__,
        )


# What `decode` learns about an image, kept in its stored result so that a run whose
# steps are all stored still fills them without decoding again.
DECODED_FIELDS = ("format", "width", "height", "mode", "frames")


def with_decoded(decode_result: dict[str, Any]) -> dict[str, Any]:
    """The record fields a stored `decode` result fills."""
    return {name: decode_result.get(name) for name in DECODED_FIELDS}
