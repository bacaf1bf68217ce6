"""The `thumbnail` step: a versioned JPEG thumbnail of every image."""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Any

import apache_beam as beam
import pyarrow as pa
from PIL import Image

from transforms import paths
from transforms.io import storage
from transforms.per_image import ApplyToEachImage, Outcome
from transforms.records import ImageRecord, StepName
from transforms.settings import setting
from transforms.tables.transforms import TransformSpec
from transforms.tasks.base import Step, StepContext

STEP_VERSION = "1"
TRANSFORM_NAME = "thumbnail"
DEFAULT_MAX_SIDE = 256
DEFAULT_QUALITY = 85
DEFAULT_TRANSFORM_VERSION = "1"

RESULT_TYPE = pa.struct(
    [
        ("step_version", pa.string()),
        ("transform_version", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)


def thumbnail_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Fits (width, height) inside max_side x max_side, never enlarging."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail_name(file_name: str) -> str:
    """`photo.png` -> `photo.png.jpg`: appending keeps names from ever colliding."""
    return f"{file_name}.jpg"


def encode_thumbnail(image: Image.Image, size: tuple[int, int], quality: int) -> bytes:
    resized = image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def make_thumbnail(
    record: ImageRecord, corpus_root: str, max_side: int, quality: int, transform_version: str
) -> tuple[ImageRecord, Outcome]:
    """Writes one thumbnail unless it exists; records where it is either way."""
    entry = record.entry
    uri = entry.transform_uri(
        corpus_root, TRANSFORM_NAME, transform_version, thumbnail_name(entry.file_name)
    )
    size = thumbnail_size(record.image.width, record.image.height, max_side)
    wrote = storage.write_unless_exists(uri, lambda: encode_thumbnail(record.image, size, quality))
    outcome = Outcome.PROCESSED if wrote else Outcome.SKIPPED_EXISTING
    result = {
        "step_version": STEP_VERSION,
        "transform_version": transform_version,
        "uri": uri,
        "width": size[0],
        "height": size[1],
    }
    return record.with_result(StepName.THUMBNAIL, result), outcome


@dataclasses.dataclass(frozen=True)
class ThumbnailSettings:
    max_side: int = setting(DEFAULT_MAX_SIDE, "longest side of thumbnails in pixels")
    quality: int = setting(DEFAULT_QUALITY, "JPEG quality of thumbnails")
    version: str = setting(
        DEFAULT_TRANSFORM_VERSION, "transform version; use a new one to change size or quality"
    )

    def __post_init__(self) -> None:
        if not 8 <= self.max_side <= 4096:
            raise ValueError(f"--thumbnail-max-side must be 8-4096, got {self.max_side}")
        if not 1 <= self.quality <= 95:
            raise ValueError(f"--thumbnail-quality must be 1-95, got {self.quality}")
        paths.check_version(self.version, "thumbnail version")

    def parameters(self) -> dict[str, Any]:
        """What the transform version stands for (a row of the `transforms` table)."""
        return {"max_side": self.max_side, "quality": self.quality, "format": "JPEG"}


@dataclasses.dataclass(eq=False)
class MakeThumbnails(beam.PTransform):
    """Writes a JPEG thumbnail per image under the transform version's own tree.

    Existing thumbnails are not rewritten: the path is a pure function of the
    transform version, set path, corpus version and file name.

    Args:
        corpus_root: where the `transform/` tree lives.
        settings: longest side, JPEG quality and transform version (a new version
            is written next to the old ones).

    Returns:
        Outputs `records` (with a `thumbnail` result) and `errors`.
    """

    corpus_root: str
    settings: ThumbnailSettings = ThumbnailSettings()

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, records):
        make = functools.partial(
            make_thumbnail,
            corpus_root=self.corpus_root,
            max_side=self.settings.max_side,
            quality=self.settings.quality,
            transform_version=self.settings.version,
        )
        return records | ApplyToEachImage(StepName.THUMBNAIL, make)


def _build(context: StepContext) -> MakeThumbnails:
    return MakeThumbnails(context.corpus_root, context.settings_for(ThumbnailSettings))


def _result_parameters(context: StepContext) -> dict[str, Any]:
    settings = context.settings_for(ThumbnailSettings)
    return {"transform_version": settings.version, **settings.parameters()}


def _transform_spec(context: StepContext) -> TransformSpec:
    settings = context.settings_for(ThumbnailSettings)
    return TransformSpec(TRANSFORM_NAME, settings.version, STEP_VERSION, settings.parameters())


STEP = Step(
    name=StepName.THUMBNAIL,
    version=STEP_VERSION,
    build=_build,
    depends_on=(StepName.DECODE,),
    result_type=RESULT_TYPE,
    settings=ThumbnailSettings,
    transform_spec=_transform_spec,
    description="JPEG thumbnail under transform/thumbnail/<version>/",
    parameters=_result_parameters,
)
