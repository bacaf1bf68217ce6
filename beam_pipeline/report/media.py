"""The report's pictures, copied into its folder so it needs nothing else.

Face chips and thumbnails the pipeline made are copied as they are; where a step
did not run, a picture is made from the original (a chip cut out along the face's
box). Names are the face's id or the image's hash, so a picture already in the
folder is never made again. Pictures that cannot be had are left out, and the
pages show a placeholder instead of a broken image.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from transforms.io import storage
from transforms.tasks.decode import DecodeError, decode_image

THUMBNAIL_SIDE = 256
CHIP_SIDE = 150
# Remote stores answer many reads at once; a local disk does not mind.
PARALLEL_READS = 16


@dataclasses.dataclass(frozen=True)
class Picture:
    """One file of the report: where it goes, and how it is had."""

    path: str  # relative to the report folder
    source: str  # the uri it comes from
    copy: bool  # True: the bytes as they are; False: made from the original
    box: tuple[float, float, float, float] | None = None  # crop first (file pixels)
    side: int = THUMBNAIL_SIDE


def _made(picture: Picture) -> bytes:
    decoded = decode_image(storage.read_bytes(picture.source))
    image = decoded.image
    if picture.box:
        scale = decoded.scale
        left, top, right, bottom = (value / scale for value in picture.box)
        image = image.crop((int(left), int(top), int(right + 0.5), int(bottom + 0.5)))
    image.thumbnail((picture.side, picture.side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _write(folder: str, picture: Picture) -> str | None:
    """Writes one picture unless present; its path, or None if it cannot be had."""

    def picture_bytes() -> bytes:
        return storage.read_bytes(picture.source) if picture.copy else _made(picture)

    try:
        storage.write_unless_exists(os.path.join(folder, picture.path), picture_bytes)
    except (OSError, DecodeError, ValueError, Image.DecompressionBombError):
        return None
    return picture.path


def write_pictures(
    folder: str, pictures: Iterable[Picture], done: Callable[[], None] = lambda: None
) -> set[str]:
    """Writes every picture into `folder`; returns the paths that exist afterwards."""
    unique = {picture.path: picture for picture in pictures}

    def one(picture: Picture) -> str | None:
        written = _write(folder, picture)
        done()
        return written

    with ThreadPoolExecutor(PARALLEL_READS) as pool:
        return {path for path in pool.map(one, unique.values()) if path}
