"""A run shows its progress while it works: on a terminal, and in logs."""

import fcntl
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time

from beam_pipeline.log_noise import NOISE
from beam_pipeline.progress_view import describe
from tests import image_factory
from tests.corpus_files import table_rows
from transforms.corpus.ingest import ingest_drop
from transforms.corpus.sample import RENDERED_LINES, render_text
from transforms.tables import schemas


def test_describe_gives_counts_rate_and_time_left():
    line = describe({"decode": 30, "ocr": 10}, total=100, elapsed=5.0)
    assert line == "decode 30/100 · ocr 10/100 · 2.0 images/s · about 45 s left"
    assert describe({"decode": 0}, total=100, elapsed=1.0) == "decode 0/100"


def test_images_that_could_not_be_decoded_are_not_waited_for():
    dropped = {"decode": 1, "ocr": 4}  # one file unreadable, three more undecodable
    line = describe({"decode": 99, "ocr": 96}, total=100, elapsed=10.0, dropped=dropped)
    assert line == "decode 99/99 · ocr 96/96 · 9.9 images/s"


def _on_a_terminal(argv: list[str], interrupt_when=None) -> tuple[int, str]:
    """Runs `imaginem` on a pseudo-terminal of its own, pressing Ctrl-C once
    `interrupt_when()` holds; returns its exit status and what the terminal got."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.cli", *argv],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
        start_new_session=True,
        # The terminal becomes the session's: Ctrl-C reaches its foreground group.
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if interrupt_when is not None and interrupt_when():
            os.write(leader, b"\x03")
            interrupt_when = None
        if not ready:
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=600)
    os.close(leader)
    return process.returncode, b"".join(chunks).decode(errors="replace")


def _run_on_a_terminal(argv: list[str]) -> str:
    status, output = _on_a_terminal(argv)
    assert status == 0, output[-2000:]
    return output


def _ocr_drop(tmp_path, images: int) -> str:
    """Text pages, each its own: OCR reads one in a few tenths of a second or more, so
    a run lasts long enough to watch and to interrupt."""
    drop = tmp_path / "drop"
    files = {
        f"set/{i:03d}.png": image_factory.encode(
            render_text([f"Page {i}", *RENDERED_LINES * 3], font_size=28), "PNG"
        )
        for i in range(images)
    }
    image_factory.write_files(str(drop), files)
    root = str(tmp_path / "corpus")
    ingest_drop(str(drop), root, "v1")
    return root


def test_a_run_on_a_terminal_shows_advancing_counts_before_it_ends(tmp_path):
    root = _ocr_drop(tmp_path, 24)
    started = time.monotonic()
    output = _run_on_a_terminal(
        ["run", "--corpus", root, "--version", "v1", "--steps", "ocr", "--direct_num_workers=1"]
    )
    before_summary = output.split("Run of")[0]
    counts = [int(found) for found in re.findall(r"ocr (\d+)/24", before_summary)]
    assert counts, output[-2000:]
    assert len(set(counts)) >= 2, f"no advancing counts in {time.monotonic() - started:.0f} s"
    assert counts == sorted(counts)
    for noise in (*NOISE, "Logging handler created"):
        assert noise not in output


def test_ctrl_c_stops_the_run_quietly_and_the_same_command_resumes(tmp_path):
    root = _ocr_drop(tmp_path, 48)
    argv = ["run", "--corpus", root, "--version", "v1", "--steps", "ocr", "--direct_num_workers=1"]
    stored = os.path.join(root, "metadata", "results", "_delta_log", "00000000000000000000.json")
    status, output = _on_a_terminal(argv, interrupt_when=lambda: os.path.exists(stored))
    assert status == 130, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert "imaginem run: interrupted." in output
    assert re.search(r"Results stored so far, of the 48 images: decode \d+, ocr [1-9]", output)
    assert "Run the same command again to resume" in output

    again = _run_on_a_terminal(argv)
    computed = int(re.search(r"ocr +(\d+) processed", again).group(1))
    assert 0 < computed < 48, again[-2000:]
    results = table_rows(root, schemas.RESULTS)
    assert sorted(row["step"] for row in results).count("ocr") == 48
