"""API calls against the fake: faults are retried, refusals kept, 429s waited out."""

import httpx
import pytest

from tests import image_factory
from tests.fake_apis import FakeApiSettings, FakeVisionApi
from transforms.remote.http_call import ApiRefusedError, CallStats, call_json
from transforms.remote.quota import QuotaClient, QuotaServer, Rate
from transforms.retry import RetryPolicy

POLICY = RetryPolicy(tries=8, first_delay=0.05, max_delay=0.5)


def _analyze(server, client, data):
    url = f"{server.url}/computervision/imageanalysis:analyze?features=tags"
    return lambda: client.post(url, content=data)


def test_thirty_percent_faults_all_end_in_an_answer():
    settings = FakeApiSettings(fault_rate=0.3, stall_seconds=1.0, seed=7)
    stats = CallStats()
    with FakeVisionApi(settings) as server, httpx.Client(timeout=0.3) as client:
        results = [
            call_json(
                _analyze(server, client, image_factory.png_bytes(60 + i, 50)), None, POLICY, stats
            )
            for i in range(40)
        ]
    assert [r["metadata"]["width"] for r in results] == [60 + i for i in range(40)]
    faults = [entry.status for entry in server.log if not isinstance(entry.status, int)]
    assert len(faults) == stats.retries > 0
    assert {"timeout", "reset", "malformed"} & set(faults)


def test_a_refused_image_is_not_retried_and_keeps_the_api_message():
    stats = CallStats()
    with FakeVisionApi() as server, httpx.Client() as client:
        with pytest.raises(ApiRefusedError, match="HTTP 400: Image format is not valid") as error:
            call_json(_analyze(server, client, b"not an image"), None, POLICY, stats)
    assert error.value.status == 400
    assert stats.requests == 1 and stats.retries == 0


def test_429_is_waited_out_and_a_shared_quota_avoids_it():
    data = image_factory.png_bytes(64, 64)
    stats = CallStats()
    with FakeVisionApi(FakeApiSettings(rate=Rate(5))) as server, httpx.Client() as client:
        for _ in range(8):
            call_json(_analyze(server, client, data), None, POLICY, stats)
    assert stats.throttled > 0 and stats.throttled_seconds >= 1

    # Arrival times jitter by a few milliseconds: the quota stays one request per
    # second under the API's limit, as it should against a real API.
    paced = CallStats()
    with (
        FakeVisionApi(FakeApiSettings(rate=Rate(6))) as server,
        QuotaServer(Rate(5)) as quota,
        httpx.Client() as client,
    ):
        for _ in range(8):
            call_json(_analyze(server, client, data), QuotaClient(quota.url), POLICY, paced)
    assert paced.throttled == 0 and paced.requests == 8
    assert paced.quota_seconds > 1
