"""Text with known ground truth, and how well an OCR model reads it.

Two kinds of image: rendered pages (small print from 12 px, full pages of it,
noise, low contrast) and sample photos enlarged to 2000-4000 px with a two-line label of small text
(16-32 px) pasted in, the case a cap on the detector's input would lose.

    python -m bench.ocr_set   # character accuracy and time of the default OCR model
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
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as folder:
        examples = text_examples(folder)
    print(json.dumps(score_reader(examples, local_reader())))


if __name__ == "__main__":
    main()
