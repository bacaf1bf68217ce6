"""Images per second of the full vision step list, against the model-bound floor.

The floor is the same models called in a plain Python loop over the same images,
in as many processes as the pipeline has workers, each process loading its models
once and taking the next image whenever it is free. Both include starting their
worker processes and loading the models. The two are run alternately, several times,
and medians are compared. With `--baseline REV`, the pipeline of an earlier commit
runs on the same images in the same rounds (each round in another order), and the
quality guard (`bench.quality_guard`) runs once on each tree.

    python -m bench.vision_throughput --images 240 --repeats 5 --baseline 32cdd10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from transforms.corpus.ingest import ingest_drop, read_manifest
from transforms.corpus.sample import build_sample_corpus, build_sample_gallery
from transforms.tasks import classify, ocr
from transforms.tasks.decode import DEFAULT_MAX_PIXELS, decode_image
from transforms.tasks.faces import align, blazeface, crop, detection, embed
from transforms.tasks.phash import perceptual_hashes


def make_drop(folder: Path, images: int, seed: int = 7) -> None:
    """Edited copies of the sample photos and text pages: crops, sizes, flips, tilts."""
    sources_dir = folder.parent / "sources"
    sources = [
        Image.open(path).convert("RGB")
        for path in sorted(build_sample_corpus(str(sources_dir)))
        if path.endswith((".png", ".jpg"))
    ]
    rng = np.random.default_rng(seed)
    for index in range(images):
        image = sources[index % len(sources)]
        width, height = image.size
        keep = rng.uniform(0.75, 1.0)
        left = rng.uniform(0, 1 - keep) * width
        top = rng.uniform(0, 1 - keep) * height
        edited = image.crop((left, top, left + keep * width, top + keep * height))
        longest = int(rng.integers(480, 1025))
        scale = longest / max(edited.size)
        edited = edited.resize((round(edited.width * scale), round(edited.height * scale)))
        if rng.random() < 0.5:
            edited = edited.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        edited = edited.rotate(rng.uniform(-5, 5), resample=Image.Resampling.BICUBIC)
        target = folder / f"set{index % 8}" / f"image{index:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        edited.save(target, format="JPEG", quality=88)


class PeakMemory:
    """Peak summed RSS of this process and its descendants, sampled every 100 ms."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        # A short measurement may end before the first sample.
        self.peak_bytes = max(self.peak_bytes, _tree_rss(os.getpid()))

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_bytes = max(self.peak_bytes, _tree_rss(os.getpid()))


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _tree_rss(pid: int) -> int:
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
        pending += _children(current)
    return total


_floor_models: dict[str, tuple] = {}  # name -> (model, loaded), in each floor process


def _load_floor_models() -> None:
    """Runs once in each process of the floor: every model loaded once."""
    for name, model in (
        ("classify", classify.EfficientNetLite0()),
        ("ocr", ocr.RapidOcr()),
        ("detect", blazeface.BlazeFace()),
        ("align", crop.DlibAligner()),
        ("embed", embed.DlibResNet()),
    ):
        _floor_models[name] = (model, model.load())


def _floor_image(uri: str) -> dict[str, float]:
    """Every model on one image, in a plain loop; seconds per model."""
    timings: dict[str, float] = {}

    def timed(name, function, *args):
        started = time.perf_counter()
        value = function(*args)
        timings[name] = time.perf_counter() - started
        return value

    def predict(name, model_input):
        model, loaded = _floor_models[name]
        return timed(name, model.predict, loaded, [model_input])[0]

    with open(uri, "rb") as handle:
        data = handle.read()
    image = timed("decode", decode_image, data, DEFAULT_MAX_PIXELS, False).image
    timed("phash", perceptual_hashes, image)
    predict("classify", classify.preprocess(image))
    predict("ocr", ocr.bgr_pixels(image))
    faces = predict("detect", blazeface.face_search(image, blazeface.DEFAULT_MIN_FACE_FRACTION))
    upright = [
        align.upright_face(image, detection.box_of(face), *detection.eyes(face))
        for face in detection.face_entries("0" * 64, "", faces)
    ]
    aligned = predict("align", upright)
    predict("embed", [face.chip for face in aligned])
    return timings


def run_floor(uris: list[str], processes: int) -> tuple[float, dict[str, list[float]]]:
    """The processes take the next image whenever they are free: no share is left
    waiting on a slower one, so this is the best the models allow."""
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes, _load_floor_models) as pool:
        results = list(pool.imap_unordered(_floor_image, uris, chunksize=1))
    elapsed = time.perf_counter() - started
    merged: dict[str, list[float]] = {}
    for timings in results:
        for name, seconds in timings.items():
            merged.setdefault(name, []).append(seconds)
    return elapsed, merged


REPOSITORY = Path(__file__).resolve().parents[1]


def baseline_tree(revision: str, folder: Path) -> Path:
    """The source of `revision`, with this tree's benchmark modules (which only call
    what both trees have), so the same measurements run on the older code."""
    shutil.rmtree(folder, ignore_errors=True)  # nothing left of another revision
    (folder / "bench").mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", revision],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    for module in (REPOSITORY / "bench").glob("*.py"):
        shutil.copy(module, folder / "bench" / module.name)
    return folder


def in_tree(tree: Path, module: str, *args: str) -> dict:
    """Runs `python -m module args` on the code of `tree`; its last line of output, as JSON."""
    finished = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), *_python_path()])},
        capture_output=True,
        text=True,
    )
    if finished.returncode:
        raise RuntimeError(f"{module} in {tree} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _python_path() -> list[str]:
    return [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]


def run_pipeline(tree: Path, root: str, gallery: str, processes: int) -> tuple[float, dict]:
    """Seconds from the pipeline's start (after the driver's imports, like the floor
    from its pool's start) to its end, and batches per model."""
    answer = in_tree(tree, "bench.pipeline_once", root, gallery, str(processes))
    return answer["seconds"], answer["batches"]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--baseline", help="a git revision whose pipeline runs alongside")
    parser.add_argument("--work-dir", help="keep the corpus here (default: a temp folder)")
    args = parser.parse_args(argv)

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="imaginem-bench-"))
    drop, gallery = work / "drop", str(work / "gallery")
    if not drop.exists():
        make_drop(drop, args.images)
        build_sample_gallery(str(work / "sources"), gallery)
    trees = {"pipeline": REPOSITORY}
    if args.baseline:
        trees["baseline"] = baseline_tree(args.baseline, work / "baseline-tree")
    roots = {name: str(work / f"corpus-{name}") for name in trees}
    for root in roots.values():
        ingest_drop(str(drop), root, "v1")
    uris = [entry.uri for entry in read_manifest(roots["pipeline"], "v1")]
    classify.onnx_model_path()  # the one-time export is not part of either measurement

    seconds: dict[str, list[float]] = {"floor": [], **{name: [] for name in trees}}
    memory: dict[str, int] = dict.fromkeys(seconds, 0)
    floor_timings, batches = {}, {}
    names = list(seconds)
    for repeat in range(args.repeats):
        # Each round in another order: no side always runs right after the same one.
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            with PeakMemory() as peak:
                if name == "floor":
                    elapsed, floor_timings = run_floor(uris, args.processes)
                else:
                    elapsed, batches[name] = run_pipeline(
                        trees[name], roots[name], gallery, args.processes
                    )
            seconds[name].append(elapsed)
            memory[name] = max(memory[name], peak.peak_bytes)
        times = ", ".join(f"{name} {values[-1]:.1f}s" for name, values in seconds.items())
        print(f"repeat {repeat + 1}: {times}", file=sys.stderr)

    floor_rate = len(uris) / statistics.median(seconds["floor"])
    pipeline_rate = len(uris) / statistics.median(seconds["pipeline"])
    report = {
        "images": len(uris),
        "processes": args.processes,
        "seconds": {name: [round(s, 1) for s in values] for name, values in seconds.items()},
        "median_seconds": {name: _median(values) for name, values in seconds.items()},
        "pipeline_images_per_second": round(pipeline_rate, 2),
        "pipeline_to_floor": round(pipeline_rate / floor_rate, 3),
        # Each pipeline run against the floor run of the same round: less exposed to
        # the machine's load drifting over the whole benchmark.
        "pipeline_to_floor_by_round": [
            round(f / p, 3) for f, p in zip(seconds["floor"], seconds["pipeline"], strict=True)
        ],
        "peak_rss_mib": {name: round(value / 2**20) for name, value in memory.items()},
        "floor_median_ms_per_image": {
            name: round(statistics.median(values) * 1000, 1)
            for name, values in floor_timings.items()
        },
        # Comparable with the pipeline's batch latency / batch size, also a mean.
        "floor_mean_ms_per_image": {
            name: round(statistics.mean(values) * 1000, 1) for name, values in floor_timings.items()
        },
        "pipeline_batches": batches,
    }
    print(json.dumps(report), file=sys.stderr)  # kept should the quality guard fail
    if args.baseline:
        report["speedup_over_baseline"] = round(
            statistics.median(seconds["baseline"]) / statistics.median(seconds["pipeline"]), 3
        )
        report["speedup_by_round"] = [
            round(b / p, 3) for b, p in zip(seconds["baseline"], seconds["pipeline"], strict=True)
        ]
        report["quality"] = {
            name: in_tree(tree, "bench.quality_guard", str(work / f"quality-{name}"))
            for name, tree in trees.items()
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
