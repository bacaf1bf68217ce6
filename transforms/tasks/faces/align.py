"""Turning a detected face upright before landmarks and the aligned chip.

dlib's 5-point landmark model expects roughly upright faces. BlazeFace's eye
keypoints give the face's roll, so each face is first resampled from the image
into an upright square around it; landmarks found there are mapped back.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

REGION_SCALE = 2.0  # region side / face side: room for the chip's padding
MAX_REGION_SIDE = 400  # larger faces are downsampled: the chip is 150 px anyway


@dataclasses.dataclass(frozen=True)
class UprightFace:
    """A face resampled upright, and the affine map back to the image."""

    pixels: np.ndarray  # (side, side, 3) uint8
    face_box: tuple[int, int, int, int]  # left, top, right, bottom in `pixels`
    affine: tuple[float, float, float, float, float, float]  # region (u, v) -> image (x, y)

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        """Region -> image, in continuous coordinates (pixel i spans [i, i + 1))."""
        a, b, c, d, e, f = self.affine
        return a * u + b * v + c, d * u + e * v + f

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes


def roll_radians(right_eye: tuple[float, float], left_eye: tuple[float, float]) -> float:
    """Angle of the line from the subject's right eye to their left eye (0 if level)."""
    return math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])


def _resample(
    image: Image.Image, affine: tuple[float, ...], side: int, region_side: float
) -> Image.Image:
    """Samples the region; a region shrunk 2x or more is first box-averaged down.

    `transform` does not filter, so shrinking with it alone would alias.
    """
    factor = int(region_side / side)
    if factor < 2:
        return image.transform(
            (side, side), Image.Transform.AFFINE, affine, resample=Image.Resampling.BILINEAR
        )
    a, b, c, d, e, f = affine
    reach = region_side * 0.75  # covers the rotated square around the centre
    centre_x, centre_y = a * side / 2 + b * side / 2 + c, d * side / 2 + e * side / 2 + f
    left, top = math.floor(centre_x - reach), math.floor(centre_y - reach)
    size = math.ceil(2 * reach) + 1
    reduced = image.crop((left, top, left + size, top + size)).reduce(factor)
    local = (
        a / factor,
        b / factor,
        (c - left) / factor,
        d / factor,
        e / factor,
        (f - top) / factor,
    )
    return reduced.transform(
        (side, side), Image.Transform.AFFINE, local, resample=Image.Resampling.BILINEAR
    )


def upright_face(
    image: Image.Image,
    box: tuple[float, float, float, float],
    right_eye: tuple[float, float],
    left_eye: tuple[float, float],
) -> UprightFace:
    left, top, right, bottom = box
    face_side = max(right - left, bottom - top, 1.0)
    region_side = face_side * REGION_SCALE
    side = int(min(MAX_REGION_SIDE, max(32, round(region_side))))
    scale = region_side / side
    angle = roll_radians(right_eye, left_eye)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    half = side / 2
    affine = (
        cos,
        -sin,
        centre_x - cos * half + sin * half,
        sin,
        cos,
        centre_y - sin * half - cos * half,
    )
    pixels = _resample(image, affine, side, region_side)
    half_face = face_side / scale / 2
    face_box = (
        round(half - half_face),
        round(half - half_face),
        round(half + half_face),
        round(half + half_face),
    )
    return UprightFace(np.asarray(pixels), face_box, affine)
