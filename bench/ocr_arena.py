"""What onnxruntime's CPU memory arena does for OCR: time per image, peak memory, output.

RapidOCR turns the arena off by default. Each configuration runs in a process of
its own (one thread, as a pipeline worker does) over the same images of the bench
drop (edited sample photos and rendered text pages), alternately, several times;
medians are compared, and the text each reads must be identical.

    python -m bench.ocr_arena --images 60 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.vision_throughput import make_drop
from transforms.tasks import ocr


def _read_all(arena: bool, paths: list[str], answer) -> None:
    model = ocr.RapidOcr(threads=1, memory_arena=arena)
    loaded = model.load()
    images = [np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1] for path in paths]
    started = time.perf_counter()
    outputs = [model.predict(loaded, [pixels])[0] for pixels in images]
    texts = [[line.text for line in ocr.text_lines(output, 0.0)] for output in outputs]
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer.send({"seconds": seconds, "peak_mib": peak_kib / 1024, "texts": texts})


def _once(arena: bool, paths: list[str]) -> dict:
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=_read_all, args=(arena, paths, send)
    )
    process.start()
    result = receive.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ocr-arena-"))
    try:
        make_drop(base / "drop", args.images)
        paths = sorted(str(p) for p in (base / "drop").rglob("*") if p.is_file())
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeats):
            for arena in (False, True):
                runs[arena].append(_once(arena, paths))
        same = all(run["texts"] == runs[False][0]["texts"] for run in runs[True] + runs[False])

        def median(arena: bool, key: str) -> float:
            return statistics.median(run[key] for run in runs[arena])

        per_image = {a: median(a, "seconds") / len(paths) * 1000 for a in (False, True)}
        print(
            json.dumps(
                {
                    "images": len(paths),
                    "ms_per_image_without_arena": round(per_image[False], 1),
                    "ms_per_image_with_arena": round(per_image[True], 1),
                    "speedup": round(per_image[False] / per_image[True], 2),
                    "runs_s_without": [round(r["seconds"], 1) for r in runs[False]],
                    "runs_s_with": [round(r["seconds"], 1) for r in runs[True]],
                    "peak_mib_without": round(median(False, "peak_mib")),
                    "peak_mib_with": round(median(True, "peak_mib")),
                    "identical_text": same,
                },
                indent=1,
            )
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
