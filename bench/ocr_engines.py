"""OCR on other inference settings: onnxruntime's memory arena, and OpenVINO.

Each configuration reads the same images of the bench drop (edited sample photos and
rendered text pages) in two processes at once, one thread each, half the images
each, as the pipeline's two workers do; the configurations alternate, several times,
and medians are compared. The text each reads is compared with the default's, and
its peak memory (both processes) is reported. OpenVINO is measured when installed
(`pip install openvino==2026.4.1`); it reads the same ONNX files.

    python -m bench.ocr_engines --images 60 --repeats 3
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
from importlib.util import find_spec
from pathlib import Path

from PIL import Image

from bench.vision_throughput import make_drop
from transforms.tasks import ocr

CONFIGURATIONS = {
    "onnxruntime": {},
    "onnxruntime, arena on": {"memory_arena": True},
    "openvino": {"engine": ocr.OPENVINO},
}


def _read_share(options: dict, paths: list[str], start, answer) -> None:
    model = ocr.RapidOcr(threads=1, **options)
    loaded = model.load()
    images = [ocr.bgr_pixels(Image.open(path).convert("RGB")) for path in paths]
    start.wait(timeout=600)  # both processes loaded: only reading is timed
    started = time.perf_counter()
    outputs = [model.predict(loaded, [pixels])[0] for pixels in images]
    seconds = time.perf_counter() - started
    texts = [[line.text for line in ocr.text_lines(output, 0.0)] for output in outputs]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    answer.send({"seconds": seconds, "peak_mib": peak_mib, "texts": texts})


def _once(options: dict, paths: list[str], processes: int = 2) -> dict:
    """Wall time of `processes` reading their shares at once; their summed peak memory."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    pipes, workers = [], []
    for index in range(processes):
        receive, send = context.Pipe(duplex=False)
        share = paths[index::processes]
        worker = context.Process(target=_read_share, args=(options, share, start, send))
        worker.start()
        send.close()  # a worker that dies closes the pipe's last writer: recv fails
        pipes.append(receive)
        workers.append(worker)
    try:
        answers = [pipe.recv() for pipe in pipes]
    except EOFError:
        for worker in workers:
            worker.kill()
        raise RuntimeError(f"an OCR process with {options or 'the defaults'} failed") from None
    for worker in workers:
        worker.join()
    texts = [None] * len(paths)
    for index, answer in enumerate(answers):
        texts[index::processes] = answer["texts"]
    return {
        "seconds": max(answer["seconds"] for answer in answers),
        "peak_mib": sum(answer["peak_mib"] for answer in answers),
        "texts": texts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configurations = {
        name: options
        for name, options in CONFIGURATIONS.items()
        if options.get("engine") != ocr.OPENVINO or find_spec("openvino")
    }
    base = Path(tempfile.mkdtemp(prefix="ocr-engines-"))
    try:
        make_drop(base / "drop", args.images)
        paths = sorted(str(p) for p in (base / "drop").rglob("*") if p.is_file())
        runs: dict[str, list[dict]] = {name: [] for name in configurations}
        for _ in range(args.repeats):
            for name, options in configurations.items():
                runs[name].append(_once(options, paths))
        default_texts = runs["onnxruntime"][0]["texts"]
        report = {}
        for name, measured in runs.items():
            seconds = statistics.median(run["seconds"] for run in measured)
            report[name] = {
                "ms_per_image": round(seconds / len(paths) * 1000, 1),
                "runs_s": [round(run["seconds"], 1) for run in measured],
                "peak_mib_two_processes": round(statistics.median(r["peak_mib"] for r in measured)),
                "images_read_as_by_default": sum(
                    texts == default
                    for texts, default in zip(measured[0]["texts"], default_texts, strict=True)
                ),
            }
        default_ms = report["onnxruntime"]["ms_per_image"]
        for entry in report.values():
            entry["speedup"] = round(default_ms / entry["ms_per_image"], 2)
        print(json.dumps({"images": len(paths), "configurations": report}, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
