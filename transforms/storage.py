"""Small helpers over Beam's `FileSystems`, so every store behaves the same way."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from typing import BinaryIO

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems


def is_local(uri: str) -> bool:
    """True for plain paths; Beam URIs carry a scheme such as `azfs://` or `gs://`."""
    return "://" not in uri


def absolute_root(root: str) -> str:
    """A local corpus root as an absolute path, so recorded URIs do not depend on cwd."""
    return os.path.abspath(root) if is_local(root) else root.rstrip("/")


def exists(uri: str) -> bool:
    """Like `FileSystems.exists`, but a missing blob is False on every store.

    Beam's Azure filesystem raises `BeamIOError` (404) for a missing blob.
    """
    try:
        return FileSystems.exists(uri)
    except BeamIOError:
        return False


def open_for_read(uri: str) -> BinaryIO:
    """Opens a file as raw bytes (Beam would otherwise decompress `.gz` by name)."""
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(uri: str) -> bytes:
    with open_for_read(uri) as handle:
        return handle.read()


def write_atomically(uri: str, write: Callable[[BinaryIO], None]) -> None:
    """Writes a file so readers never see it half-written.

    Blob stores commit an object when its upload closes. A local file is written
    under a hidden temporary name in the same folder and renamed into place, so an
    interrupted write leaves no partial file under the final name.
    """
    if not is_local(uri):
        with FileSystems.create(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            write(handle)
        return
    folder, name = os.path.split(uri)
    os.makedirs(folder or ".", exist_ok=True)
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.partial")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, uri)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_bytes_atomically(uri: str, data: bytes) -> None:
    write_atomically(uri, lambda handle: handle.write(data))


def list_files(folder: str, pattern: str = "*") -> list[str]:
    """Paths of the files directly in `folder` matching `pattern`; [] if none."""
    glob = folder.rstrip("/") + "/" + pattern
    try:
        matched = FileSystems.match([glob])[0].metadata_list
    except BeamIOError:
        return []
    return sorted(metadata.path for metadata in matched)


def delete(uris: Iterable[str]) -> None:
    uris = list(uris)
    if uris:
        FileSystems.delete(uris)
