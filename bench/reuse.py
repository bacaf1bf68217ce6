"""What stored results save: re-runs, a new version, a gallery change, against a first run.

Each repeat builds a fresh corpus from the bench drop and times, one after the other:
the first full run of v1; the same command again; a v2 in which 10 % of the images are
new; a run of v1 with another gallery. Medians and per-repeat ratios are reported.

    python -m bench.reuse --images 240 --repeats 3
    python -m bench.reuse --lookup-rows 1000000 --manifest-rows 100000 --repeats 0
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from beam_pipeline.run import plan_run, run
from bench.pipeline_once import STEPS
from bench.vision_throughput import PeakMemory, make_drop
from transforms.corpus.ingest import ingest_drop
from transforms.corpus.sample import build_sample_gallery
from transforms.tables import delta, schemas
from transforms.tables.result_store import ResultPlan, ResultStore
from transforms.tasks import classify


def _timed_run(root: str, version: str, gallery: str, processes: int) -> float:
    started = time.perf_counter()
    result = run(
        [
            "--corpus", root, "--version", version, "--steps", STEPS, "--gallery", gallery,
            "--direct_num_workers", str(processes), "--direct_running_mode", "multi_processing",
        ]
    )  # fmt: skip
    if result.state != "DONE":
        raise RuntimeError(f"run ended {result.state}")
    return time.perf_counter() - started


def _second_drop(first: Path, second: Path, images: int) -> None:
    """The first drop with its last 10 % of images replaced by new ones."""
    shutil.copytree(first, second)
    replaced = sorted(second.rglob("*.jpg"))[-max(1, images // 10) :]
    for path in replaced:
        path.unlink()
    fresh = second.parent / "fresh"
    make_drop(fresh, len(replaced), seed=99)
    for index, path in enumerate(sorted(fresh.rglob("*.jpg"))):
        shutil.move(path, second / f"new{index:04d}.jpg")


def measure_reuse(work: Path, images: int, repeats: int, processes: int) -> dict:
    drop, drop_2 = work / "drop", work / "drop-2"
    gallery, gallery_2 = work / "gallery", work / "gallery-2"
    if not drop.exists():
        make_drop(drop, images)
        build_sample_gallery(str(work / "sources"), str(gallery))
        _second_drop(drop, drop_2, images)
        people = sorted(os.listdir(gallery))
        shutil.copytree(gallery / people[0], gallery_2 / people[0])
    classify.onnx_model_path()  # the one-time export is not part of any measurement
    times: dict[str, list[float]] = {"first": [], "again": [], "new_version": [], "gallery": []}
    for repeat in range(repeats):
        root = str(work / f"corpus-{repeat}")
        shutil.rmtree(root, ignore_errors=True)
        ingest_drop(str(drop), root, "v1")
        times["first"].append(_timed_run(root, "v1", str(gallery), processes))
        times["again"].append(_timed_run(root, "v1", str(gallery), processes))
        ingest_drop(str(drop_2), root, "v2")
        times["new_version"].append(_timed_run(root, "v2", str(gallery), processes))
        times["gallery"].append(_timed_run(root, "v1", str(gallery_2), processes))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()),
              file=sys.stderr)  # fmt: skip
        shutil.rmtree(root)
    first = statistics.median(times["first"])
    return {
        "images": images,
        "seconds": {name: [round(s, 1) for s in values] for name, values in times.items()},
        "median_seconds": {name: round(statistics.median(v), 1) for name, v in times.items()},
        "ratio_to_first_run": {
            name: round(statistics.median(values) / first, 3)
            for name, values in times.items()
            if name != "first"
        },
        "ratio_to_first_run_by_repeat": {
            name: [round(s / f, 3) for s, f in zip(values, times["first"], strict=True)]
            for name, values in times.items()
            if name != "first"
        },
    }


def _sha(index: int) -> str:
    return hashlib.sha256(index.to_bytes(8, "big")).hexdigest()


def measure_lookup(work: Path, rows: int, version_images: int) -> dict:
    """The cost of "already computed?" with `rows` results stored (synthetic rows)."""
    root = str(work / "lookup-corpus")
    shutil.rmtree(root, ignore_errors=True)
    store = ResultStore(root)
    steps = ["decode", "thumbnail", "generalclassification", "ocr", "facedetection"]
    result = json.dumps({"step_version": "1", "labels": [{"label": "x", "score": 0.5}] * 5})
    now = datetime.datetime.now(datetime.UTC)
    batch = 200_000
    for start in range(0, rows, batch):
        count = min(batch, rows - start)
        delta.append(
            store.location,
            pa.table(
                {
                    "image_sha256": [_sha((start + i) // len(steps)) for i in range(count)],
                    "step": [steps[(start + i) % len(steps)] for i in range(count)],
                    "step_version": ["1"] * count,
                    "fingerprint": ["f" * 32] * count,
                    "result": [result] * count,
                    "computed_at": [now] * count,
                    "corpus_version": ["v0"] * count,
                },
                schema=schemas.RESULTS_SCHEMA,
            ),
            ["step"],
        )
    plan = ResultPlan(
        order=tuple(steps),
        fingerprints={step: "f" * 32 for step in steps},
        dependencies={},
        needs_pixels=frozenset(),
        hands_on=frozenset(),
    )
    version_hashes = [_sha(i) for i in range(version_images)]
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        found = store.stored_steps(plan, version_hashes)
        timings.append(time.perf_counter() - started)
    scan = []
    for _ in range(3):
        started = time.perf_counter()
        table = delta.read(store.location, ("image_sha256", "step", "computed_at", "result"),
                           plan.wanted())  # fmt: skip
        scan.append(time.perf_counter() - started)
    return {
        "stored_results": rows,
        "version_images": version_images,
        "images_with_results": len(found),
        "stored_steps_for_version_seconds": round(statistics.median(timings), 2),
        "full_scan_of_matching_results_seconds": round(statistics.median(scan), 2),
        "matching_rows_scanned": table.num_rows,
    }


def measure_driver_memory(work: Path, manifest_rows: int) -> dict:
    """Peak RSS of the driver while planning a run of a version of `manifest_rows` files."""
    root = str(work / "manifest-corpus")
    shutil.rmtree(root, ignore_errors=True)
    location = delta.location(root, schemas.MANIFEST)
    names = [f"set{i % 100}/image{i:07d}.jpg" for i in range(manifest_rows)]
    delta.append(
        location,
        pa.table(
            {
                "source_path": names,
                "set_path": [name.rsplit("/", 1)[0] for name in names],
                "file_name": [name.rsplit("/", 1)[1] for name in names],
                "corpus_version": ["v1"] * manifest_rows,
                "uri": [f"{root}/original/{name}" for name in names],
                "image_sha256": [_sha(i) for i in range(manifest_rows)],
                "bytes": [100_000] * manifest_rows,
                "rejected_reason": [""] * manifest_rows,
                "same_bytes_as": [None] * manifest_rows,
            },
            schema=schemas.MANIFEST_SCHEMA,
        ),
        ["corpus_version"],
    )
    with PeakMemory() as memory:
        started = time.perf_counter()
        plan = plan_run(["--corpus", root, "--version", "v1", "--steps", STEPS])
        elapsed = time.perf_counter() - started
    return {
        "manifest_rows": manifest_rows,
        "planned_images": plan.context.expected_images,
        "plan_seconds": round(elapsed, 2),
        "driver_peak_rss_mib": round(memory.peak_bytes / 2**20),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--lookup-rows", type=int, default=0, help="stored results to look up in")
    parser.add_argument("--manifest-rows", type=int, default=0, help="files in a planned version")
    parser.add_argument("--work-dir", help="keep the corpora here (default: a temp folder)")
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="imaginem-bench-"))
    report = {}
    if args.repeats:
        report["reuse"] = measure_reuse(work, args.images, args.repeats, args.processes)
    if args.lookup_rows:
        report["lookup"] = measure_lookup(work, args.lookup_rows, 100_000)
    if args.manifest_rows:
        report["driver"] = measure_driver_memory(work, args.manifest_rows)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
