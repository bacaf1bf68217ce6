"""Which copies of a photo the `phash` step groups with it, and which photos it keeps apart.

The set: sample photos, each also cut into quadrants (more different photos, with
the same colours and texture as their neighbours); copies of every photo resized,
re-encoded, cropped a few per cent, rotated by an EXIF tag and mirrored; and the
same scene taken twice: re-framed by 10 and 20 % (a pan), and the stereo pair of
skimage's motorcycle (two cameras a few centimetres apart). Every file goes through
the pipeline's own decoder, so an EXIF-rotated copy is hashed upright as in a run.

    python -m bench.near_duplicates               # grouping by distance threshold
    python -m bench.near_duplicates --timing      # and the cost of hashing and grouping
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import statistics
import time

import numpy as np
import skimage.data
from PIL import Image, ImageOps
from sklearn.datasets import load_sample_image

from transforms.tables.duplicates import HashedFile, group_rows
from transforms.tasks.decode import decode_image
from transforms.tasks.phash import perceptual_hashes

SKIMAGE_PHOTOS = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "horse.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "coins.png",
    "moon.png",
    "page.png",
    "text.png",
    "ihc.png",
]
SKLEARN_PHOTOS = ["china.jpg", "flower.jpg"]
# Copies that must group with their original; `mirrored` only with --phash-mirrored.
COPIES = ("half", "quarter", "jpeg-q40", "jpeg-q20", "crop-2pc", "crop-4pc", "exif-rotated")
MIRRORED = "mirrored"
PANS = (0.1, 0.2)
THRESHOLDS = (4, 6, 8, 10, 12, 14, 16)


@dataclasses.dataclass(frozen=True)
class Photo:
    name: str  # "<photo>" or "<photo>#<copy>"
    data: bytes  # the file, as a drop would hold it

    @property
    def original(self) -> str:
        return self.name.split("#")[0]

    @property
    def kind(self) -> str:
        return self.name.split("#")[1] if "#" in self.name else "original"


def _encoded(image: Image.Image, file_format: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **params)
    return buffer.getvalue()


def _cropped(image: Image.Image, share: float) -> Image.Image:
    """`share` of the width and height cut off, half on each side."""
    dx, dy = round(image.width * share / 2), round(image.height * share / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def _exif_rotated(image: Image.Image) -> bytes:
    """Pixels stored turned a quarter, with the EXIF tag (6) that turns them back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = image.transpose(Image.Transpose.ROTATE_90)
    return _encoded(stored, "JPEG", quality=90, exif=exif.tobytes())


def copies(name: str, image: Image.Image) -> list[Photo]:
    """The original, and each copy that must group with it."""
    made = {
        "half": _encoded(image.resize((image.width // 2, image.height // 2))),
        "quarter": _encoded(image.resize((image.width // 4, image.height // 4))),
        "jpeg-q40": _encoded(image, "JPEG", quality=40),
        "jpeg-q20": _encoded(image, "JPEG", quality=20),
        "crop-2pc": _encoded(_cropped(image, 0.02)),
        "crop-4pc": _encoded(_cropped(image, 0.04)),
        "exif-rotated": _exif_rotated(image),
        MIRRORED: _encoded(ImageOps.mirror(image)),
    }
    return [Photo(name, _encoded(image))] + [
        Photo(f"{name}#{kind}", data) for kind, data in made.items()
    ]


def _quadrants(name: str, image: Image.Image) -> dict[str, Image.Image]:
    half_width, half_height = image.width // 2, image.height // 2
    return {
        f"{name}[{column},{row}]": image.crop(
            (
                column * half_width,
                row * half_height,
                (column + 1) * half_width,
                (row + 1) * half_height,
            )
        )
        for column in (0, 1)
        for row in (0, 1)
    }


def same_scene_pairs(photos: dict[str, Image.Image]) -> list[tuple[Photo, Photo]]:
    """Two photos of one scene, framed differently: pans, and a stereo pair."""
    pairs = []
    for name, image in photos.items():
        for shift in PANS:
            kept = round(image.width * (1 - shift))
            left = image.crop((0, 0, kept, image.height))
            right = image.crop((image.width - kept, 0, image.width, image.height))
            pairs.append(
                (
                    Photo(f"{name}#pan-{shift:g}-left", _encoded(left)),
                    Photo(f"{name}#pan-{shift:g}-right", _encoded(right)),
                )
            )
    left, right, _ = skimage.data.stereo_motorcycle()
    pairs.append(
        (
            Photo("motorcycle#stereo-left", _encoded(Image.fromarray(left))),
            Photo("motorcycle#stereo-right", _encoded(Image.fromarray(right))),
        )
    )
    return pairs


def sample_photos() -> dict[str, Image.Image]:
    folder = os.path.dirname(skimage.data.__file__)
    photos = {
        name: Image.open(os.path.join(folder, name)).convert("RGB") for name in SKIMAGE_PHOTOS
    }
    photos.update({name: Image.fromarray(load_sample_image(name)) for name in SKLEARN_PHOTOS})
    return photos


def near_duplicate_set() -> tuple[list[Photo], list[tuple[Photo, Photo]]]:
    """(every photo and quadrant with its copies, same-scene pairs)."""
    photos = sample_photos()
    everything = dict(photos)
    for name, image in photos.items():
        everything.update(_quadrants(name, image))
    files = [photo for name, image in everything.items() for photo in copies(name, image)]
    return files, same_scene_pairs(photos)


def hashed(photo: Photo, version: str = "v1") -> HashedFile:
    image = decode_image(photo.data).image
    digest, mirrored = perceptual_hashes(image)
    return HashedFile(version, photo.name, photo.name, int(digest, 16), int(mirrored, 16))


@dataclasses.dataclass
class Grouped:
    """How one threshold groups the set."""

    threshold: int
    copies_grouped: dict[str, list[int]]  # copy kind -> [grouped, total]
    wrongly_joined: int  # different photos (or quadrants) in one group
    same_scene_grouped: list[str]

    def summary(self) -> dict:
        return {
            "threshold": self.threshold,
            "copies_grouped": {kind: f"{a}/{b}" for kind, (a, b) in self.copies_grouped.items()},
            "different_photos_joined": self.wrongly_joined,
            "same_scene_pairs_grouped": self.same_scene_grouped,
        }


def evaluate(
    files: list[HashedFile],
    pairs: list[tuple[HashedFile, HashedFile]],
    threshold: int,
    mirrored: bool = False,
) -> Grouped:
    """Groups the copies and, separately, each same-scene pair."""
    kinds = [*COPIES, MIRRORED] if mirrored else list(COPIES)
    wanted = [file for file in files if Photo(file.source_path, b"").kind in (*kinds, "original")]
    group_of = {
        row["source_path"]: row["group_id"] for row in group_rows(wanted, threshold, mirrored)
    }
    grouped = {kind: [0, 0] for kind in kinds}
    originals_per_group: dict[str, set[str]] = {}
    for file in wanted:
        photo = Photo(file.source_path, b"")
        if (group := group_of.get(photo.name)) is not None:
            originals_per_group.setdefault(group, set()).add(photo.original)
        if photo.kind in grouped:
            grouped[photo.kind][1] += 1
            same = group is not None and group == group_of.get(photo.original)
            grouped[photo.kind][0] += same
    joined = sum(len(originals) - 1 for originals in originals_per_group.values())
    scene = [
        a.source_path.split("#")[0] + " " + a.source_path.split("#")[1].rsplit("-", 1)[0]
        for a, b in pairs
        if group_rows([a, b], threshold, mirrored)
    ]
    return Grouped(threshold, grouped, joined, scene)


def _timing(photos: dict[str, Image.Image], repeats: int = 5) -> dict:
    """Median ms to hash a photo at phone and camera sizes, and to group N hashes."""
    times = {}
    for side in (1024, 4000):
        image = photos["china.jpg"].resize((side, side * 3 // 4))
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            perceptual_hashes(image)
            runs.append((time.perf_counter() - started) * 1000)
        times[f"hash_ms_{side}px"] = round(statistics.median(runs), 2)
    rng = np.random.default_rng(3)
    for count in (10_000, 100_000):
        files = [
            HashedFile("v1", str(index), str(index), int(value), int(value))
            for index, value in enumerate(rng.integers(0, 2**63, count, dtype=np.int64))
        ]
        started = time.perf_counter()
        group_rows(files, 10, False)
        times[f"group_s_{count}"] = round(time.perf_counter() - started, 2)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing", action="store_true", help="also time hashing and grouping")
    args = parser.parse_args()
    photos, pairs = near_duplicate_set()
    files = [hashed(photo) for photo in photos]
    hashed_pairs = [(hashed(a), hashed(b)) for a, b in pairs]
    originals = len({photo.original for photo in photos})
    print(json.dumps({"photos": originals, "files": len(files), "same_scene_pairs": len(pairs)}))
    for mirrored in (False, True):
        for threshold in THRESHOLDS:
            result = evaluate(files, hashed_pairs, threshold, mirrored)
            print(json.dumps({"mirrored": mirrored, **result.summary()}))
    if args.timing:
        print(json.dumps(_timing(sample_photos())))


if __name__ == "__main__":
    main()
