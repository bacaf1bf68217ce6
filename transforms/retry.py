"""Retrying calls to remote storage: which failures are transient, and how long to wait."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def describe(error: BaseException) -> str:
    """`Type: first line of the message`, for reports and one-line errors."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def is_transient(error: BaseException) -> bool:
    """True for failures that may pass on their own: lost connections, timeouts,
    throttling and server errors. A refusal (auth, conflict, bad request) is not."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(error, ServiceRequestError | ServiceResponseError | ConnectionError):
        return True
    if isinstance(error, TimeoutError):
        return True
    if isinstance(error, HttpResponseError):
        return error.status_code in _TRANSIENT_STATUS
    return False


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, so parallel uploads do not retry in step.

    Attributes:
        tries: attempts in all, the first one included.
        first_delay: the cap of the first wait, in seconds; it doubles per retry.
        max_delay: the cap of any one wait.
    """

    tries: int = 8
    first_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, retry: int) -> float:
        return random.uniform(0, min(self.max_delay, self.first_delay * 2**retry))


DEFAULT_RETRY = RetryPolicy()


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    on_retry: Callable[[BaseException], None] = lambda error: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Calls `call`, retrying transient failures; the last failure is raised."""
    for attempt in range(policy.tries):
        try:
            return call()
        except Exception as error:
            if attempt + 1 == policy.tries or not is_transient(error):
                raise
            on_retry(error)
            sleep(policy.delay(attempt))
    raise AssertionError("unreachable")
