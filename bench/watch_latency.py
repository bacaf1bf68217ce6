"""How soon `imaginem watch` commits an image after it lands, and how many images per
second it keeps up with.

A watch with `generalclassification,facedetection` runs on a local root (the default
local runner, every core). Images are 640x480 JPEGs cut from the sample photos at
random, so that no two share bytes and every result is computed. Each lands the way
a careful copier writes: under a hidden name, then renamed into the version's folder.

* Latency: images land one per `--interval` seconds; an image's latency runs from
  its rename to the moment its row is readable in the `images` table (a thread
  reads the table every 0.1 s throughout). Median and 95th percentile.
* Sustained rate: a burst of `--burst` images lands at once; the rate is the burst
  divided by the time until the last row is readable. Arrivals slower than this do
  not build a queue.

    python -m bench.watch_latency --images 60 --interval 1 --burst 60
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from transforms.corpus.sample import build_sample_corpus
from transforms.tables import delta, schemas

STEPS = "generalclassification,facedetection"
SIZE = (640, 480)


def _photos(folder: Path) -> list[Image.Image]:
    build_sample_corpus(str(folder))
    photos = []
    for path in sorted(folder.rglob("*.png")):
        with Image.open(path) as image:
            if min(image.size) >= 256:
                photos.append(image.convert("RGB"))
    return photos


def _jpeg(photos: list[Image.Image], rng: random.Random) -> bytes:
    photo = rng.choice(photos)
    width, height = photo.size
    side = rng.randint(min(width, height) // 2, min(width, height))
    left, top = rng.randint(0, width - side), rng.randint(0, height - side)
    cut = photo.crop((left, top, left + side, top + side)).resize(SIZE)
    buffer = io.BytesIO()
    cut.save(buffer, format="JPEG", quality=rng.randint(80, 92))
    return buffer.getvalue()


def _land(folder: Path, name: str, data: bytes) -> float:
    """Writes under a hidden name and renames into place; returns when it landed."""
    hidden = folder / f".{name}.partial"
    hidden.write_bytes(data)
    os.replace(hidden, folder / name)
    return time.monotonic()


def _committed(root: Path) -> set[str]:
    try:
        table = delta.read(delta.location(str(root), schemas.IMAGES), ("source_path",))
    except Exception:  # noqa: BLE001 - not created yet
        return set()
    return set(table.column("source_path").to_pylist()) if table.num_rows else set()


class _Watcher(threading.Thread):
    """Reads the `images` table every 0.1 s and notes when each row first shows."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self._root = root
        self.first_seen: dict[str, float] = {}
        self._finished = threading.Event()

    def run(self) -> None:
        while not self._finished.wait(0.1):
            now = time.monotonic()
            for path in _committed(self._root) - self.first_seen.keys():
                self.first_seen[path] = now

    def stop(self) -> None:
        self._finished.set()
        self.join()

    def latencies(self, landed: dict[str, float], timeout: float) -> dict[str, float]:
        """source_path -> seconds from landing until its row showed."""
        deadline = time.monotonic() + timeout
        while not landed.keys() <= self.first_seen.keys() and time.monotonic() < deadline:
            time.sleep(0.1)
        return {p: self.first_seen[p] - landed[p] for p in landed if p in self.first_seen}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--steps", default=STEPS)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="watch-latency-"))
    rng = random.Random(11)
    try:
        photos = _photos(base / "sample")
        root = base / "corpus"
        steady, burst = root / "original" / "steady" / "v1", root / "original" / "burst" / "v1"
        steady.mkdir(parents=True)
        burst.mkdir(parents=True)
        watch = subprocess.Popen(
            [sys.executable, "-m", "beam_pipeline.cli", "watch", "--corpus", str(root),
             "--version", "v1", "--steps", args.steps, "--poll-seconds", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )  # fmt: skip
        watcher = _Watcher(root)
        watcher.start()
        try:
            # Warm up: the models load with the first image.
            warm = {"steady/warm-up.jpg": _land(steady, "warm-up.jpg", _jpeg(photos, rng))}
            assert watcher.latencies(warm, 180), "the watch did not start"
            landed = {}
            for number in range(args.images):
                name = f"{number:04d}.jpg"
                data = _jpeg(photos, rng)
                landed[f"steady/{name}"] = _land(steady, name, data)
                time.sleep(max(0.0, args.interval - (time.monotonic() - landed[f"steady/{name}"])))
            latencies = list(watcher.latencies(landed, 300).values())
            payloads = [_jpeg(photos, rng) for _ in range(args.burst)]
            start = time.monotonic()
            burst_landed = {
                f"burst/{n:04d}.jpg": _land(burst, f"{n:04d}.jpg", data)
                for n, data in enumerate(payloads)
            }
            burst_done = watcher.latencies(burst_landed, 600)
            burst_seconds = max(burst_landed[p] + burst_done[p] for p in burst_done) - start
        finally:
            watcher.stop()
            watch.send_signal(signal.SIGINT)
            summary, _ = watch.communicate(timeout=300)
        print(summary)
        print(
            json.dumps(
                {
                    "images": len(latencies),
                    "interval_s": args.interval,
                    "latency_median_s": round(statistics.median(latencies), 2),
                    "latency_p95_s": round(_percentile(latencies, 0.95), 2),
                    "latency_max_s": round(max(latencies), 2),
                    "burst": len(burst_done),
                    "burst_s": round(burst_seconds, 1),
                    "sustained_images_per_s": round(len(burst_done) / burst_seconds, 2),
                },
                indent=1,
            )
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
