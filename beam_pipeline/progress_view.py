"""Progress of a running pipeline, as the workers report it: images done per step,
the rate and the time left (from the step furthest behind).

On a terminal one line is redrawn every half second; otherwise (logs, CI) a line is
logged every `LOG_EVERY_SECONDS`. Works where the workers inherit the driver's
environment (the local runner); other runners have their own consoles.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from transforms import progress
from transforms.per_image import Outcome
from transforms.records import READ_STEP, StepName
from transforms.remote.http_server import BackgroundServer, JsonHandler

LOGGER = logging.getLogger("imaginem")
REDRAW_SECONDS = 0.5
LOG_EVERY_SECONDS = 30.0
# Steps whose failures drop the image from the run, and so from every later step.
_DROPPING = (READ_STEP, StepName.DECODE)
# Counters that each mean one image done with a step, whatever happened to it.
DONE = (
    "processed",
    Outcome.REUSED,
    Outcome.SKIPPED_EXISTING,
    "failed",
    "skipped_upstream_failed",
)


class _Counts:
    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, counts: dict[str, int]) -> None:
        with self._lock:
            self._counts.update(counts)

    def done(self, step: str) -> int:
        with self._lock:
            return sum(self._counts[progress.key(step, name)] for name in DONE)

    def by_namespace(self) -> dict[str, dict[str, int]]:
        """namespace -> counter name -> count, as the summary reads Beam's metrics."""
        nested: dict[str, dict[str, int]] = collections.defaultdict(dict)
        with self._lock:
            for key, value in self._counts.items():
                namespace, _, name = key.partition("/")
                nested[namespace][name] = value
        return nested

    def count(self, namespace: str, name: str) -> int:
        with self._lock:
            return self._counts[progress.key(namespace, name)]

    def dropped(self, step: str) -> int:
        """Images `step` never sees: an earlier step could not read or decode them."""
        earlier = _DROPPING[: _DROPPING.index(step)] if step in _DROPPING else _DROPPING
        with self._lock:
            return sum(self._counts[progress.key(name, "failed")] for name in earlier)


class _Handler(JsonHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        length = int(self.headers.get("Content-Length") or 0)
        try:
            counts = json.loads(self.rfile.read(length))
            self.server.state.add({str(k): int(v) for k, v in counts.items()})
        except (ValueError, AttributeError):
            self.send_json(400, {"error": "expected {counter: count}"})
            return
        self.send_json(200, {})


def describe(
    done: dict[str, int], total: int, elapsed: float, dropped: dict[str, int] | None = None
) -> str:
    """`decode 38/120 · ocr 12/118 · 2.1 images/s · about 52 s left`; each step counts
    only the images that reach it (`total` less its `dropped`)."""
    totals = {step: total - (dropped or {}).get(step, 0) for step in done}
    parts = [f"{step} {count}/{totals[step]}" for step, count in done.items()]
    if done and elapsed > 0:
        slowest = min(done, key=lambda step: done[step] / max(totals[step], 1))
        rate = done[slowest] / elapsed
        if rate:
            parts.append(f"{rate:.1f} images/s")
            if done[slowest] < totals[slowest]:
                parts.append(f"about {_duration((totals[slowest] - done[slowest]) / rate)} left")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def show_progress(steps: Sequence[str], total: int, stream: TextIO | None = None):
    """Shows the run's progress while the block runs (the pipeline's run)."""

    def line(counts: _Counts, elapsed: float) -> str:
        done = {step: counts.done(step) for step in steps}
        dropped = {step: counts.dropped(step) for step in steps}
        return describe(done, total, elapsed, dropped)

    return showing(line, stream)


def watch_line(counts: _Counts, elapsed: float) -> str:
    """`watch: 12 seen · 10 committed · 1 failed · 2 in flight · 0.8 images/s`."""
    seen, committed = counts.count("watch", "seen"), counts.count("watch", "committed")
    failed = sum(counts.count(step, "failed") for step in _DROPPING)
    rate = f" · {committed / elapsed:.1f} images/s" if elapsed > 0 and committed else ""
    return (
        f"watch: {seen} seen · {committed} committed · {failed} failed · "
        f"{max(0, seen - committed)} in flight{rate}"
    )


@contextlib.contextmanager
def showing(
    line: Callable[[_Counts, float], str], stream: TextIO | None = None
) -> Iterator[_Counts]:
    """Shows `line(counts, seconds elapsed)` while the block runs; yields the counts."""
    stream = stream or sys.stderr
    counts = _Counts()
    stop = threading.Event()
    on_terminal = stream.isatty()

    def draw() -> None:
        started, logged = time.monotonic(), time.monotonic()
        while not stop.wait(REDRAW_SECONDS):
            text = line(counts, time.monotonic() - started)
            if on_terminal:
                # One row, redrawn: a line wider than the terminal would wrap and scroll.
                width = shutil.get_terminal_size().columns - 1
                stream.write(f"\r{text[:width]}\x1b[K")
                stream.flush()
            elif time.monotonic() - logged >= LOG_EVERY_SECONDS:
                logged = time.monotonic()
                LOGGER.info("Progress: %s", text)

    previous = os.environ.get(progress.PROGRESS_URL_ENV)
    with BackgroundServer(_Handler, counts) as server:
        os.environ[progress.PROGRESS_URL_ENV] = server.base_url
        drawer = threading.Thread(target=draw, daemon=True)
        drawer.start()
        try:
            yield counts
        finally:
            stop.set()
            drawer.join()
            if on_terminal:
                stream.write("\r\x1b[K")
                stream.flush()
            if previous is None:
                os.environ.pop(progress.PROGRESS_URL_ENV, None)
            else:
                os.environ[progress.PROGRESS_URL_ENV] = previous
