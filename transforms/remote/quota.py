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
import socket
import threading
import time
import urllib.request

from transforms.remote.http_server import BackgroundServer, JsonHandler

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
        self.rate = rate
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


class _Handler(JsonHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_json(200, {"wait": self.server.state.reserve()})

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_json(200, {"rate_per_second": self.server.state.rate.per_second})


class QuotaServer(BackgroundServer):
    """A quota service: run by the driver for as long as the pipeline runs, or on its
    own (`imaginem quota-server`) for several jobs and remote workers.

    Args:
        host: the address it listens on.
        advertised_host: the name workers reach it by; by default `host`, or this
            machine's name when `host` is 0.0.0.0, which no one can connect to.
    """

    def __init__(
        self,
        rate: Rate,
        host: str = "127.0.0.1",
        port: int = 0,
        advertised_host: str | None = None,
    ) -> None:
        super().__init__(_Handler, Schedule(rate), host, port)
        self.rate = rate
        self._host = advertised_name(host, advertised_host)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/reserve"


# Addresses a server listens on but no client can connect to.
_WILDCARDS = ("0.0.0.0", "")


def advertised_name(host: str, advertised_host: str | None) -> str:
    """The name clients reach a server listening on `host` by."""
    if advertised_host:
        return advertised_host
    return socket.getfqdn() if host in _WILDCARDS else host


# The quota service is the job's own: never reached through an HTTP proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class QuotaUnavailableError(RuntimeError):
    """The quota service could not be reached: no request is sent without a slot."""


def served_rate(url: str) -> Rate:
    """The rate the quota service at `url` holds, asked once.

    Raises:
        QuotaUnavailableError: nothing answers there as a quota service does.
    """
    try:
        with _DIRECT.open(url, timeout=10) as response:
            return Rate(float(json.load(response)["rate_per_second"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise QuotaUnavailableError(
            f"no quota service answers at {url}: {error}; start one with "
            "`imaginem quota-server` and pass the URL it prints"
        ) from None


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
                with _DIRECT.open(request, timeout=10) as response:
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
