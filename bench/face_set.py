"""A labelled face set made from the sample photos, and how a detector scores on it.

The sample drop has two people, one facing the camera and one nearly in profile,
whose faces are boxed in `FACES` (checked by eye). The set:

* composites: another sample photo without people as background, at a size from a
  phone snapshot to a 12 MP photo, with one to three of those faces pasted in at a
  random place and size (from the smallest face the detector looks for by default,
  5 % of the longest side, to most of the frame), sometimes mirrored;
* close-ups: a face cut tight (filling half to all of the frame's width), turned up
  to 20 degrees, sometimes mirrored, 96 to 1000 px: a portrait, an ID photo, a
  tracing request's aligned crop;
* photos with no face (cat, horse, cup, stars, text pages, a motorcycle) and square
  crops of them, framed as close-ups are: anything found on them is a false face.

    python -m bench.face_set --images 60            # the default detector's score
    python -m bench.face_set --images 60 --curve    # precision and recall by min score
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

import numpy as np
from PIL import Image

from transforms.corpus.sample import build_sample_corpus

Box = tuple[float, float, float, float]  # left, top, right, bottom

# Each person's face in their sample photo: forehead to chin, ear to ear.
FACES = {
    "people/astronaut/astronaut.png": (171.0, 66.0, 282.0, 177.0),
    "people/photographer/camera.png": (203.0, 124.0, 275.0, 196.0),
}
BACKGROUNDS = [
    "places/china/china.jpg",
    "nature/flower/flower.jpg",
    "space/rocket/rocket.jpg",
    "food/coffee/coffee.png",
]
NO_FACES = [
    "animals/cat/chelsea.png",
    "animals/horse/horse.png",
    "food/coffee/coffee.png",
    "space/hubble/hubble_deep_field.jpg",
    "documents/printed/page.png",
    "documents/rendered/plain.png",
    "motorcycle.png",
]
CANVASES = [(1024, 768), (768, 1024), (2000, 1500), (4000, 3000)]
CURVE_SCORES = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
SMALLEST_FACE = 0.05  # of the canvas's longest side: the detector's default


@dataclasses.dataclass(frozen=True)
class Example:
    name: str
    image: Image.Image
    faces: list[Box]


def _pasted_face(
    photo: Image.Image, face: Box, size: float, mirror: bool
) -> tuple[Image.Image, Box]:
    """The photo cropped to twice its face's box, scaled so the face is `size` px wide;
    and the face's box in that crop."""
    left, top, right, bottom = face
    width, height = right - left, bottom - top
    crop = (left - width / 2, top - height / 2, right + width / 2, bottom + height / 2)
    region = photo.crop(tuple(round(v) for v in crop))
    if mirror:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = size / width
    scaled = region.resize(
        (max(1, round(region.width * scale)), max(1, round(region.height * scale))),
        Image.Resampling.LANCZOS,
    )
    box = (width / 2 * scale, height / 2 * scale, 1.5 * width * scale, 1.5 * height * scale)
    return scaled, box


def labelled_faces(sample_dir: str, images: int, seed: int = 11) -> list[Example]:
    """`images` composites with faces, then the sample photos that have none."""
    build_sample_corpus(sample_dir)

    def opened(path: str) -> Image.Image:
        return Image.open(os.path.join(sample_dir, path)).convert("RGB")

    people = [(opened(path), box) for path, box in FACES.items()]
    backgrounds = [opened(path) for path in BACKGROUNDS]
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(images):
        width, height = CANVASES[index % len(CANVASES)]
        canvas = backgrounds[index % len(backgrounds)].resize((width, height))
        faces: list[Box] = []
        for _ in range(int(rng.integers(1, 4))):
            photo, face = people[int(rng.integers(len(people)))]
            # Sizes spread evenly on a log scale up to 60 % of the short side.
            smallest, largest = SMALLEST_FACE * max(width, height), 0.6 * min(width, height)
            size = float(np.exp(rng.uniform(np.log(smallest), np.log(largest))))
            pasted, box = _pasted_face(photo, face, size, mirror=bool(rng.random() < 0.5))
            if pasted.width >= width or pasted.height >= height:
                continue
            for _attempt in range(20):  # a place that covers no face already pasted
                x = int(rng.integers(0, width - pasted.width))
                y = int(rng.integers(0, height - pasted.height))
                placed = (x, y, x + pasted.width, y + pasted.height)
                if all(_overlap(placed, other) == 0 for other in faces):
                    canvas.paste(pasted, (x, y))
                    faces.append((x + box[0], y + box[1], x + box[2], y + box[3]))
                    break
        examples.append(Example(f"faces{index:03d}-{width}x{height}", canvas, faces))
    examples += [Example(path, opened(path), []) for path in NO_FACES]
    return examples


def close_ups(sample_dir: str, count: int, seed: int = 5) -> list[Example]:
    """Faces cut tight from the sample photos: framed by 1 to 2 face widths, turned
    up to 20 degrees about the face, sometimes mirrored, 96 to 1000 px wide."""
    rng = np.random.default_rng(seed)
    people = list(FACES.items())
    examples = []
    for index in range(count):
        path, (left, top, right, bottom) = people[index % len(people)]
        photo = Image.open(os.path.join(sample_dir, path)).convert("RGB")
        centre_x, centre_y, width = (left + right) / 2, (top + bottom) / 2, right - left
        angle = float(rng.uniform(-20, 20))
        turned = photo.rotate(angle, Image.Resampling.BICUBIC, center=(centre_x, centre_y))
        frame = width / float(rng.uniform(0.5, 1.0))
        crop = turned.crop(
            tuple(
                round(v)
                for v in (
                    centre_x - frame / 2,
                    centre_y - frame / 2,
                    centre_x + frame / 2,
                    centre_y + frame / 2,
                )
            )
        )
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        size = round(float(np.exp(rng.uniform(np.log(96), np.log(1000)))))
        scale = size / crop.width
        face_left = (crop.width - width) / 2 * scale
        face_top = (crop.height - width) / 2 * scale
        examples.append(
            Example(
                f"close-up{index:03d}-{size}px",
                crop.resize((size, size), Image.Resampling.LANCZOS),
                [(face_left, face_top, face_left + width * scale, face_top + width * scale)],
            )
        )
    return examples


def no_face_crops(sample_dir: str, seed: int = 7) -> list[Example]:
    """Square crops of the photos without faces (a quarter to 60 % of their short
    side), shown at 256 px: what a close-up of no face looks like."""
    rng = np.random.default_rng(seed)
    examples = []
    for path in NO_FACES:
        photo = Image.open(os.path.join(sample_dir, path)).convert("RGB")
        for share in (0.25, 0.4, 0.6):
            side = int(min(photo.size) * share)
            for copy in range(2):
                x = int(rng.integers(0, photo.width - side + 1))
                y = int(rng.integers(0, photo.height - side + 1))
                crop = photo.crop((x, y, x + side, y + side)).resize((256, 256))
                examples.append(Example(f"{path}-crop{share:g}-{copy}", crop, []))
    return examples


def _overlap(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def iou(a: Box, b: Box) -> float:
    inter = _overlap(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass
class Score:
    """Labelled faces found, faces missed (with their sizes), and false faces."""

    found: int = 0
    missed_sizes: list[int] = dataclasses.field(default_factory=list)
    false_faces: int = 0

    @property
    def labelled(self) -> int:
        return self.found + len(self.missed_sizes)

    @property
    def recall(self) -> float:
        return self.found / self.labelled if self.labelled else 1.0

    def add(self, labels: list[Box], found: list[Box], min_iou: float = 0.3) -> None:
        unmatched = list(found)
        for label in labels:
            best = max(unmatched, key=lambda box: iou(label, box), default=None)
            if best is not None and iou(label, best) >= min_iou:
                unmatched.remove(best)
                self.found += 1
            else:
                self.missed_sizes.append(round(label[2] - label[0]))
        self.false_faces += len(unmatched)

    def summary(self) -> dict:
        return {
            "labelled": self.labelled,
            "found": self.found,
            "recall": round(self.recall, 3),
            "missed_sizes": sorted(self.missed_sizes),
            "false_faces": self.false_faces,
        }


def score_detector(examples: list[Example], detect) -> Score:
    """`detect(image) -> boxes`, scored against the labels of every example."""
    score = Score()
    for example in examples:
        score.add(example.faces, detect(example.image))
    return score


def local_detector(min_score: float | None = None, min_size: float | None = None):
    """The pipeline's local face detector with its defaults, as `image -> boxes`."""
    from transforms.tasks.faces import blazeface

    # Older trees (for `bench.vision_throughput --baseline`) have the full-range model only.
    detector = getattr(blazeface, "BlazeFace", None) or blazeface.BlazeFaceFullRange
    model = detector(min_score or blazeface.DEFAULT_MIN_SCORE)
    loaded = model.load()
    fraction = min_size or blazeface.DEFAULT_MIN_FACE_FRACTION

    def detect(image: Image.Image) -> list[Box]:
        (faces,) = model.predict(loaded, [blazeface.face_search(image, fraction)])
        return [face.box for face in faces]

    return detect


def score_curve(groups: dict[str, list[Example]]) -> list[dict]:
    """Found and false faces of each group at every score in CURVE_SCORES, with both
    models and with the full-range model alone. Each image runs once: its raw
    outputs are decoded at every score, as the detector would."""
    from transforms.tasks.faces import blazeface

    full_range, short_range = blazeface.BlazeFace().load()
    nothing = (
        np.zeros((len(blazeface.SHORT_RANGE.anchors), 16), np.float32),
        np.full(len(blazeface.SHORT_RANGE.anchors), -80.0, np.float32),
    )
    raw = {}
    for group, examples in groups.items():
        for example in examples:
            search = blazeface.face_search(example.image, blazeface.DEFAULT_MIN_FACE_FRACTION)
            outputs = [
                blazeface._invoke(full_range, tile, blazeface.FULL_RANGE) for tile in search.pixels
            ]
            close_up = blazeface._invoke(short_range, search.close_up, blazeface.SHORT_RANGE)
            raw[group, example.name] = (example, search, outputs, close_up)
    rows = []
    for models in ("full-range", "full+short-range"):
        for min_score in CURVE_SCORES:
            scores = {group: Score() for group in groups}
            for (group, _), (example, search, outputs, close_up) in raw.items():
                looked = close_up if models == "full+short-range" else nothing
                found = blazeface.merge_tiles(search, outputs, looked, min_score)
                scores[group].add(example.faces, [face.box for face in found])
            found = sum(score.found for score in scores.values())
            false = sum(score.false_faces for score in scores.values())
            rows.append(
                {
                    "models": models,
                    "min_score": min_score,
                    **{
                        f"{group}_found": f"{s.found}/{s.labelled}"
                        for group, s in scores.items()
                        if s.labelled
                    },
                    **{f"{group}_false": s.false_faces for group, s in scores.items()},
                    "precision": round(found / (found + false), 3) if found + false else 1.0,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="composites")
    parser.add_argument("--close-ups", type=int, default=60)
    parser.add_argument("--curve", action="store_true", help="score by min score, both models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        examples = labelled_faces(folder, args.images)
        groups = {
            "composites": [example for example in examples if example.faces],
            "close_ups": close_ups(folder, args.close_ups),
            "no_face_photos": [example for example in examples if not example.faces],
            "no_face_crops": no_face_crops(folder),
        }
    if args.curve:
        for row in score_curve(groups):
            print(json.dumps(row))
        return
    detect = local_detector()
    for group, members in groups.items():
        print(json.dumps({"group": group, **score_detector(members, detect).summary()}))


if __name__ == "__main__":
    main()
