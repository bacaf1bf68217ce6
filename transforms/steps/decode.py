"""The `decode` step: file bytes to oriented RGB pixels, once per image."""

from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam

from transforms.decode import DEFAULT_MAX_PIXELS, HARD_MAX_PIXELS, decode_image, heif_available
from transforms.records import ImageRecord, StepName
from transforms.steps.base import ApplyToEachImage, Outcome, Step

STEP_VERSION = "1"


def decode_record(
    record: ImageRecord, max_pixels: int, allow_heif: bool
) -> tuple[ImageRecord, Outcome]:
    """Decodes a record's bytes; the bytes are dropped once the pixels exist."""
    decoded = decode_image(record.data or b"", max_pixels=max_pixels, allow_heif=allow_heif)
    fields = {
        "width": decoded.image.width,
        "height": decoded.image.height,
        "format": decoded.format,
        "mode": decoded.mode,
        "frames": decoded.frames,
    }
    updated = dataclasses.replace(record, data=None, image=decoded.image, **fields)
    return (
        updated.with_result(StepName.DECODE, {"step_version": STEP_VERSION, **fields}),
        Outcome.PROCESSED,
    )


class _DecodeFunction:
    """Picklable per-image callable that registers the HEIF opener on first use."""

    def __init__(self, max_pixels: int) -> None:
        self._max_pixels = max_pixels
        self._allow_heif: bool | None = None

    def __call__(self, record: ImageRecord) -> tuple[ImageRecord, Outcome]:
        if self._allow_heif is None:
            self._allow_heif = heif_available()
        return decode_record(record, self._max_pixels, self._allow_heif)


@dataclasses.dataclass(eq=False)
class DecodeImages(beam.PTransform):
    """Decodes every image once; undecodable files go to `errors` and stop there.

    Args:
        max_pixels: images with more pixels are refused as likely decompression bombs.

    Returns:
        Outputs `records` (decoded) and `errors` (why a file is not an image).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    step: str = StepName.DECODE  # metrics namespace and error rows

    def __post_init__(self) -> None:
        super().__init__()
        if not 1 <= self.max_pixels <= HARD_MAX_PIXELS:
            raise ValueError(
                f"--max-pixels must be between 1 and {HARD_MAX_PIXELS:,}, got {self.max_pixels}"
            )

    def expand(self, records):
        return records | ApplyToEachImage(
            self.step, _DecodeFunction(self.max_pixels), drop_failed=True, needs_pixels=False
        )


def _add_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images with more pixels than this (decompression bombs); default %(default)s",
    )


def _max_pixels(context) -> int:
    return context.option("max_pixels", DEFAULT_MAX_PIXELS)


STEP = Step(
    name=StepName.DECODE,
    version=STEP_VERSION,
    build=lambda context: DecodeImages(max_pixels=_max_pixels(context)),
    add_options=_add_options,
    description="decode once: EXIF orientation, 8-bit RGB, pixel limit",
    parameters=lambda context: {"max_pixels": _max_pixels(context)},
    hands_on=True,  # the pixels every pixel step reads
)
