"""A sample drop of real photos that ship inside PyPI wheels, plus rendered text.

Photos come from scikit-image's bundled `skimage.data` files and scikit-learn's
sample images, copied byte for byte; text images are rendered with Pillow and the
DejaVu fonts, with their exact text in `documents/rendered/ground_truth.json`.
Building it twice gives identical bytes, so re-ingesting it is a no-op.
"""

from __future__ import annotations

import json
import os
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# (package with the file, file name, path in the drop)
PACKAGED_PHOTOS = [
    ("skimage.data", "astronaut.png", "people/astronaut/astronaut.png"),
    ("skimage.data", "camera.png", "people/photographer/camera.png"),
    ("skimage.data", "chelsea.png", "animals/cat/chelsea.png"),
    ("skimage.data", "horse.png", "animals/horse/horse.png"),
    ("skimage.data", "coffee.png", "food/coffee/coffee.png"),
    ("skimage.data", "rocket.jpg", "space/rocket/rocket.jpg"),
    ("skimage.data", "hubble_deep_field.jpg", "space/hubble/hubble_deep_field.jpg"),
    ("skimage.data", "page.png", "documents/printed/page.png"),
    ("skimage.data", "text.png", "documents/printed/text.png"),
    ("skimage.data", "motorcycle_left.png", "motorcycle.png"),
    ("sklearn.datasets.images", "china.jpg", "places/china/china.jpg"),
    ("sklearn.datasets.images", "flower.jpg", "nature/flower/flower.jpg"),
]

RENDERED_DIR = "documents/rendered"
GROUND_TRUTH_FILE = "ground_truth.json"
RENDERED_LINES = [
    "FAMILY TRACING REGISTRY",
    "Case 2041: Amina Yusuf, age 34",
    "Last seen near the river market",
    "Contact the tracing desk at 09:30",
]
_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu")
_FONT_FILE = "DejaVuSans.ttf"


def find_font(file_name: str = _FONT_FILE) -> str:
    for folder in _FONT_DIRS:
        candidate = os.path.join(folder, file_name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"font {file_name} not found in {', '.join(_FONT_DIRS)}; "
        "install the Debian package fonts-dejavu-core"
    )


def render_text(
    lines: list[str], font_size: int = 34, ink: int = 20, paper: int = 255
) -> Image.Image:
    """Black-on-white (or any grey-on-grey) text, one line per row, RGB."""
    font = ImageFont.truetype(find_font(), font_size)
    line_height = int(font_size * 1.6)
    width = max(int(font.getlength(line)) for line in lines) + 2 * font_size
    height = line_height * len(lines) + 2 * font_size
    image = Image.new("RGB", (width, height), (paper,) * 3)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((font_size, font_size + row * line_height), line, font=font, fill=(ink,) * 3)
    return image


def rendered_variants() -> dict[str, Image.Image]:
    """Plain, rotated, noisy and low-contrast renderings of the same lines."""
    plain = render_text(RENDERED_LINES)
    rotated = plain.rotate(4, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    rng = np.random.default_rng(seed=7)
    noise = rng.normal(0, 28, size=(plain.height, plain.width, 1))
    noisy = Image.fromarray(np.clip(np.asarray(plain) + noise, 0, 255).astype(np.uint8))
    low_contrast = render_text(RENDERED_LINES, ink=110, paper=170)
    return {
        "plain.png": plain,
        "rotated.png": rotated,
        "noisy.png": noisy,
        "low-contrast.png": low_contrast,
    }


def build_sample_corpus(drop_dir: str) -> list[str]:
    """Writes the sample drop into `drop_dir`; returns the image paths written."""
    written = []
    for package, file_name, target in PACKAGED_PHOTOS:
        try:
            data = resources.files(package).joinpath(file_name).read_bytes()
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                f"{error.name} is needed for the sample photos: pip install 'imaginem-beam[sample]'"
            ) from error
        written.append(_write(drop_dir, target, data))
    truth = {}
    for file_name, image in rendered_variants().items():
        target = f"{RENDERED_DIR}/{file_name}"
        path = os.path.join(drop_dir, target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path, format="PNG")
        written.append(path)
        truth[file_name] = "\n".join(RENDERED_LINES)
    _write(
        drop_dir,
        f"{RENDERED_DIR}/{GROUND_TRUTH_FILE}",
        json.dumps(truth, indent=2, sort_keys=True).encode(),
    )
    return written


# (person folder, photo in the drop, file in the gallery, how it is altered)
GALLERY_PHOTOS = [
    ("eileen-collins", "people/astronaut/astronaut.png", "flipped-small.jpg", "flip"),
    ("photographer", "people/photographer/camera.png", "tilted.jpg", "tilt"),
]


def _altered(image: Image.Image, how: str) -> Image.Image:
    """A different picture of the same person: mirrored and smaller, or tilted."""
    if how == "flip":
        mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return mirrored.resize(
            (image.width * 3 // 5, image.height * 3 // 5), Image.Resampling.LANCZOS
        )
    return image.rotate(8, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))


def build_sample_gallery(drop_dir: str, gallery_dir: str) -> list[str]:
    """Writes a gallery of known people made from altered copies of drop photos."""
    written = []
    for person, source, file_name, how in GALLERY_PHOTOS:
        with Image.open(os.path.join(drop_dir, source)) as image:
            altered = _altered(image.convert("RGB"), how)
        path = os.path.join(gallery_dir, person, file_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        altered.save(path, format="JPEG", quality=60)
        written.append(path)
    return written


def _write(drop_dir: str, target: str, data: bytes) -> str:
    path = os.path.join(drop_dir, target)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return path
