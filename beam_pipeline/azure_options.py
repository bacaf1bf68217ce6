"""Command-line flags for an Azure corpus, shared by `ingest` and `run`.

None of them takes a secret: the connection string stays in the environment or a
file, so it never shows up in a shell history, a process list or `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from transforms.io import azure_access
from transforms.io.azure_access import AzureAccess, AzureAccessError
from transforms.tables.azure_tables import AzureTables, check_table_prefix

# Beam's own flag would put the secret on the command line and into pipeline options.
FORBIDDEN_BEAM_FLAG = "--azure_connection_string"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Azure Storage (for an azfs://ACCOUNT/CONTAINER corpus)",
        f"The connection string is read from ${azure_access.CONNECTION_STRING_ENV} unless "
        "told otherwise; it is never accepted on the command line.",
    )
    group.add_argument(
        "--azure-connection-string-env",
        metavar="NAME",
        default=azure_access.CONNECTION_STRING_ENV,
        help="environment variable holding the connection string (default %(default)s)",
    )
    group.add_argument(
        "--azure-connection-string-file",
        metavar="PATH",
        help="read the connection string from this file instead",
    )
    group.add_argument(
        "--azure-account-url",
        metavar="URL",
        help="sign in with Azure AD (DefaultAzureCredential) to this blob service, "
        "e.g. https://ACCOUNT.blob.core.windows.net, instead of a connection string",
    )
    group.add_argument(
        "--no-azure-tables",
        dest="azure_tables",
        action="store_false",
        help="do not write the Azure Table copy of the metadata (written by default)",
    )
    group.add_argument(
        "--azure-table-prefix",
        metavar="PREFIX",
        default="",
        help="prefix for the table names, so several corpora can share one account",
    )


@dataclasses.dataclass(frozen=True)
class AzureSettings:
    access: AzureAccess | None
    tables: AzureTables | None


def resolve(args: argparse.Namespace, corpus_root: str) -> AzureSettings:
    """The account and tables for `corpus_root`; both None when it is not on Azure.

    Raises:
        ValueError: missing or inconsistent settings, or an account that cannot be
            reached (the message holds no secret).
    """
    access = azure_access.resolve(
        corpus_root,
        args.azure_connection_string_env,
        args.azure_connection_string_file,
        args.azure_account_url,
    )
    if access is None:
        return AzureSettings(None, None)
    azure_access.check_reachable(access, corpus_root)
    # azure-core logs every request at INFO; keep the console for our own messages.
    logging.getLogger("azure").setLevel(logging.WARNING)
    prefix = check_table_prefix(args.azure_table_prefix)
    tables = AzureTables(access, prefix) if args.azure_tables else None
    return AzureSettings(access, tables)


def check_beam_flags(flags: list[str]) -> None:
    """Raises if Beam's connection-string flag was used (its value would be exposed)."""
    if any(flag.split("=", 1)[0] == FORBIDDEN_BEAM_FLAG for flag in flags):
        raise AzureAccessError(
            f"{FORBIDDEN_BEAM_FLAG} is refused: it puts the secret on the command line. Set "
            f"${azure_access.CONNECTION_STRING_ENV} or use --azure-connection-string-file"
        )


def beam_flags_for(access: AzureAccess | None) -> list[str]:
    """Beam flags that point its Azure filesystem at the account (Azure AD sign-in)."""
    if access is not None and access.connection_string_env is None:
        return [f"--blob_service_endpoint={access.blob_url}"]
    return []
