"""The `phash` step: a perceptual hash of each image, to find near-duplicates.

The hash is the classic DCT hash: the decoded, EXIF-oriented pixels shrunk to
32x32 and made grey, and one bit per coefficient of the 8x8 lowest frequencies of
their DCT: above their median or not. Resizing, re-encoding and small crops barely
move those frequencies; a different photo moves about half the bits.

Mirroring the image negates the coefficients of odd horizontal frequency, so the
mirrored copy's hash is computed from the same coefficients, for free: with
`--phash-mirrored yes` a mirrored copy groups with its original.

Which images group is decided after the run, over every version
(`transforms.tables.duplicates`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import scipy.fft
from PIL import Image

from transforms.per_image import ApplyToEachImage, Outcome
from transforms.records import ImageRecord, StepName
from transforms.settings import setting
from transforms.tasks.base import Step, StepContext

STEP_VERSION = "1"
HASH = "dct-32x32-8x8"  # how the hash is made: the stored results' parameter
SHRUNK_SIDE = 32
HASH_SIDE = 8
HASH_BITS = HASH_SIDE * HASH_SIDE
REDUCING_GAP = 3.0
# Measured with `bench.near_duplicates`: copies resized, re-encoded, cropped up to
# 5 % or rotated by EXIF are within 12 bits of their original on natural photos,
# different photos at least 20 apart, the same scene re-framed by 10 % at least 22.
DEFAULT_MAX_DISTANCE = 10
YES, NO = "yes", "no"

RESULT_TYPE = pa.struct(
    [
        ("step_version", pa.string()),
        ("hash", pa.string()),  # 64 bits as 16 hex digits
        ("mirrored", pa.string()),  # the hash of the image mirrored left to right
    ]
)


def _bits_as_hex(bits: np.ndarray) -> str:
    return f"{int(''.join('1' if bit else '0' for bit in bits), 2):0{HASH_BITS // 4}x}"


def perceptual_hashes(image: Image.Image) -> tuple[str, str]:
    """(hash, hash of the mirrored image), each 64 bits as hex."""
    # Shrunk by whole factors first (`reducing_gap`): a 12 MP photo in 8 ms, not 55.
    grey = image.resize(
        (SHRUNK_SIDE, SHRUNK_SIDE), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP
    ).convert("L")
    coefficients = scipy.fft.dctn(np.asarray(grey, dtype=np.float64), type=2)
    low = coefficients[:HASH_SIDE, :HASH_SIDE]
    # Mirroring flips the sign of every odd horizontal frequency.
    mirrored = low * np.where(np.arange(HASH_SIDE) % 2, -1.0, 1.0)
    return (
        _bits_as_hex((low > np.median(low)).ravel()),
        _bits_as_hex((mirrored > np.median(mirrored)).ravel()),
    )


def hash_image(record: ImageRecord) -> tuple[ImageRecord, Outcome]:
    hashed, mirrored = perceptual_hashes(record.image)
    result = {"step_version": STEP_VERSION, "hash": hashed, "mirrored": mirrored}
    return record.with_result(StepName.PHASH, result), Outcome.PROCESSED


@dataclasses.dataclass(frozen=True)
class PhashSettings:
    max_distance: int = setting(
        DEFAULT_MAX_DISTANCE,
        f"images whose hashes differ in at most this many of their {HASH_BITS} bits are "
        "near-duplicates",
    )
    mirrored: str = setting(
        NO, "a copy mirrored left to right is a near-duplicate too", choices=(NO, YES)
    )

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= HASH_BITS // 4:
            raise ValueError(
                f"--phash-max-distance must be 0-{HASH_BITS // 4} (bits of {HASH_BITS}); "
                f"different photos are about {HASH_BITS // 2} apart, got {self.max_distance}"
            )
        if self.mirrored not in (NO, YES):
            raise ValueError(f"--phash-mirrored must be {NO} or {YES}, got {self.mirrored!r}")


def _build(context: StepContext) -> ApplyToEachImage:
    return ApplyToEachImage(StepName.PHASH, hash_image)


STEP = Step(
    name=StepName.PHASH,
    version=STEP_VERSION,
    build=_build,
    result_type=RESULT_TYPE,
    settings=PhashSettings,
    parameters=lambda context: {"hash": HASH},
    description="perceptual hash; near-duplicates across versions go to the duplicates table",
)
