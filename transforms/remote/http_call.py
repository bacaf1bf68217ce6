"""One API call over HTTP, held to the job's quota and retried the way the APIs ask.

* `429`: wait for its `Retry-After` (seconds), then try again; counted as throttling.
* `5xx`, timeouts, reset connections and malformed JSON: exponential backoff with
  jitter, a bounded number of tries.
* any other `4xx` (an image the API refuses, a bad key): `ApiRefusedError` with the
  API's own message, never retried.

Every attempt, retries included, first takes a slot from the quota, so the job's
rate holds whatever the API answers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import httpx

from transforms.remote.quota import QuotaClient
from transforms.retry import RetryPolicy

_MAX_RETRY_AFTER_SECONDS = 300.0
# A quota set above what the API allows would otherwise be retried for ever.
MAX_THROTTLED_TRIES = 100


class ApiRefusedError(RuntimeError):
    """The API refused the request (a 4xx other than 408 and 429); its message is kept.

    `code` is the API's own error code (Azure's inner code when it gives one).
    """

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.code = code

    def __reduce__(self):
        # Travels between workers with the image it belongs to.
        return type(self), (self.status, self.message, self.code)

    @property
    def refuses_the_image(self) -> bool:
        """The image itself is refused (Azure's `InvalidImage…` codes), so asking again
        gets the same answer; a bad key or parameter (also 400 at times) is not that."""
        return self.status in (400, 413, 415) and "image" in self.code.lower()


class ApiUnavailableError(RuntimeError):
    """Every try failed with a transient error; the last one is the cause."""


@dataclasses.dataclass
class CallStats:
    """What calls cost, for metrics and the run summary."""

    requests: int = 0
    images: int = 0  # images sent
    retries: int = 0
    throttled: int = 0  # 429 answers
    throttled_seconds: float = 0.0  # waited because of Retry-After
    quota_seconds: float = 0.0  # waited for a quota slot


def _api_error(response: httpx.Response) -> tuple[str, str]:
    """(message, code) of an error answer, in Azure's or Google's shape."""
    try:
        error = response.json().get("error", {})
        inner = error.get("innererror") or {}
        code = str(inner.get("code") or error.get("code") or "")
        return str(error.get("message") or error) or response.reason_phrase, code
    except (ValueError, AttributeError):
        return response.text[:200] or response.reason_phrase, ""


def _retry_after(response: httpx.Response, fallback: float) -> float:
    try:
        return min(_MAX_RETRY_AFTER_SECONDS, max(0.0, float(response.headers["Retry-After"])))
    except (KeyError, ValueError):
        return fallback


def call_json(
    send: Callable[[], httpx.Response],
    quota: QuotaClient | None,
    policy: RetryPolicy,
    stats: CallStats,
    sleep: Callable[[float], None] = time.sleep,
    parse: Callable[[Any], Any] = lambda payload: payload,
) -> Any:
    """Sends with `send()` until a JSON answer arrives; returns `parse(answer)`.

    `parse` may raise ValueError for an answer that is well-formed JSON but not
    what was asked for; that is retried like malformed JSON.

    Raises:
        ApiRefusedError: the API refused the request.
        ApiUnavailableError: `policy.tries` transient failures, or more than
            `MAX_THROTTLED_TRIES` 429s (then the quota is above the API's).
    """
    failures = 0
    while True:
        if quota is not None:
            stats.quota_seconds += quota.acquire()
        stats.requests += 1
        try:
            response = send()
            if response.status_code == 429 and stats.throttled < MAX_THROTTLED_TRIES:
                wait = _retry_after(response, policy.delay(stats.throttled))
                stats.throttled += 1
                stats.throttled_seconds += wait
                stats.retries += 1
                sleep(wait)
                continue
            if response.status_code == 429:
                raise ApiUnavailableError(
                    f"still throttled after {MAX_THROTTLED_TRIES} tries: lower --api-rate"
                )
            if 400 <= response.status_code < 500 and response.status_code != 408:
                raise ApiRefusedError(response.status_code, *_api_error(response))
            if response.status_code >= 400:
                message, _ = _api_error(response)
                raise ApiUnavailableError(f"HTTP {response.status_code}: {message}")
            return parse(response.json())
        except httpx.LocalProtocolError as error:
            # Its message can quote a header, and so the key: never pass it on.
            raise ApiUnavailableError(
                f"the request could not be built ({type(error).__name__}); check the API key"
            ) from None
        except (httpx.TransportError, ApiUnavailableError, ValueError) as error:
            failures += 1
            if failures == policy.tries:
                raise ApiUnavailableError(
                    f"{failures} tries failed; last: {type(error).__name__}: {error}"
                ) from error
            stats.retries += 1
            sleep(policy.delay(failures - 1))
