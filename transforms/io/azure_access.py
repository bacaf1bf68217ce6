"""How to reach an Azure Storage account without ever holding its secret in the graph.

A corpus root `azfs://ACCOUNT/CONTAINER[/prefix]` lives in Blob Storage. Credentials
come from a connection string in an environment variable (by default
`AZURE_STORAGE_CONNECTION_STRING`, which Beam's Azure filesystem also reads), from a
file, or from Azure AD through `DefaultAzureCredential` and the account's URL. An
`AzureAccess` names where the secret is, never what it is: it is pickled into the
pipeline's DoFns, each of which builds its own clients on its worker.
"""

from __future__ import annotations

import dataclasses
import os
import re
from urllib.parse import urlsplit

from transforms.retry import describe

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
# Where `resolve` leaves an Azure AD sign-in's account URL (not a secret) for workers.
ACCOUNT_URL_ENV = "IMAGINEM_AZURE_ACCOUNT_URL"
AZFS_SCHEME = "azfs://"
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


class AzureAccessError(ValueError):
    """Missing or inconsistent Azure settings; the message never holds a secret."""


def is_azfs(uri: str) -> bool:
    return uri.startswith(AZFS_SCHEME)


def split_azfs(uri: str) -> tuple[str, str, str]:
    """`azfs://account/container/a/b` -> (account, container, "a/b").

    Raises:
        AzureAccessError: not an azfs URI, or an invalid container name.
    """
    if not is_azfs(uri):
        raise AzureAccessError(f"{uri!r} is not an azfs:// URI")
    account, _, rest = uri[len(AZFS_SCHEME) :].partition("/")
    container, _, blob = rest.partition("/")
    if not account or not _CONTAINER.fullmatch(container):
        raise AzureAccessError(
            f"{uri!r} is not azfs://ACCOUNT/CONTAINER[/path]: a container name is 3-63 "
            "lower-case letters, digits and single hyphens"
        )
    return account, container, blob


def _connection_string_fields(connection_string: str) -> dict[str, str]:
    fields = {}
    for part in connection_string.split(";"):
        name, separator, value = part.partition("=")
        if separator:
            fields[name.strip().lower()] = value.strip()
    return fields


@dataclasses.dataclass(frozen=True)
class AzureAccess:
    """One storage account: its name, and where its credential comes from.

    Attributes:
        account: the storage account name.
        connection_string_env: environment variable holding the connection string;
            None means Azure AD (`DefaultAzureCredential`) with the URLs below.
        blob_url, table_url: service URLs for Azure AD sign-in.
    """

    account: str
    connection_string_env: str | None = CONNECTION_STRING_ENV
    blob_url: str | None = None
    table_url: str | None = None

    def _connection_string(self) -> str:
        value = os.environ.get(self.connection_string_env or "", "")
        if not value:
            raise AzureAccessError(
                f"environment variable {self.connection_string_env} is not set on this worker"
            )
        return value

    def blob_service(self, **client_options):
        from azure.storage.blob import BlobServiceClient

        if self.connection_string_env:
            return BlobServiceClient.from_connection_string(
                self._connection_string(), **client_options
            )
        return BlobServiceClient(self.blob_url, credential=_default_credential(), **client_options)

    def delta_storage_options(self) -> dict[str, str]:
        """Options for delta-rs's own Azure object store, built at the moment of use.

        The key (or an Azure AD token) is read here, on whichever machine opens the
        table, and never kept in anything that is pickled or logged.
        """
        options = {"account_name": self.account}
        if not self.connection_string_env:
            token = _default_credential().get_token("https://storage.azure.com/.default")
            return {**options, "bearer_token": token.token}
        fields = _connection_string_fields(self._connection_string())
        if "accountkey" in fields:
            options["account_key"] = fields["accountkey"]
        if "sharedaccesssignature" in fields:
            options["sas_key"] = fields["sharedaccesssignature"]
        if endpoint := fields.get("blobendpoint"):
            options["azure_storage_endpoint"] = endpoint.rstrip("/")
            if endpoint.startswith("http://"):
                options["allow_http"] = "true"
        return options

    def queue_client(self, queue: str, **client_options):
        """A client of one Storage Queue of the account."""
        from azure.storage.queue import QueueClient

        if self.connection_string_env:
            return QueueClient.from_connection_string(
                self._connection_string(), queue, **client_options
            )
        if ".blob." not in (self.blob_url or ""):
            raise AzureAccessError(
                f"cannot derive the queue service URL from {self.blob_url!r}: expected "
                "https://ACCOUNT.blob.core.windows.net, or use a connection string"
            )
        url = self.blob_url.replace(".blob.", ".queue.", 1)
        return QueueClient(url, queue, credential=_default_credential(), **client_options)

    def table_service(self, **client_options):
        from azure.data.tables import TableServiceClient

        if self.connection_string_env:
            return TableServiceClient.from_connection_string(
                self._connection_string(), **client_options
            )
        return TableServiceClient(
            self.table_url, credential=_default_credential(), **client_options
        )


def _default_credential():
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _table_url_for(blob_url: str) -> str:
    if ".blob." not in blob_url:
        raise AzureAccessError(
            f"cannot derive the table service URL from {blob_url!r}: expected "
            "https://ACCOUNT.blob.core.windows.net"
        )
    return blob_url.replace(".blob.", ".table.", 1)


def _azure_ad_access(account: str, account_url: str) -> AzureAccess:
    url = urlsplit(account_url)
    if url.query or url.username or url.password:
        raise AzureAccessError("the account URL may not carry a query or credentials (no SAS)")
    if not (url.hostname or "").startswith(f"{account}."):
        raise AzureAccessError(
            f"the account URL's host {url.hostname!r} is not the corpus account {account!r}"
        )
    if os.environ.get(CONNECTION_STRING_ENV):
        # Beam's Azure filesystem would use it instead, splitting the corpus in two.
        raise AzureAccessError(
            f"${CONNECTION_STRING_ENV} is set: unset it to sign in with the account URL"
        )
    blob_url = account_url.rstrip("/")
    return AzureAccess(account, None, blob_url, _table_url_for(blob_url))


def account_access(account: str) -> AzureAccess:
    """The access this process (or a worker it started) was set up with for `account`.

    `resolve` leaves the account URL of an Azure AD sign-in in the environment, as it
    does a connection string, so code that only knows the corpus root (the Delta
    tables, on any worker) signs in the same way.
    """
    account_url = os.environ.get(ACCOUNT_URL_ENV, "")
    if (urlsplit(account_url).hostname or "").startswith(f"{account}."):
        return _azure_ad_access(account, account_url)
    return AzureAccess(account)


def resolve(
    corpus_root: str,
    connection_string_env: str = CONNECTION_STRING_ENV,
    connection_string_file: str | None = None,
    account_url: str | None = None,
) -> AzureAccess | None:
    """The account access for `corpus_root`, or None when the root is not on Azure.

    A connection string read from a file or a non-default variable is also exported
    as `AZURE_STORAGE_CONNECTION_STRING` in this process, where Beam's Azure
    filesystem and the local runner's worker processes look for it.

    Raises:
        AzureAccessError: the credential is missing, unreadable, or for another account.
    """
    if not is_azfs(corpus_root):
        return None
    account, _, _ = split_azfs(corpus_root)
    if account_url:
        if connection_string_file:
            raise AzureAccessError("give an account URL or a connection string file, not both")
        access = _azure_ad_access(account, account_url)
        os.environ[ACCOUNT_URL_ENV] = access.blob_url
        return access
    if connection_string_file:
        try:
            with open(connection_string_file, encoding="utf-8") as handle:
                connection_string = handle.read().strip()
        except OSError as error:
            raise AzureAccessError(
                f"cannot read the connection string file: {error.strerror}"
            ) from None
        source = f"the file {connection_string_file}"
    else:
        connection_string = os.environ.get(connection_string_env, "").strip()
        source = f"${connection_string_env}"
    if not connection_string:
        raise AzureAccessError(
            f"no Azure connection string for {corpus_root} in {source}: set it, or pass "
            "--azure-connection-string-file PATH or --azure-account-url URL"
        )
    fields = _connection_string_fields(connection_string)
    if "accountname" not in fields:
        raise AzureAccessError(f"the connection string in {source} has no AccountName")
    if fields["accountname"] != account:
        raise AzureAccessError(
            f"the connection string in {source} is for account {fields['accountname']!r}, "
            f"but the corpus is in account {account!r}"
        )
    os.environ[CONNECTION_STRING_ENV] = connection_string
    return AzureAccess(account)


# A first contact answers fast or not at all: no retries, short timeouts.
_PROBE_OPTIONS = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 10}


def check_reachable(access: AzureAccess, corpus_root: str) -> None:
    """Asks the blob service once whether the root's container exists.

    Raises:
        AzureAccessError: the service cannot be reached or refuses the credential,
            said in one line (which holds no secret), before any work starts.
    """
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    _, container, _ = split_azfs(corpus_root + "/")
    service = access.blob_service(**_PROBE_OPTIONS)
    # The client's URL carries a SAS token when the credential is one: never shown.
    endpoint = urlsplit(service.url)._replace(query="").geturl()
    where = f"the blob service of account {access.account} ({endpoint})"
    try:
        service.get_container_client(container).exists()
    except HttpResponseError as error:
        if isinstance(error, ClientAuthenticationError) or error.status_code in (401, 403):
            raise AzureAccessError(
                f"{where} refused the credential: {describe(error)}; check the account "
                "key, SAS or sign-in"
            ) from None
        raise AzureAccessError(f"{where} answered {error.status_code}: {describe(error)}") from None
    except AzureError as error:  # no connection, or no answer on it
        raise AzureAccessError(
            f"cannot reach {where}: {describe(error)}; check the account name, the "
            "endpoint in the connection string and the network"
        ) from None
