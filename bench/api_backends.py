"""Remote API steps against a naive one-call-per-image loop, and what a face grid costs.

Part 1, per backend: the pipeline (`--api-rate`, 2 worker processes) and a naive loop
(one image per request, one after another, waiting out each 429's `Retry-After`) call
the fake API, whose own limit is the same rate. From the fake's request log: requests
per image, 429s, the share of the allowed rate used while calling, and time lost to
throttling. Pipeline and loop alternate per repeat; medians are quoted.

Part 2: faces found when Azure Face detect gets one image per call, or a 2x2 or 3x3
grid. The fake detects with BlazeFace searching down to 36 px faces, as Azure's
`detection_03` is documented to (the real service cannot be reached here); the corpus
is photos with the sample astronaut's face pasted in at known places and sizes.

    python -m bench.api_backends --images 200 --rate 10 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.fake_apis import FakeApiSettings, FakeVisionApi
from transforms.corpus.ingest import ingest_drop
from transforms.corpus.sample import build_sample_corpus
from transforms.remote.api import Api
from transforms.remote.api_step import shrink
from transforms.remote.azure_face import AzureFace, faces_from_azure
from transforms.remote.azure_vision import AzureVision
from transforms.remote.google_vision import GoogleVision
from transforms.remote.quota import Rate
from transforms.tasks.faces import blazeface

KEY = "bench-key"
BACKENDS = {
    "azure-vision tags": ["--generalclassification-backend", "azure"],
    "azure-face": ["--facedetection-backend", "azure"],
    "azure-face 2x2 grid": ["--facedetection-backend", "azure", "--face-grid", "2"],
    "google-vision labels": ["--generalclassification-backend", "google"],
}


def make_noise_drop(folder: Path, images: int) -> None:
    for index in range(images):
        pixels = np.random.default_rng(index).integers(0, 255, (72, 96, 3), dtype=np.uint8)
        target = folder / f"set{index % 4}" / f"image{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target)


def _api_for(label: str) -> Api:
    if label.startswith("google"):
        return GoogleVision("LABEL_DETECTION")
    if label.startswith("azure-face"):
        return AzureFace()
    return AzureVision("tags")


def _phase(log, start: float) -> dict:
    times = [entry.time for entry in log if entry.time >= start]
    accepted = [entry for entry in log if entry.time >= start and entry.status != 429]
    span = max(times) - min(times) if len(times) > 1 else 0.0
    return {
        "requests": len(times),
        "accepted": len(accepted),
        "throttled": len(times) - len(accepted),
        "span": span,
    }


def run_pipeline(root: str, label: str, rate: float, fake: FakeVisionApi) -> dict:
    environment = dict(os.environ)
    for api in ("AZURE_VISION", "AZURE_FACE", "GOOGLE_VISION"):
        environment[f"IMAGINEM_{api}_ENDPOINT"] = fake.url
        environment[f"IMAGINEM_{api}_KEY"] = KEY
    step = "facedetection" if "face" in label else "generalclassification"
    started = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline.cli",
            "run",
            "--corpus",
            root,
            "--version",
            "v1",
            "--steps",
            step,
            *BACKENDS[label],
            "--api-rate",
            f"{rate:g}/s",
            "--direct_num_workers",
            "2",
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.time() - started
    waited = re.search(r"throttled \(([\d.]+)s waited\)", result.stdout)
    return {
        **_phase(fake.log, started),
        "wall": wall,
        "lost": float(waited.group(1)) if waited else 0.0,
    }


def run_naive(drop: Path, label: str, fake: FakeVisionApi) -> dict:
    """One image per request, in a plain loop; a 429 waits its Retry-After."""
    api = _api_for(label)
    started, lost = time.time(), 0.0
    with httpx.Client(timeout=60) as client:
        for path in sorted(drop.rglob("*.png")):
            with Image.open(path) as image:
                packed = api.pack([image.convert("RGB")])
            while True:
                response = api.send(client, fake.url, KEY, packed)
                if response.status_code != 429:
                    response.raise_for_status()
                    break
                wait = float(response.headers["Retry-After"])
                lost += wait
                time.sleep(wait)
    return {**_phase(fake.log, started), "wall": time.time() - started, "lost": lost}


def throughput(images: int, rate: float, repeats: int, work: Path) -> None:
    drop = work / "noise-drop"
    make_noise_drop(drop, images)
    print(f"\n{images} images, API limit and --api-rate {rate:g}/s; medians of {repeats}\n")
    columns = ["backend", "way", "requests / image", "429s", "rate used", "lost to 429s", "wall"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for label in BACKENDS:
        results: dict[str, list[dict]] = {"pipeline": [], "naive loop": []}
        for repeat in range(repeats):
            root = str(work / f"corpus-{label.replace(' ', '-')}-{repeat}")
            ingest_drop(str(drop), root, "v1")
            settings = FakeApiSettings(rate=Rate(rate), key=KEY)
            with FakeVisionApi(settings) as fake:
                results["pipeline"].append(run_pipeline(root, label, rate, fake))
            with FakeVisionApi(settings) as fake:
                results["naive loop"].append(run_naive(drop, label, fake))
        for way, runs in results.items():
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            used = median["accepted"] / (median["span"] * rate) if median["span"] else 0.0
            cells = [
                label,
                way,
                f"{median['requests'] / images:.3f}",
                f"{median['throttled']:.0f}",
                f"{used:.0%}",
                f"{median['lost']:.1f} s",
                f"{median['wall']:.1f} s",
            ]
            print("| " + " | ".join(cells) + " |")


def _face_source(work: Path) -> Image.Image:
    """The astronaut's face with some margin, cropped where BlazeFace finds it."""
    path = next(p for p in build_sample_corpus(str(work / "sample")) if "astronaut" in p)
    image = Image.open(path).convert("RGB")
    model = blazeface.BlazeFace()
    (found,) = model.predict(model.load(), [blazeface.face_search(image, 0.05)])
    left, top, right, bottom = found[0].box
    pad = 0.3 * (right - left)
    return image.crop((left - pad, top - pad, right + pad, bottom + pad))


def make_face_photos(work: Path, photos: int, seed: int = 5):
    """Background photos with 1-4 pasted faces each, 30-300 px wide; returns (image, boxes).

    Face sizes are drawn uniformly; a face that would overlap another is left out.
    """
    face = _face_source(work)
    backgrounds = [
        Image.open(p).convert("RGB")
        for p in build_sample_corpus(str(work / "backgrounds"))
        if p.endswith((".png", ".jpg")) and not any(k in p for k in ("people/", "documents/"))
    ]
    rng = np.random.default_rng(seed)
    made = []
    for index in range(photos):
        background = backgrounds[index % len(backgrounds)].resize((1600, 1200))
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            width = int(rng.integers(30, 300))
            pasted = face.resize((width, round(face.height * width / face.width)))
            left = int(rng.integers(0, background.width - pasted.width))
            top = int(rng.integers(0, background.height - pasted.height))
            box = (left, top, left + pasted.width, top + pasted.height)
            if any(_overlap(box, other) for other in boxes):
                continue
            background.paste(pasted, (left, top))
            boxes.append(box)
        made.append((background, boxes))
    return made


def _overlap(box, other) -> bool:
    return box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]


def _blazeface_finder():
    model = blazeface.BlazeFace()
    loaded = model.load()
    lock = threading.Lock()

    def find(image: Image.Image):
        # Like Azure's detection_03: faces down to 36 px, whatever the image size.
        smallest = max(0.005, 36 / max(image.size))
        with lock:
            (found,) = model.predict(loaded, [blazeface.face_search(image, smallest)])
        return [
            (round(left), round(top), round(right - left), round(bottom - top))
            for left, top, right, bottom in (detection.box for detection in found)
        ]

    return find


def _found(truth, faces) -> int:
    """Pasted faces whose centre lies inside a detected box."""
    hits = 0
    for left, top, right, bottom in truth:
        x, y = (left + right) / 2, (top + bottom) / 2
        if any(f["box"][0] <= x <= f["box"][2] and f["box"][1] <= y <= f["box"][3] for f in faces):
            hits += 1
    return hits


def grid_faces(photos: int, work: Path) -> None:
    made = make_face_photos(work, photos)
    placed = [(index, box) for index, (_, boxes) in enumerate(made) for box in boxes]
    print(f"\n{photos} photos of 1600x1200 with {len(placed)} pasted faces, 30-300 px wide\n")
    buckets = {"30-79 px": (30, 80), "80-149 px": (80, 150), "150-300 px": (150, 301)}
    print("| grid | detect calls | faces found | " + " | ".join(buckets) + " |")
    print("|---|---|---|" + "---|" * len(buckets))
    finder = FakeApiSettings(key=KEY, find_faces=_blazeface_finder())
    with FakeVisionApi(finder) as fake, httpx.Client(timeout=120) as client:
        for columns in (1, 2, 3):
            api = AzureFace(grid_columns=columns)
            per_image, calls = [], 0
            for start in range(0, len(made), api.images_per_request):
                chunk = [
                    shrink(image, api.max_side)
                    for image, _ in made[start : start + api.images_per_request]
                ]
                packed = api.pack([image for image, _ in chunk])
                response = api.send(client, fake.url, KEY, packed)
                calls += 1
                for (_, scale), answer in zip(
                    chunk, api.split(response.json(), packed), strict=True
                ):
                    per_image.append(faces_from_azure(answer, scale))
            hits = [_found([box], per_image[index]) for index, box in placed]
            cells = []
            for low, high in buckets.values():
                inside = [
                    h
                    for h, (_, box) in zip(hits, placed, strict=True)
                    if low <= box[2] - box[0] < high
                ]
                cells.append(f"{sum(inside)} / {len(inside)}")
            found = f"{sum(hits)} / {len(hits)} ({sum(hits) / len(hits):.0%})"
            print(f"| {columns}x{columns} | {calls} | {found} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--face-photos", type=int, default=36)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        if args.images:
            throughput(args.images, args.rate, args.repeats, Path(work))
        if args.face_photos:
            grid_faces(args.face_photos, Path(work))


if __name__ == "__main__":
    main()
