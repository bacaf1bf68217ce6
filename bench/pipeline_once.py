"""One timed pipeline run of the vision benchmark's step list; prints seconds and batches.

Run as a child process, from the source tree under test (the benchmark runs the
same file from an older tree for its baseline):

    python -m bench.pipeline_once CORPUS GALLERY PROCESSES
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from beam_pipeline.run import run

STEPS = "generalclassification,ocr,facedetection,facecrop,faceprint,facematch,pipelineoutput"


def steps() -> str:
    """The model steps, with `phash` on trees that have it."""
    from transforms.tasks.registry import load_registry

    return ("phash," if "phash" in load_registry() else "") + STEPS


def batches_of(result) -> dict:
    """Batches per model from the `RunInference[<model>]` metrics."""
    sums: dict[str, dict[str, tuple[int, int]]] = {}
    for distribution in result.metrics().query()["distributions"]:
        key, value = distribution.key.metric, distribution.committed
        if key.name in ("inference_batch_latency_micro_secs", "inference_request_batch_size"):
            sums.setdefault(key.namespace, {})[key.name] = (value.count, value.sum)
    batches = {}
    for model, found in sums.items():
        count, images = found["inference_request_batch_size"]
        _, latency_us = found["inference_batch_latency_micro_secs"]
        batches[model] = {
            "batches": count,
            "mean_batch_size": round(images / count, 2),
            "ms_per_image": round(latency_us / images / 1000, 1),
        }
    return batches


def main(root: str, gallery: str, processes: str) -> None:
    shutil.rmtree(Path(root) / "transform", ignore_errors=True)
    started = time.perf_counter()
    result = run(
        [
            *("--corpus", root, "--version", "v1", "--steps", steps(), "--gallery", gallery),
            # Every run computes: stored results would otherwise be reused.
            *("--recompute", "all"),
            *("--direct_num_workers", processes, "--direct_running_mode", "multi_processing"),
        ]
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "batches": batches_of(result)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
