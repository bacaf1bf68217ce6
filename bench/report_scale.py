"""How long `imaginem report` takes for a version with 10,000 faces.

The version's tables are written directly, with every column a real run fills (the
pipeline would take most of an hour to find 10,000 faces on two cores): 2,500 images
of 4 faces each, a 256 px thumbnail per image and a 150 px chip per face on disk,
40 gallery people matched by 60 % of the faces, near misses, and clusters of every
size. Each repeat writes the report into a new folder (every picture copied); a
second report into the same folder finds its pictures there and writes only pages.

    python -m bench.report_scale --faces 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from beam_pipeline.report.build import write_report
from beam_pipeline.report.data import load
from transforms.tables import delta, schemas
from transforms.tasks.faces.table import FACES_SCHEMA
from transforms.tasks.registry import load_registry

FACES_PER_IMAGE = 4
PEOPLE = 40
VERSION = "v1"
THRESHOLD = 0.5


def _jpeg(size: tuple[int, int], seed: int) -> bytes:
    shade = random.Random(seed)
    image = Image.new("RGB", size, tuple(shade.randrange(256) for _ in range(3)))
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _face_match(rng: random.Random, face: int) -> tuple[str | None, float, str | None]:
    """(person, distance to the nearest, cluster id) of a face: 60 % matched, the rest
    unknown, some of them near misses, grouped in clusters of every size."""
    if rng.random() < 0.6:
        return f"person-{rng.randrange(PEOPLE):02d}", rng.uniform(0.2, THRESHOLD), None
    cluster = f"cluster-{int(rng.paretovariate(1.2)) % 800:04d}"
    return None, rng.uniform(THRESHOLD, 0.9), cluster if face % 7 else f"single-{face}"


def make_version(root: Path, faces: int, seed: int = 7) -> None:
    """Tables, thumbnails and chips of one version with `faces` faces."""
    rng = random.Random(seed)
    registry = load_registry()
    step_columns = {name: step.result_type for name, step in registry.items() if step.result_type}
    thumbs, chips = root / "transform/thumbnail/1", root / "transform/facecrop/1"
    thumbs.mkdir(parents=True)
    chips.mkdir(parents=True)
    thumbnail_bytes = [_jpeg((256, 192), seed) for seed in range(8)]
    chip_bytes = [_jpeg((150, 150), seed) for seed in range(8)]
    images, face_rows = [], []
    labels = ("cup", "dog", "street", "document", "crowd", "beach")
    for number in range(faces // FACES_PER_IMAGE):
        sha = f"{number:064x}"
        path = f"drop/set-{number % 25:02d}/photo-{number:05d}.jpg"
        thumb = thumbs / f"{sha}.jpg"
        thumb.write_bytes(thumbnail_bytes[number % 8])
        matches = []
        for index in range(FACES_PER_IMAGE):
            face_id = f"{number:028x}{index:04x}"
            chip = chips / f"{face_id}.jpg"
            chip.write_bytes(chip_bytes[(number + index) % 8])
            person, distance, cluster = _face_match(rng, number * FACES_PER_IMAGE + index)
            candidates = [{"person": person or "person-00", "distance": distance}]
            matches.append({"face_index": index, "face_id": face_id, "person": person})
            face_rows.append(
                {
                    "face_id": face_id,
                    "image_sha256": sha,
                    "corpus_version": VERSION,
                    "source_path": path,
                    "set_path": path.rsplit("/", 1)[0],
                    "face_index": index,
                    "box": {
                        "left": 100.0 * index,
                        "top": 50.0,
                        "right": 100.0 * index + 80,
                        "bottom": 150.0,
                    },
                    "score": 0.9,
                    "crop_uri": str(chip),
                    "person": person,
                    "distance": distance,
                    "candidates": candidates,
                    "cluster_id": cluster,
                }
            )
        label = labels[number % len(labels)]
        images.append(
            {
                "image_sha256": sha,
                "corpus_version": VERSION,
                "set_path": path.rsplit("/", 1)[0],
                "tags": [path.split("/")[1]],
                "source_path": path,
                "file_name": path.rsplit("/", 1)[1],
                "uri": f"{root}/original/{path}",
                "width": 400,
                "height": 300,
                "thumbnail": {
                    "step_version": "1",
                    "transform_version": "1",
                    "uri": str(thumb),
                    "width": 256,
                    "height": 192,
                },
                "generalclassification": {
                    "step_version": "1",
                    "labels": [{"class_id": 1, "label": label, "score": 0.9}],
                },
                "ocr": {
                    "step_version": "1",
                    "text": f"case {number} seen near the market",
                    "lines": [],
                },
                "facematch": {
                    "step_version": "3",
                    "threshold": THRESHOLD,
                    "gallery_people": PEOPLE,
                    "matches": matches,
                },
            }
        )
    metadata = delta.commit_metadata("run", corpus_version=VERSION, steps="bench")
    for table, schema, rows in (
        (schemas.IMAGES, schemas.images_schema(step_columns), images),
        (schemas.FACES, FACES_SCHEMA, face_rows),
    ):
        delta.append(
            delta.location(str(root), table),
            delta.as_table(rows, schema),
            ("corpus_version",),
            metadata,
        )


def _report_once(root: Path, out: Path) -> tuple[float, float]:
    """(seconds reading the tables, seconds writing the report)."""
    start = time.perf_counter()
    data = load(str(root), VERSION)
    loaded = time.perf_counter()
    write_report(data, str(out))
    return loaded - start, time.perf_counter() - loaded


def _seconds(values) -> list[float]:
    return [round(value, 2) for value in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="report-scale-"))
    try:
        root = base / "corpus"
        start = time.perf_counter()
        make_version(root, args.faces)
        made = time.perf_counter() - start
        new_folder, same_folder, loads = [], [], []
        for repeat in range(args.repeats):
            out = base / f"report-{repeat}"
            read, written = _report_once(root, out)
            loads.append(read)
            new_folder.append(read + written)
            same_folder.append(sum(_report_once(root, out)))
        first = base / "report-0"
        print(
            json.dumps(
                {
                    "faces": args.faces,
                    "tables_made_s": round(made, 1),
                    "pages": sum(1 for _ in first.glob("*.html")),
                    "pictures": sum(1 for _ in (first / "media").rglob("*.jpg")),
                    "tables_read_s": _seconds(loads),
                    "new_folder_s": _seconds(new_folder),
                    "same_folder_again_s": _seconds(same_folder),
                    "median_new_folder_s": round(statistics.median(new_folder), 2),
                    "median_same_folder_s": round(statistics.median(same_folder), 2),
                },
                indent=1,
            )
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
