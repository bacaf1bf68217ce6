"""Memory of a run as its version grows: peak memory of the default step list at
1,000 and 10,000 small images, and the driver's own memory at a 100,000-file manifest.

The images are distinct 96x72 JPEGs of coloured blocks (each model still runs on
each one). The 100,000-file version is written directly (manifest rows and original
files, as ingest would leave them) and run with `decode` alone, so that the figure
is what the driver holds for the files, not what the models cost. Each version is
run twice: first with no rows in the tables a run writes (a new drop's first run),
then again (`--recompute all`, every row merged again). Every run is a child process
(`imaginem run`); its own resident set (the driver) and the sum over it and its
workers are sampled every 100 ms.

    python -m bench.memory_scale --images 1000,10000 --repeats 3 --manifest-rows 100000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from bench.vision_throughput import _tree_rss
from transforms import paths
from transforms.corpus.ingest import ingest_drop
from transforms.tables import delta, schemas
from transforms.tasks.registry import DEFAULT_DEFINITION

VERSION = "v1"
SETS = 20


def _small_jpeg(rng: np.random.Generator) -> bytes:
    blocks = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((96, 72), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def ingested_corpus(work: Path, images: int) -> str:
    """A corpus of `images` distinct small JPEGs, ingested like any drop."""
    root = work / f"corpus-{images}"
    if (root / "metadata").exists():
        return str(root)
    drop = work / f"drop-{images}"
    rng = np.random.default_rng(images)
    for index in range(images):
        target = drop / f"set{index % SETS:02d}" / f"image{index:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_small_jpeg(rng))
    ingest_drop(str(drop), str(root), VERSION)
    shutil.rmtree(drop)
    return str(root)


def written_corpus(work: Path, files: int) -> str:
    """A version of `files` distinct small JPEGs whose manifest and originals are
    written directly (ingest would take longer than the run being measured)."""
    root = work / f"manifest-{files}"
    if (root / "metadata").exists():
        return str(root)
    rng = np.random.default_rng(files)
    rows = []
    for index in range(files):
        set_path, name = f"set{index % SETS:02d}", f"image{index:07d}.jpg"
        data = _small_jpeg(rng)
        uri = paths.original_uri(str(root), set_path, VERSION, name)
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_bytes(data)
        rows.append(
            {
                "source_path": f"{set_path}/{name}",
                "set_path": set_path,
                "file_name": name,
                "corpus_version": VERSION,
                "uri": uri,
                "image_sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "rejected_reason": "",
                "same_bytes_as": None,
            }
        )
    delta.append(
        delta.location(str(root), schemas.MANIFEST),
        pa.Table.from_pylist(rows, schema=schemas.MANIFEST_SCHEMA),
        schemas.TABLES[schemas.MANIFEST].partition_by,
    )
    return str(root)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _without_rows(root: str) -> None:
    """The version as before its first run: no rows in the tables a run writes."""
    for table in (schemas.IMAGES, schemas.FACES, schemas.CANDIDATES, schemas.CLUSTERS,
                  schemas.ERRORS):  # fmt: skip
        shutil.rmtree(Path(root) / "metadata" / table, ignore_errors=True)


def measured_run(root: str, steps: str, processes: int) -> dict:
    """Seconds, peak driver memory and peak summed memory of one `imaginem run`."""
    command = [
        *(sys.executable, "-m", "beam_pipeline.cli", "run", "--corpus", root),
        *("--version", VERSION, "--steps", steps, "--recompute", "all"),
        *("--direct_num_workers", str(processes)),
    ]
    peaks = {"driver": 0, "total": 0}
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def sample() -> None:
        while child.poll() is None:
            peaks["driver"] = max(peaks["driver"], _rss(child.pid))
            peaks["total"] = max(peaks["total"], _tree_rss(child.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = child.communicate()
    sampler.join()
    if child.returncode:
        raise RuntimeError(f"run failed ({child.returncode}): {stderr.decode()[-2000:]}")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "driver_peak_mib": round(peaks["driver"] / 2**20),
        "total_peak_mib": round(peaks["total"] / 2**20),
    }


def measured_twice(root: str, steps: str, processes: int, repeats: int) -> dict:
    """A first run and a re-run of the version, `repeats` times: each figure's runs
    and median."""
    runs: dict[str, list[dict]] = {"first_run": [], "re_run": []}
    for _ in range(repeats):
        _without_rows(root)
        for runs_of_kind in runs.values():
            runs_of_kind.append(measured_run(root, steps, processes))
    return {
        kind: {
            figure: {"runs": [one[figure] for one in measured], "median": statistics.median(
                one[figure] for one in measured)}
            for figure in measured[0]
        }
        for kind, measured in runs.items()
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="1000,10000", help="comma-separated corpus sizes")
    parser.add_argument("--manifest-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--work-dir", help="keep the corpora here (default: a temp folder)")
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="imaginem-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    report = {}
    for size in (int(n) for n in args.images.split(",") if n):
        root = ingested_corpus(work, size)
        report[f"default_steps_{size}_images"] = measured_twice(
            root, DEFAULT_DEFINITION, args.processes, args.repeats
        )
        print(json.dumps(report), flush=True)
    if args.manifest_rows:
        root = written_corpus(work, args.manifest_rows)
        report[f"decode_{args.manifest_rows}_files"] = measured_twice(
            root, "decode,pipelineoutput", args.processes, 1
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
