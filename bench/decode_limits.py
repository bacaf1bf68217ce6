"""What the decode limits cost and save: large photos shrunk on load, scan bombs refused.

Large photos: a drop of 10000x10000 JPEGs (sample photos enlarged) runs through the
pixel steps twice per repeat, side by side: with the default `--working-pixels` and
with shrinking off (the hard pixel ceiling). Wall time and the peak summed memory of
the driver and its workers are reported.

Scan bomb: a 4000x4000 progressive JPEG whose last, tiny scan is repeated; the time
`decode_image` takes to refuse it against the time Pillow takes to decode it.

    python -m bench.decode_limits --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from beam_pipeline.run import run
from bench.vision_throughput import PeakMemory
from transforms.corpus.ingest import ingest_drop
from transforms.corpus.sample import build_sample_corpus
from transforms.tasks import classify
from transforms.tasks.decode import HARD_MAX_PIXELS, ScanLimitError, decode_image

STEPS = "thumbnail,generalclassification,ocr,facedetection,facecrop,faceprint,pipelineoutput"
LARGE_SIDE = 10_000
SOURCES = ("people/astronaut/astronaut.png", "documents/printed/page.png")


def make_large_drop(folder: Path) -> None:
    sources = folder.parent / "sources"
    build_sample_corpus(str(sources))
    folder.mkdir(parents=True)
    for source in SOURCES:
        image = Image.open(sources / source).convert("RGB")
        large = image.resize((LARGE_SIDE, LARGE_SIDE), Image.Resampling.BILINEAR)
        large.save(folder / (Path(source).stem + ".jpg"), quality=90)


def _measured_run(root: str, extra: list[str], processes: int) -> tuple[float, int]:
    flags = ["--corpus", root, "--version", "v1", "--steps", STEPS]
    flags += ["--direct_num_workers", str(processes), *extra]
    started = time.perf_counter()
    with PeakMemory() as memory:
        result = run(flags)
    if result.state != "DONE":
        raise RuntimeError(f"run ended {result.state}")
    return time.perf_counter() - started, memory.peak_bytes


def measure_large(work: Path, repeats: int, processes: int) -> dict:
    drop = work / "large-drop"
    if not drop.exists():
        make_large_drop(drop)
    classify.onnx_model_path()  # the one-time export is not part of any measurement
    modes = {"shrunk": [], "full_size": ["--working-pixels", str(HARD_MAX_PIXELS)]}
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    peaks: dict[str, list[float]] = {mode: [] for mode in modes}
    for repeat in range(repeats):
        for mode, extra in modes.items():
            root = str(work / f"corpus-{mode}")
            shutil.rmtree(root, ignore_errors=True)
            ingest_drop(str(drop), root, "v1")
            took, peak = _measured_run(root, extra, processes)
            seconds[mode].append(round(took, 1))
            peaks[mode].append(round(peak / 2**30, 2))
            print(f"repeat {repeat + 1} {mode}: {took:.1f}s, {peak / 2**30:.2f} GiB",
                  file=sys.stderr)  # fmt: skip
    median = {mode: statistics.median(values) for mode, values in seconds.items()}
    median_peak = {mode: statistics.median(values) for mode, values in peaks.items()}
    return {
        "images": len(SOURCES),
        "size": f"{LARGE_SIDE}x{LARGE_SIDE}",
        "seconds": seconds,
        "peak_gib": peaks,
        "median_seconds": median,
        "median_peak_gib": median_peak,
        "time_ratio_shrunk_to_full": round(median["shrunk"] / median["full_size"], 3),
        "memory_ratio_shrunk_to_full": round(median_peak["shrunk"] / median_peak["full_size"], 3),
    }


def scan_bomb(repeats: int) -> bytes:
    """A 4000x4000 progressive JPEG with its last (refinement) scan repeated."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((4000, 4000), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    starts, found = [], data.find(b"\xff\xda")
    while found != -1:  # 0xFF 0xDA cannot occur inside entropy-coded data
        starts.append(found)
        found = data.find(b"\xff\xda", found + 2)
    end = data.rindex(b"\xff\xd9")
    bounds = list(zip(starts, [*starts[1:], end], strict=True))
    smallest = min(bounds, key=lambda bound: bound[1] - bound[0])
    return data[:end] + data[smallest[0] : smallest[1]] * repeats + data[end:]


def measure_scan_bomb(scans: int, repeats: int) -> dict:
    data = scan_bomb(scans)
    refused, decoded = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        try:
            decode_image(data)
        except ScanLimitError:
            refused.append(time.perf_counter() - started)
        started = time.perf_counter()
        Image.open(io.BytesIO(data)).load()
        decoded.append(time.perf_counter() - started)
    return {
        "bytes": len(data),
        "repeated_scans": scans,
        "refused_seconds": round(statistics.median(refused), 4),
        "pillow_decode_seconds": round(statistics.median(decoded), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--bomb-scans", type=int, default=20_000)
    parser.add_argument("--work", help="keep the drops here between invocations")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="imaginem-decode-bench-"))
    report = {
        "scan_bomb": measure_scan_bomb(args.bomb_scans, args.repeats),
        "large_photos": measure_large(work, args.repeats, args.processes),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
