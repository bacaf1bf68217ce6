"""Uploading originals to Azure Blob Storage with `azure-storage-blob`.

Each original is stored once: its SHA-256 goes into the blob's metadata, and the
upload is conditional (`If-None-Match: *`), so a blob that exists — written by an
earlier run, a concurrent one, or by this very upload when only its response was
lost — is never written again; its recorded hash is compared instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import time

from transforms.io import azure_access
from transforms.io.azure_access import AzureAccess

SHA256_METADATA = "sha256"
# One layer of retries, ours (`transforms.retry`), counted and reported per file.
_CLIENT_OPTIONS = {"retry_total": 0, "connection_timeout": 20, "read_timeout": 120}


class BlobContainer:
    """The container of an `azfs://ACCOUNT/CONTAINER` corpus root, for its originals."""

    def __init__(self, access: AzureAccess, corpus_root: str) -> None:
        _, container, _ = azure_access.split_azfs(corpus_root + "/")
        self._container = access.blob_service(**_CLIENT_OPTIONS).get_container_client(container)

    def create_container(self) -> None:
        """Creates the container if it is missing, private (no anonymous access)."""
        from azure.core.exceptions import ResourceExistsError

        if self._container.exists():  # a credential for one container may not create any
            return
        try:
            self._container.create_container(public_access=None)
        except ResourceExistsError:
            pass

    def _blob(self, uri: str):
        _, _, name = azure_access.split_azfs(uri)
        return self._container.get_blob_client(name)

    def stored_sha256(self, uri: str) -> str | None:
        """The SHA-256 of the blob at `uri`, or None if there is no blob."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._blob(uri)
        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        if recorded := properties.metadata.get(SHA256_METADATA):
            return recorded
        # Put there by another tool: hash its bytes.
        return hashlib.sha256(blob.download_blob().readall()).hexdigest()

    def copy_new(self, uri: str, source_uri: str, sha256: str) -> bool | None:
        """Copies a blob of the same account server-side unless `uri` exists.

        No byte passes through this machine: within one account the service copies
        with the request's own credentials. The source must carry the expected
        SHA-256 (recorded when it was uploaded).

        Returns:
            True if copied, False if a blob was at `uri` already, None if the copy
            cannot be made here (the bytes are then uploaded).
        """
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        if self.stored_sha256(source_uri) != sha256:
            return None
        blob = self._blob(uri)
        try:
            blob.start_copy_from_url(
                self._blob(source_uri).url,
                metadata={SHA256_METADATA: sha256},
                headers={"If-None-Match": "*"},  # only if no blob has that name
            )
        except ResourceExistsError:
            return False
        except HttpResponseError:
            return None
        return self._copied(blob)

    def _copied(self, blob, timeout_seconds: float = 120.0) -> bool:
        """Waits for a server-side copy (within an account, usually done at once)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            copy = blob.get_blob_properties().copy
            if copy.status == "success":
                return True
            if copy.status != "pending" or time.monotonic() > deadline:
                with contextlib.suppress(Exception):
                    blob.delete_blob()  # never leave a half-copied original
                raise OSError(f"server-side copy ended {copy.status}: {copy.status_description}")
            time.sleep(0.5)

    def upload_new(self, uri: str, data: bytes, sha256: str) -> bool:
        """Uploads `data` unless a blob exists; returns False if one did."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        content_type = mimetypes.guess_type(uri)[0] or "application/octet-stream"
        try:
            self._blob(uri).upload_blob(
                data,
                overwrite=False,
                metadata={SHA256_METADATA: sha256},
                content_settings=ContentSettings(content_type=content_type),
                validate_content=True,
            )
        except ResourceExistsError:
            return False
        return True
