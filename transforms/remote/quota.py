"""One request rate for a whole job, however many worker processes share it.

`--api-rate 10/s` must hold across every worker process and bundle: a limiter per
worker would multiply the rate by the number of workers. The driver therefore runs a
small quota service (`QuotaServer`, HTTP on a host the workers can reach) that hands
out start times spaced exactly `1 / rate` apart (the generic cell rate algorithm with
no burst); a worker asks for its slot (`QuotaClient.acquire`) and sleeps until it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_SECONDS |= {"h": 3600, "hour": 3600}


@dataclasses.dataclass(frozen=True)
class Rate:
    """Requests per second."""

    per_second: float

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second

    def __str__(self) -> str:
        return f"{self.per_second:g}/s"


def parse_rate(text: str) -> Rate:
    """`10/s`, `20/min`, `1000/h` -> Rate.

    Raises:
        ValueError: anything else, or a rate of zero.
    """
    match = _RATE.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"invalid rate {text!r}: use a positive number of requests per s, min or h, "
            "e.g. 10/s or 20/min"
        )
    return Rate(float(match.group(1)) / _SECONDS[match.group(2)])


class Schedule:
    """Start times `interval` apart, never earlier than asked for (thread-safe)."""

    def __init__(self, rate: Rate, clock=time.monotonic) -> None:
        self._interval = rate.interval
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Seconds to wait before the caller may start one request."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
            return start - now


class _Handler(BaseHTTPRequestHandler):
    schedule: Schedule

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.dumps({"wait": self.server.schedule.reserve()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


class QuotaServer:
    """The job's quota service; run by the driver for as long as the pipeline runs."""

    def __init__(self, rate: Rate, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.schedule = Schedule(rate)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/reserve"

    def __enter__(self) -> QuotaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()


class QuotaUnavailableError(RuntimeError):
    """The quota service could not be reached: no request is sent without a slot."""


@dataclasses.dataclass(frozen=True)
class QuotaClient:
    """A worker's handle on the job's quota (picklable: it is only a URL)."""

    url: str
    tries: int = 5

    def acquire(self) -> float:
        """Blocks until this worker may send one request; returns the seconds waited."""
        for attempt in range(self.tries):
            try:
                request = urllib.request.Request(self.url, data=b"", method="POST")
                with urllib.request.urlopen(request, timeout=10) as response:
                    wait = json.load(response)["wait"]
                break
            except OSError as error:
                if attempt + 1 == self.tries:
                    raise QuotaUnavailableError(
                        f"quota service {self.url} unreachable: {error}"
                    ) from error
                time.sleep(0.2 * 2**attempt)
        time.sleep(wait)
        return wait
