"""A run shows its progress while it works: on a terminal, and in logs."""

import os
import pty
import re
import subprocess
import sys
import time

from beam_pipeline.progress_view import describe
from tests import image_factory
from transforms.corpus.ingest import ingest_drop


def test_describe_gives_counts_rate_and_time_left():
    line = describe({"decode": 30, "ocr": 10}, total=100, elapsed=5.0)
    assert line == "decode 30/100 · ocr 10/100 · 2.0 images/s · about 45 s left"
    assert describe({"decode": 0}, total=100, elapsed=1.0) == "decode 0/100"


def test_images_that_could_not_be_decoded_are_not_waited_for():
    dropped = {"decode": 1, "ocr": 4}  # one file unreadable, three more undecodable
    line = describe({"decode": 99, "ocr": 96}, total=100, elapsed=10.0, dropped=dropped)
    assert line == "decode 99/99 · ocr 96/96 · 9.9 images/s"


def _run_on_a_terminal(argv: list[str]) -> str:
    """The output of `imaginem` run on a pseudo-terminal, as the terminal got it."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.cli", *argv],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=600)
    os.close(leader)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode(errors="replace")


def test_a_run_on_a_terminal_shows_advancing_counts_before_it_ends(tmp_path):
    drop = tmp_path / "drop"
    files = {f"set/{i:03d}.png": image_factory.png_bytes(64 + i, 48) for i in range(24)}
    image_factory.write_files(str(drop), files)
    root = str(tmp_path / "corpus")
    ingest_drop(str(drop), root, "v1")
    started = time.monotonic()
    output = _run_on_a_terminal(
        ["run", "--corpus", root, "--version", "v1", "--steps", "ocr", "--direct_num_workers=1"]
    )
    before_summary = output.split("Run of")[0]
    counts = [int(found) for found in re.findall(r"ocr (\d+)/24", before_summary)]
    assert counts, output[-2000:]
    assert len(set(counts)) >= 2, f"no advancing counts in {time.monotonic() - started:.0f} s"
    assert counts == sorted(counts)
