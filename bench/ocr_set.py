"""Text with known ground truth, and how well an OCR model reads it.

Two kinds of image: rendered pages (small print from 12 px, full pages of it,
noise, low contrast) and sample photos enlarged to 2000-4000 px with a two-line label of small text
(16-32 px) pasted in, the case a cap on the detector's input would lose.

Photos without text test the `has_text` decision: sample photos (cat, cup, horse,
stars, bricks, grass, cells, a cameraman, an astronaut, flowers, a temple), each
also enlarged 2 and 4 times and cut into three square crops.

    python -m bench.ocr_set              # character accuracy and time of the default OCR model
    python -m bench.ocr_set --has-text   # has_text on photos without text and images with it
    python -m bench.ocr_set --turned     # every image also turned 90, 180 and 270 degrees
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from transforms.corpus.sample import RENDERED_LINES, build_sample_corpus, render_text

PAGE_FONT_SIZES = (12, 16, 20, 28)
DENSE_PAGES = [(12, 60), (14, 50), (16, 40)]  # (font size, lines)
# (longest side of the photo, font size of the label in it)
PHOTO_LABELS = [(2000, 16), (2000, 24), (3000, 20), (3000, 26), (3000, 32), (4000, 24), (4000, 30)]
PHOTOS = [
    "people/astronaut/astronaut.png",
    "animals/cat/chelsea.png",
    "places/china/china.jpg",
    "food/coffee/coffee.png",
    "nature/flower/flower.jpg",
    "animals/horse/horse.png",
    "space/rocket/rocket.jpg",
]


# Sample photos with no text in them (the motorcycle's "YAMAHA" and the coins'
# inscriptions are real text, so they are not here).
NO_TEXT_SKIMAGE = [
    "chelsea.png", "coffee.png", "horse.png", "hubble_deep_field.jpg", "moon.png",
    "retina.jpg", "brick.png", "grass.png", "gravel.png", "camera.png", "cell.png",
    "ihc.png", "astronaut.png", "rocket.jpg",
]  # fmt: skip
NO_TEXT_SKLEARN = ["flower.jpg", "china.jpg"]
TEXT_MIN_SCORES = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class TextExample:
    name: str
    kind: str  # "page" or "photo"
    image: Image.Image
    text: str


def character_accuracy(expected: str, found: str) -> float:
    """Share of the expected characters found in order."""
    matcher = difflib.SequenceMatcher(None, expected, found, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(expected)


def text_examples(sample_dir: str, seed: int = 3) -> list[TextExample]:
    truth = "\n".join(RENDERED_LINES)
    examples = [
        TextExample(f"page-{size}px", "page", render_text(RENDERED_LINES, font_size=size), truth)
        for size in PAGE_FONT_SIZES
    ]
    # Full pages of small print, over 1000 px tall: what shrinking a page costs.
    shifted = RENDERED_LINES[1:] + RENDERED_LINES[:1]
    rows = [f"{a} / {b}" for a, b in zip(RENDERED_LINES, shifted, strict=True)]
    for size, count in DENSE_PAGES:
        lines = (rows * count)[:count]
        page = render_text(lines, font_size=size)
        examples.append(TextExample(f"full-page-{size}px", "page", page, "\n".join(lines)))
    rng = np.random.default_rng(seed)
    plain = render_text(RENDERED_LINES, font_size=20)
    noise = rng.normal(0, 28, size=(plain.height, plain.width, 1))
    noisy = Image.fromarray(np.clip(np.asarray(plain) + noise, 0, 255).astype(np.uint8))
    examples.append(TextExample("page-20px-noisy", "page", noisy, truth))
    low_contrast = render_text(RENDERED_LINES, font_size=20, ink=110, paper=170)
    examples.append(TextExample("page-20px-low-contrast", "page", low_contrast, truth))

    build_sample_corpus(sample_dir)
    label_text = "\n".join(RENDERED_LINES[1:3])
    for index, (longest, font_size) in enumerate(PHOTO_LABELS):
        photo = Image.open(os.path.join(sample_dir, PHOTOS[index % len(PHOTOS)])).convert("RGB")
        scale = longest / max(photo.size)
        photo = photo.resize(
            (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC
        )
        label = render_text(RENDERED_LINES[1:3], font_size=font_size)
        left = int(rng.integers(0, photo.width - label.width))
        top = int(rng.integers(0, photo.height - label.height))
        photo.paste(label, (left, top))
        name = f"photo-{photo.width}x{photo.height}-{font_size}px"
        examples.append(TextExample(name, "photo", photo, label_text))
    return examples


def no_text_photos(seed: int = 1) -> list[TextExample]:
    """Photos without text, as they are, enlarged 2 and 4 times, and three crops each."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    folder = os.path.dirname(skimage.data.__file__)
    photos = {
        name: Image.open(os.path.join(folder, name)).convert("RGB") for name in NO_TEXT_SKIMAGE
    }
    photos |= {name: Image.fromarray(load_sample_image(name)) for name in NO_TEXT_SKLEARN}
    rng = np.random.default_rng(seed)
    examples = []
    for name, photo in photos.items():
        examples.append(TextExample(name, "no-text", photo, ""))
        for scale in (2, 4):
            larger = photo.resize(
                (photo.width * scale, photo.height * scale), Image.Resampling.BICUBIC
            )
            examples.append(TextExample(f"{name}-x{scale}", "no-text", larger, ""))
        for crop in range(3):
            side = int(min(photo.size) * rng.uniform(0.3, 0.7))
            left = int(rng.integers(0, photo.width - side + 1))
            top = int(rng.integers(0, photo.height - side + 1))
            cut = photo.crop((left, top, left + side, top + side)).resize((640, 640))
            examples.append(TextExample(f"{name}-crop{crop}", "no-text", cut, ""))
    return examples


def has_text_table(examples: list[TextExample]) -> list[dict]:
    """Images with and without text that `has_text` calls text, by its least score;
    and how many had any line at all (what the `text` column showed before)."""
    from transforms.tasks import ocr

    model = ocr.RapidOcr()
    loaded = model.load()
    lines = {}
    for example in examples:
        (output,) = model.predict(loaded, [ocr.bgr_pixels(example.image.convert("RGB"))])
        lines[example.name] = ocr.text_lines(output, ocr.DEFAULT_MIN_SCORE)
    rows = []
    for kind in ("no-text", "page", "photo"):
        members = [example for example in examples if example.kind == kind]
        row = {
            "kind": kind,
            "images": len(members),
            "with_lines": sum(bool(lines[example.name]) for example in members),
        }
        for text_min_score in TEXT_MIN_SCORES:
            row[f"has_text_at_{text_min_score:g}"] = sum(
                ocr.has_text(lines[example.name], text_min_score) for example in members
            )
        rows.append(row)
    return rows


def turned(examples: list[TextExample]) -> list[TextExample]:
    """Every example also turned a quarter, a half and three quarters round."""
    return [
        TextExample(
            f"{example.name}@{angle}",
            f"{example.kind}-{angle}",
            example.image.rotate(angle, expand=True),
            example.text,
        )
        for example in examples
        for angle in (0, 90, 180, 270)
    ]


def score_reader(examples: list[TextExample], read) -> dict:
    """`read(image) -> text` on every example: accuracy and seconds per image, by kind."""
    by_example, seconds = {}, {}
    for example in examples:
        started = time.perf_counter()
        text = read(example.image)
        seconds.setdefault(example.kind, []).append(time.perf_counter() - started)
        by_example[example.name] = round(character_accuracy(example.text, text), 3)
    kinds = {}
    for kind, times in seconds.items():
        accuracies = [by_example[e.name] for e in examples if e.kind == kind]
        kinds[kind] = {
            "mean_accuracy": round(statistics.mean(accuracies), 3),
            "median_ms": round(statistics.median(times) * 1000),
        }
    return {"kinds": kinds, "examples": by_example}


def local_reader():
    """The pipeline's local OCR model, as `image -> text`."""
    from transforms.tasks import ocr

    model = ocr.RapidOcr()
    loaded = model.load()

    def read(image: Image.Image) -> str:
        # Spelled out rather than `ocr.bgr_pixels`: the benchmark runs this on older trees.
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        (output,) = model.predict(loaded, [bgr])
        return "\n".join(line.text for line in ocr.text_lines(output, ocr.DEFAULT_MIN_SCORE))

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--has-text", action="store_true", help="score the has_text decision")
    parser.add_argument("--turned", action="store_true", help="also read every image turned")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        examples = text_examples(folder)
    if args.turned:
        examples = turned(examples)
    if args.has_text:
        for row in has_text_table(examples + no_text_photos()):
            print(json.dumps(row))
        return
    print(json.dumps(score_reader(examples, local_reader())))


if __name__ == "__main__":
    main()
