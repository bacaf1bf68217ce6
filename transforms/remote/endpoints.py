"""Where each API is and which key it takes: from the environment or a config file.

For an API named `azure-vision` the environment variables are
`IMAGINEM_AZURE_VISION_ENDPOINT` and `IMAGINEM_AZURE_VISION_KEY`; a TOML config file
(`--api-config`) may give the same under a section of that name, with an optional
published price:

    [azure-vision]
    endpoint = "https://NAME.cognitiveservices.azure.com"
    key = "..."
    price_per_1000 = 1.0

The environment wins over the file. Workers read the key from the environment only,
so it never travels in the job's graph, options or logs; a key from the file is put
in the environment of this process for its local workers.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import MutableMapping
from urllib.parse import urlsplit

from transforms.remote.registry import APIS

_FILE_FIELDS = {"endpoint", "key", "price_per_1000"}


@dataclasses.dataclass(frozen=True)
class ApiEndpoint:
    """Where an API is, and the environment variable holding its key (never the key)."""

    url: str
    key_env: str

    def key(self) -> str:
        return checked_key(os.environ.get(self.key_env, ""), self.key_env)


def checked_key(value: str, key_env: str) -> str:
    """The key without surrounding blanks (a key file's newline); never shown in errors."""
    value = value.strip()
    if not value:
        raise ValueError(f"the API key is missing: set {key_env} on every worker")
    if not all(33 <= ord(character) < 127 for character in value):
        raise ValueError(f"the API key in {key_env} has characters an API key cannot have")
    return value


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    """What a config file says about one API."""

    endpoint: str | None = None
    key: str | None = dataclasses.field(default=None, repr=False)
    price_per_1000: float | None = None


def env_names(api_name: str) -> tuple[str, str]:
    """(endpoint variable, key variable) for an API."""
    stem = "IMAGINEM_" + api_name.upper().replace("-", "_")
    return f"{stem}_ENDPOINT", f"{stem}_KEY"


def read_config(path: str) -> dict[str, ApiConfig]:
    """Reads a TOML config file of API sections.

    Raises:
        ValueError: unreadable file, unknown API or field, or a wrong type.
    """
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"cannot read --api-config {path}: {error}") from error
    configs = {}
    for name, section in document.items():
        if name not in APIS or not isinstance(section, dict):
            raise ValueError(
                f"--api-config {path}: unknown section [{name}]; known: {', '.join(APIS)}"
            )
        if unknown := sorted(set(section) - _FILE_FIELDS):
            raise ValueError(
                f"--api-config {path} [{name}]: unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_FILE_FIELDS))}"
            )
        price = section.get("price_per_1000")
        if price is not None and (not isinstance(price, int | float) or price < 0):
            raise ValueError(f"--api-config {path} [{name}]: price_per_1000 must be a number ≥ 0")
        for field in ("endpoint", "key"):
            if field in section and not isinstance(section[field], str):
                # The value is not echoed: it may be a key.
                raise ValueError(
                    f"--api-config {path} [{name}]: {field} must be a quoted string, "
                    f'e.g. {field} = "..."'
                )
        configs[name] = ApiConfig(section.get("endpoint"), section.get("key"), price)
    return configs


def _check_url(api_name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not echoed: a mistyped URL may still carry a key.
        raise ValueError(f"the {api_name} endpoint must be an http(s) URL such as https://HOST")
    if parts.query or parts.username or parts.password:
        # A key in the URL would end up in logs: keys go in the key variable.
        raise ValueError(
            f"the {api_name} endpoint must not carry a query or credentials; "
            f"put the key in {env_names(api_name)[1]}"
        )
    return url.rstrip("/")


def resolve(
    api_name: str, config: ApiConfig | None, environ: MutableMapping[str, str] = os.environ
) -> ApiEndpoint:
    """The endpoint of one API, checked; a key from the file is exported to `environ`.

    Raises:
        ValueError: no endpoint or no key, or an endpoint that is not a plain URL.
    """
    config = config or ApiConfig()
    url_env, key_env = env_names(api_name)
    url = (
        environ.get(url_env)
        or config.endpoint
        or (APIS[api_name].default_endpoint if api_name in APIS else None)
    )
    if not url:
        raise ValueError(
            f"no endpoint for {api_name}: set {url_env}, or `endpoint` under [{api_name}] "
            "in the --api-config file"
        )
    if not environ.get(key_env):
        if not config.key:
            raise ValueError(
                f"no key for {api_name}: set {key_env}, or `key` under [{api_name}] "
                "in the --api-config file"
            )
        environ[key_env] = config.key
    checked_key(environ[key_env], key_env)
    return ApiEndpoint(_check_url(api_name, url), key_env)
