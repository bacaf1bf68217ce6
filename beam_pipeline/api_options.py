"""Command-line flags for steps run on remote APIs: quota, config, timeouts, dry run.

No flag takes a key: keys come from the environment or the `--api-config` file.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket

from beam_pipeline.arg_types import positive
from transforms.remote import endpoints
from transforms.remote.api import Api
from transforms.remote.api_step import API_RETRY, ApiSettings
from transforms.remote.quota import (
    QuotaServer,
    QuotaUnavailableError,
    Rate,
    parse_rate,
    served_rate,
)


def rate_type(text: str) -> Rate:
    try:
        return parse_rate(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "remote APIs (for steps run with --STEP-backend azure or google)",
        "Endpoints and keys come from IMAGINEM_<API>_ENDPOINT and IMAGINEM_<API>_KEY "
        "(API: AZURE_VISION, AZURE_FACE, GOOGLE_VISION) or from --api-config.",
    )
    group.add_argument(
        "--api-rate",
        type=rate_type,
        metavar="RATE",
        help="requests per second, minute or hour for the whole job, across all workers, "
        "e.g. 10/s or 20/min (default: no limit but the APIs' own 429s)",
    )
    group.add_argument(
        "--api-config",
        metavar="PATH",
        help="TOML file with an [azure-vision], [azure-face] or [google-vision] section: "
        "endpoint, key, price_per_1000",
    )
    group.add_argument(
        "--api-timeout",
        type=positive(float),
        default=60.0,
        metavar="SECONDS",
        help="give up on a request after this long and retry it (default %(default)s)",
    )
    group.add_argument(
        "--api-tries",
        type=positive(int),
        default=API_RETRY.tries,
        metavar="N",
        help="tries per request through 5xx, timeouts and dropped connections before "
        "its images go to the errors table (default %(default)s)",
    )
    group.add_argument(
        "--api-concurrency",
        type=positive(int),
        default=4,
        metavar="N",
        help="requests in flight per worker process (default %(default)s)",
    )
    group.add_argument(
        "--api-quota-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the job's quota service listens on; workers on other machines "
        "must reach it (default %(default)s)",
    )
    group.add_argument(
        "--api-quota-advertise",
        metavar="HOST",
        help="name or address workers reach the quota service by (default: "
        "--api-quota-host, or this machine's name when that is 0.0.0.0)",
    )
    group.add_argument(
        "--api-quota-url",
        metavar="URL",
        help="use the quota service of `imaginem quota-server` at URL, shared by every "
        "run that names it, instead of one for this run (the rate is the server's: "
        "no --api-rate)",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="print how many API calls the run would make (and their price, if the "
        "config gives one), then stop",
    )


def check_host(host: str, flag: str = "--api-quota-host") -> None:
    """Raises ValueError unless the quota service can listen on `host`."""
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as error:
        raise ValueError(
            f"{flag} {host!r} is not an address of this machine or a name that resolves to one"
        ) from error


@dataclasses.dataclass(frozen=True)
class ApiPlan:
    """The APIs a run calls, how, and what they cost."""

    apis: dict[str, Api]  # step -> API
    settings: ApiSettings
    prices: dict[str, float]  # API name -> price per 1,000 billable units
    quota: QuotaServer | None  # started with the pipeline, stopped after it


def resolve(args: argparse.Namespace, chosen: dict[str, Api]) -> ApiPlan | None:
    """Endpoints, keys and the quota service for the steps that run on an API.

    Args:
        args: the parsed flags.
        chosen: step -> the API its settings chose, for the run's steps on an API.

    Raises:
        ValueError: a missing endpoint or key, or a bad config file.
    """
    # Read even when no step runs on an API: a wrong path is a mistake to report.
    config = endpoints.read_config(args.api_config) if args.api_config else {}
    if args.api_quota_url and args.api_rate:
        raise ValueError(
            "--api-rate and --api-quota-url exclude each other: the quota server holds "
            "the rate it was started with"
        )
    if args.api_rate:
        check_host(args.api_quota_host)
    if not chosen:
        return None
    names = sorted({api.name for api in chosen.values()})
    found = {name: endpoints.resolve(name, config.get(name)) for name in names}
    prices = {
        name: config[name].price_per_1000
        for name in names
        if name in config and config[name].price_per_1000 is not None
    }
    quota, quota_url = None, args.api_quota_url
    if quota_url and not args.dry_run:
        try:
            served_rate(quota_url)  # unreachable: said now, not by every worker
        except QuotaUnavailableError as error:
            raise ValueError(f"--api-quota-url: {error}") from None
    if args.api_rate and not args.dry_run:
        quota = QuotaServer(
            args.api_rate, host=args.api_quota_host, advertised_host=args.api_quota_advertise
        )
        quota_url = quota.url
    settings = ApiSettings(
        endpoints=found,
        quota_url=quota_url,
        timeout_seconds=args.api_timeout,
        concurrency=args.api_concurrency,
        retry=dataclasses.replace(API_RETRY, tries=args.api_tries),
    )
    return ApiPlan(chosen, settings, prices, quota)
