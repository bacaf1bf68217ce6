"""`imaginem run` with steps on remote APIs, against the fake API on loopback.

The CLI runs in its own process with its real worker processes; the fake runs here
and logs every request it receives, so what the job really sent can be checked.
"""

import collections
import io
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tests.corpus_files import files_under, table_rows
from tests.fake_apis import FakeApiSettings, FakeVisionApi
from transforms.corpus.ingest import ingest_drop
from transforms.remote.quota import Rate
from transforms.tables import schemas

KEY = "sekret-api-key-7f3a"
ALL_ON_APIS = [
    "--steps",
    "generalclassification,ocr,facedetection",
    "--generalclassification-backend",
    "google",
    "--ocr-backend",
    "azure",
    "--facedetection-backend",
    "azure",
    "--face-grid",
    "2",
]


FACE_BOX = (30, 20, 24, 24)  # left, top, width, height of the white "face" in each image


def _image(index: int, width: int, height: int) -> bytes:
    """Distinct noise with one white square, which the fake's detector finds as a face."""
    pixels = np.random.default_rng(index).integers(0, 200, (height, width, 3), dtype=np.uint8)
    left, top, side, _ = FACE_BOX
    pixels[top : top + side, left : left + side] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _white_squares(image):
    """Boxes of the white squares: works on a grid of images as on one image."""
    white = np.asarray(image.convert("L")) > 235
    labels, _ = ndimage.label(white)
    boxes = []
    for rows, columns in ndimage.find_objects(labels):
        if (rows.stop - rows.start) * (columns.stop - columns.start) >= 25:
            boxes.append(
                (columns.start, rows.start, columns.stop - columns.start, rows.stop - rows.start)
            )
    return boxes


def _write_drop(folder, count: int, small: int = 0, corrupt: bool = False) -> None:
    for index in range(count):
        size = (40, 40) if index < small else (96 + index % 7, 72)
        path = os.path.join(folder, f"set{index % 3}", f"img{index:04d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(_image(index, *size))
    if corrupt:
        with open(os.path.join(folder, "set0", "broken.png"), "wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def _corpus(tmp_path, count: int, **drop) -> str:
    _write_drop(str(tmp_path / "drop"), count, **drop)
    root = str(tmp_path / "corpus")
    ingest_drop(str(tmp_path / "drop"), root, "v1")
    return root


def _one_line(image):
    return [("EXIT 12", (2, 2, image.width // 2, 12))]


def _environment(fake_url: str) -> dict[str, str]:
    environment = dict(os.environ)
    for api in ("AZURE_VISION", "AZURE_FACE", "GOOGLE_VISION"):
        environment[f"IMAGINEM_{api}_ENDPOINT"] = fake_url
        environment[f"IMAGINEM_{api}_KEY"] = KEY
    return environment


def _imaginem(root, *args, environment):
    command = [sys.executable, "-m", "beam_pipeline.cli", "run", "--corpus", root]
    return subprocess.run(
        [*command, "--version", "v1", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _all_files_text(root) -> str:
    parts = []
    for path in files_under(root):
        with open(path, "rb") as handle:
            parts.append(handle.read().decode("latin-1"))
    return "".join(parts)


def test_with_thirty_percent_faults_every_image_ends_once_and_a_rerun_calls_nothing(tmp_path):
    root = _corpus(tmp_path, 30, small=2, corrupt=True)
    settings = FakeApiSettings(
        fault_rate=0.3,
        stall_seconds=1.0,
        key=KEY,
        seed=3,
        find_faces=_white_squares,
        find_text=_one_line,
    )
    flags = [*ALL_ON_APIS, "--api-timeout", "0.5", "--api-tries", "12"]
    with FakeVisionApi(settings) as fake:
        environment = _environment(fake.url)
        first = _imaginem(root, *flags, environment=environment)
        assert first.returncode == 0, first.stderr[-3000:]
        sent = len(fake.log)
        images = table_rows(root, schemas.IMAGES)
        errors = table_rows(root, schemas.ERRORS)
        again = _imaginem(root, *flags, environment=environment)
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(fake.log) == sent, "a re-run must not call the API again"
        faults = collections.Counter(e.status for e in fake.log if not isinstance(e.status, int))

    assert {"500", "503", "timeout", "reset", "malformed"} <= set(faults)
    # 30 images: the corrupt file never reaches a step; two are too small for Azure's read.
    assert sorted(row["source_path"] for row in images) == sorted(
        f"set{i % 3}/img{i:04d}.png" for i in range(30)
    )
    by_step = collections.defaultdict(list)
    for error in errors:
        by_step[error["step"]].append(error)
    assert sorted(by_step) == ["decode", "ocr"]
    assert [e["path"] for e in by_step["decode"]] == ["set0/broken.png"]
    assert sorted(e["path"] for e in by_step["ocr"]) == ["set0/img0000.png", "set1/img0001.png"]
    assert all("HTTP 400: Image size" in e["message"] for e in by_step["ocr"])
    for row in images:
        assert row["generalclassification"]["backend"] == "google-vision"
        assert row["facedetection"]["model"] == "detection_03-grid2x2"
        (face,) = row["facedetection"]["faces"]  # found in a 2x2 grid, mapped back
        left, top, side, _ = FACE_BOX
        right, bottom = min(left + side, row["width"]), min(top + side, row["height"])
        found = [face["box"][edge] for edge in ("left", "top", "right", "bottom")]
        assert found == pytest.approx([left, top, right, bottom], abs=1.5)
        if row["ocr"] is not None:
            assert (row["ocr"]["backend"], row["ocr"]["text"]) == ("azure-vision", "EXIT 12")
    # The re-run wrote the same rows: refusals were stored with the answers.
    assert sorted(table_rows(root, schemas.IMAGES), key=str) == sorted(images, key=str)
    assert sorted(table_rows(root, schemas.ERRORS), key=str) == sorted(errors, key=str)
    for step in ("generalclassification", "ocr", "facedetection"):
        line = next(line for line in again.stdout.splitlines() if line.strip().startswith(step))
        # Stored results are reused; refused images find their refusal among the answers.
        stored = re.search(r"(\d+) reused \(stored result\)", line)
        answers = re.search(r"API: 0 requests .* (\d+) answers reused", line)
        assert "requests" not in line or answers, line
        assert sum(int(m.group(1)) for m in (stored, answers) if m) == 30, line
    for output in (first.stdout, first.stderr, again.stdout, again.stderr):
        assert KEY not in output
    assert KEY not in _all_files_text(root)


def test_dry_run_counts_requests_and_price_before_sending_anything(tmp_path):
    root = _corpus(tmp_path, 40)
    config = tmp_path / "apis.toml"
    config.write_text(
        f'[google-vision]\nkey = "{KEY}"\nprice_per_1000 = 1.5\n'
        f'[azure-face]\nkey = "{KEY}"\nprice_per_1000 = 1.0\n'
    )
    with FakeVisionApi(FakeApiSettings(key=KEY)) as fake:
        environment = {
            **os.environ,
            "IMAGINEM_GOOGLE_VISION_ENDPOINT": fake.url,
            "IMAGINEM_AZURE_FACE_ENDPOINT": fake.url,
        }
        flags = [
            "--steps",
            "generalclassification,facedetection",
            "--generalclassification-backend",
            "google",
            "--facedetection-backend",
            "azure",
            "--face-grid",
            "3",
            "--api-config",
            str(config),
            "--dry-run",
        ]
        planned = _imaginem(root, *flags, environment=environment)
        assert planned.returncode == 0, planned.stderr[-3000:]
        assert fake.log == []
    lines = planned.stdout.splitlines()
    google = next(line for line in lines if "google-vision" in line)
    assert "40 images, 0 answered before, 40 to send in 3 requests, about 0.06" in google
    face = next(line for line in lines if "azure-face/detection_03-grid3x3" in line)
    assert "40 to send in 5 requests, about 0.01" in face
    assert "total: 8 requests" in planned.stdout
    assert KEY not in planned.stdout + planned.stderr


def test_a_missing_key_stops_the_run_before_it_starts(tmp_path):
    root = _corpus(tmp_path, 2)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEM_")}
    result = _imaginem(root, "--steps", "ocr", "--ocr-backend", "google", environment=environment)
    assert result.returncode == 2
    assert "no key for google-vision: set IMAGINEM_GOOGLE_VISION_KEY" in result.stderr


def _classify_with_two_workers(root, backend, settings, *flags):
    """Runs generalclassification on `backend` against a fake; returns the fake's log."""
    with FakeVisionApi(settings) as fake:
        result = _imaginem(
            root,
            *("--steps", "generalclassification", "--generalclassification-backend", backend),
            *("--direct_num_workers", "2", *flags),
            environment=_environment(fake.url),
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return fake.log


def test_cloud_vision_sends_sixteen_images_per_request(tmp_path):
    root = _corpus(tmp_path, 50)
    log = _classify_with_two_workers(root, "google", FakeApiSettings(key=KEY))
    sizes = [entry.images for entry in log]
    assert sum(sizes) == 50
    # At most one partial request: 50 = 16 + 16 + 16 + 2.
    assert len(sizes) <= 50 // 16 + 1, sizes


def test_the_rate_holds_across_two_workers_and_is_used(tmp_path):
    """10/s for the whole job: no one-second window over 10 (+1 of slack), >= 90% used."""
    count = 320  # 32 s at 10/s
    root = _corpus(tmp_path, count)
    settings = FakeApiSettings(rate=Rate(20), key=KEY)  # the API allows more than asked
    log = _classify_with_two_workers(root, "azure", settings, "--api-rate", "10/s")
    times = sorted(entry.time for entry in log)
    assert len(times) == count
    busiest = max(
        sum(1 for other in times[index:] if other < start + 1.0)
        for index, start in enumerate(times)
    )
    assert busiest <= 11
    span = times[-1] - times[0] + 0.1  # the last request's own slot
    utilisation = len(times) / (span * 10)
    assert utilisation >= 0.9, f"{utilisation:.2f} of the rate used over {span:.1f}s"


def _quota_server(rate: str):
    """`imaginem quota-server` in its own process, and the URL it prints."""
    server = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.cli", "quota-server", "--rate", rate],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = server.stdout.readline().split(" at ")[-1].strip()
    assert url.startswith("http://127.0.0.1:"), url
    return server, url


def test_two_runs_share_one_quota_server(tmp_path):
    """Two jobs at once, one `--api-rate`-like limit of 10/s for both together."""
    roots = [_corpus(tmp_path / name, 40) for name in ("first", "second")]
    server, url = _quota_server("10/s")
    try:
        with FakeVisionApi(FakeApiSettings(rate=Rate(50), key=KEY)) as fake:
            flags = ["--steps", "generalclassification", "--generalclassification-backend"]
            flags += ["azure", "--api-quota-url", url]
            with ThreadPoolExecutor(2) as runs:
                results = list(
                    runs.map(
                        lambda root: _imaginem(root, *flags, environment=_environment(fake.url)),
                        roots,
                    )
                )
        for result in results:
            assert result.returncode == 0, result.stderr[-3000:]
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
    times = sorted(entry.time for entry in fake.log)
    assert len(times) == 80
    busiest = max(
        sum(1 for other in times[index:] if other < start + 1.0)
        for index, start in enumerate(times)
    )
    assert busiest <= 11, busiest


def test_a_quota_url_replaces_the_rate_and_must_answer(tmp_path):
    root = _corpus(tmp_path, 2)
    flags = ["--steps", "generalclassification", "--generalclassification-backend", "azure"]
    environment = _environment("http://127.0.0.1:9")
    quota_flags = ["--api-rate", "5/s", "--api-quota-url", "http://127.0.0.1:9/r"]
    both = _imaginem(root, *flags, *quota_flags, environment=environment)
    assert both.returncode == 2 and "exclude each other" in both.stderr
    server, url = _quota_server("5/s")
    server.terminate()
    server.wait(timeout=30)
    gone = _imaginem(root, *flags, "--api-quota-url", url, environment=environment)
    assert gone.returncode == 2 and "no quota service answers at" in gone.stderr, gone.stderr
