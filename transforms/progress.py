"""Counters that also tell the driver how far a run has come, while it runs.

Beam's metrics reach the driver only when the pipeline ends. Where the driver asks
for progress (it sets `IMAGINEM_PROGRESS_URL`, which the local runner's worker
processes inherit), every increment of a counter made here is also added up in the
worker and sent there about twice a second. Progress is best effort: a report that
cannot be sent is dropped; the run's summary comes from Beam's metrics.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import urllib.request

from apache_beam.metrics import Metrics

PROGRESS_URL_ENV = "IMAGINEM_PROGRESS_URL"
SEND_EVERY_SECONDS = 0.5

# The driver is on loopback: never through an HTTP proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_pending: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()
_sender: threading.Thread | None = None


def key(namespace: str, name: str) -> str:
    """How a counter is named in progress reports: `<step>/<counter>`."""
    return f"{namespace}/{name}"


class ProgressCounter:
    """A Beam counter whose increments are also reported as progress."""

    def __init__(self, namespace: str, name: str) -> None:
        self._metric = Metrics.counter(namespace, name)
        self._key = key(namespace, name)

    def inc(self, n: int = 1) -> None:
        self._metric.inc(n)
        if os.environ.get(PROGRESS_URL_ENV):
            _add(self._key, n)


def counter(namespace: str, name: str) -> ProgressCounter:
    return ProgressCounter(namespace, name)


def _add(name: str, n: int) -> None:
    global _sender
    with _lock:
        _pending[name] += n
        if _sender is None:
            _sender = threading.Thread(target=_send_forever, daemon=True)
            _sender.start()


def _send_forever() -> None:
    # The address is read each time: a process may run several pipelines.
    while True:
        time.sleep(SEND_EVERY_SECONDS)
        send_pending(os.environ.get(PROGRESS_URL_ENV))


def flush() -> None:
    """Sends what this process counted now, not at the next report: before a
    pipeline that ends soon after can stop listening."""
    send_pending(os.environ.get(PROGRESS_URL_ENV))


def send_pending(url: str | None) -> None:
    """Sends what was counted since the last report (dropped if it cannot be sent)."""
    with _lock:
        counts = dict(_pending)
        _pending.clear()
    if not counts or not url:
        return
    request = urllib.request.Request(
        url,
        data=json.dumps(counts).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with _DIRECT.open(request, timeout=5):
            pass
    except OSError:
        pass  # the driver has stopped listening, or is busy: progress is best effort
