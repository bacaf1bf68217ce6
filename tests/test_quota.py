"""The job-wide request rate: parsing, spacing, and two processes sharing one quota."""

import multiprocessing
import socket
import time

import pytest

from transforms.remote.quota import (
    QuotaClient,
    QuotaServer,
    QuotaUnavailableError,
    Rate,
    Schedule,
    advertised_name,
    parse_rate,
    served_rate,
)


@pytest.mark.parametrize(
    "text, per_second", [("10/s", 10), ("20/min", 20 / 60), (" 1.5 / second", 1.5), ("3600/h", 1)]
)
def test_parse_rate(text, per_second):
    assert parse_rate(text).per_second == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["10", "0/s", "-1/s", "10/day", "ten/s", ""])
def test_bad_rates_say_what_to_write(text):
    with pytest.raises(ValueError, match="e.g. 10/s or 20/min"):
        parse_rate(text)


def test_schedule_spaces_starts_and_never_saves_up_a_burst():
    now = [100.0]
    schedule = Schedule(Rate(4), clock=lambda: now[0])
    assert [schedule.reserve() for _ in range(3)] == [0.0, 0.25, 0.5]
    now[0] = 200.0  # idle for a long time: the next start is now, then spaced again
    assert [schedule.reserve() for _ in range(2)] == [0.0, 0.25]


def _acquire_many(url, count, queue):
    client = QuotaClient(url)
    for _ in range(count):
        client.acquire()
        queue.put(time.time())


def test_two_processes_share_one_rate():
    rate = 20
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with QuotaServer(Rate(rate)) as server:
        workers = [
            context.Process(target=_acquire_many, args=(server.url, 30, queue)) for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        starts = sorted(queue.get(timeout=60) for _ in range(60))
        for worker in workers:
            worker.join()
    # Any one-second window holds at most the rate (one start of slack for timing).
    most = max(sum(1 for t in starts if s <= t < s + 1) for s in starts)
    assert most <= rate + 1
    # And the rate is used: 60 starts take about 3 s, not 6 (one process at a time).
    assert starts[-1] - starts[0] < 60 / rate * 1.1


def test_workers_are_given_an_address_they_can_reach():
    assert advertised_name("0.0.0.0", None) == socket.getfqdn()
    assert advertised_name("0.0.0.0", "quota.internal") == "quota.internal"
    assert advertised_name("10.1.2.3", None) == "10.1.2.3"
    with QuotaServer(Rate(5), advertised_host="localhost") as named:
        assert named.url == f"http://localhost:{named.port}/reserve"
    with QuotaServer(Rate(5)) as local:
        assert local.url == f"http://127.0.0.1:{local.port}/reserve"


def test_a_quota_service_says_its_rate_and_a_wrong_url_is_named():
    with QuotaServer(Rate(7)) as server:
        assert served_rate(server.url) == Rate(7)
        port = server.port
    with pytest.raises(QuotaUnavailableError, match=f"no quota service answers at .*:{port}"):
        served_rate(f"http://127.0.0.1:{port}/reserve")
