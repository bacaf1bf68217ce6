"""Small helpers over Beam's `FileSystems`, so every store behaves the same way."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import BinaryIO

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.io.azure_access import ACCOUNT_URL_ENV


def _filesystems() -> type[FileSystems]:
    """Beam's filesystems, given options from this machine's environment where the
    runner set none (a portable runner's external workers): its Azure filesystem needs
    options even to read the connection string from the environment, and an Azure AD
    sign-in's account URL."""
    if FileSystems._pipeline_options is None:
        url = os.environ.get(ACCOUNT_URL_ENV)
        FileSystems.set_options(PipelineOptions([f"--blob_service_endpoint={url}"] if url else []))
    return FileSystems


def is_local(uri: str) -> bool:
    """True for plain paths; Beam URIs carry a scheme such as `azfs://` or `gs://`."""
    return "://" not in uri


_GLOB_CHARACTERS = frozenset("*?[]{}")


def absolute_root(root: str) -> str:
    """A checked corpus root; a local one made absolute so URIs do not depend on cwd.

    Raises:
        ValueError: an empty root, one with glob characters (Beam's matching cannot
            escape them), or a scheme no installed filesystem serves.
    """
    if not root.strip():
        raise ValueError("the corpus root is empty: give a folder or a Beam URI")
    if found := sorted(_GLOB_CHARACTERS.intersection(root)):
        raise ValueError(
            f"corpus root {root!r} contains {' '.join(found)}; Beam reads those as "
            "wildcards: choose a root without them"
        )
    if is_local(root):
        return os.path.abspath(root)
    try:
        _filesystems().get_filesystem(root)
    except (ValueError, BeamIOError) as error:
        scheme = root.split("://", 1)[0]
        raise ValueError(
            f"no filesystem for {scheme}:// is installed (the azfs:// one is; gs:// needs "
            "apache-beam[gcp], s3:// apache-beam[aws]): choose another root or install it"
        ) from error
    return root.rstrip("/")


def _is_not_found(error: BaseException) -> bool:
    """True only for "no such file/blob"; auth, network or 5xx errors are not that."""
    causes = [error]
    details = getattr(error, "exception_details", None)
    if isinstance(details, dict):
        causes.extend(cause for cause in details.values() if isinstance(cause, BaseException))
    for cause in causes:
        if isinstance(cause, FileNotFoundError):
            return True
        if 404 in (getattr(cause, "status_code", None), getattr(cause, "code", None)):
            return True
        if any(marker in str(cause) for marker in ("BlobNotFound", "ResourceNotFound", "404")):
            return True
    return False


def exists(uri: str) -> bool:
    """Like `FileSystems.exists`, but a missing blob is False on every store.

    Beam's Azure filesystem raises `BeamIOError` (404) for a missing blob; any other
    failure is raised, so a network error is never mistaken for "not there" (which
    would let an existing output be overwritten).
    """
    try:
        return _filesystems().exists(uri)
    except BeamIOError as error:
        if _is_not_found(error):
            return False
        raise


def open_for_read(uri: str) -> BinaryIO:
    """Opens a file as raw bytes (Beam would otherwise decompress `.gz` by name)."""
    return _filesystems().open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(uri: str) -> bytes:
    with open_for_read(uri) as handle:
        return handle.read()


def read_if_exists(uri: str) -> bytes | None:
    """The file's bytes, or None if it is not there (any other failure is raised)."""
    try:
        return read_bytes(uri)
    except FileNotFoundError:
        return None
    except BeamIOError as error:
        if _is_not_found(error):
            return None
        raise


def write_atomically(uri: str, write: Callable[[BinaryIO], None], overwrite: bool = True) -> None:
    """Writes a file so readers never see it half-written.

    A local file is written under a hidden temporary name in the same folder, then
    moved into place. For other stores the bytes are produced in memory first, so a
    failure while producing them uploads nothing.

    Args:
        overwrite: if False, an existing file is kept and `FileExistsError` raised;
            locally this is atomic (a hard link), so concurrent writers cannot clobber
            each other.
    """
    if not is_local(uri):
        buffer = io.BytesIO()
        write(buffer)
        if not overwrite and exists(uri):
            raise FileExistsError(uri)
        with _filesystems().create(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(buffer.getvalue())
        return
    folder, name = os.path.split(uri)
    os.makedirs(folder or ".", exist_ok=True)
    temporary = os.path.join(folder, _partial_name(name))
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        if overwrite:
            os.replace(temporary, uri)
        else:
            os.link(temporary, uri)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# A temporary file names its writer, so one left by a killed writer can be told from
# one still being written: `.<name>~<host>~<pid>~<random>.partial`.
_PARTIAL_SUFFIX = ".partial"
_HOST = socket.gethostname().replace("~", "-")[:64]


def _partial_name(name: str) -> str:
    """The temporary name, cut to fit in 255 bytes whatever the name's length."""
    writer = f"~{_HOST}~{os.getpid()}~{uuid.uuid4().hex[:12]}{_PARTIAL_SUFFIX}"
    room = 255 - 1 - len(writer.encode("utf-8"))
    stub = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return f".{stub}{writer}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_partials(folder: str) -> int:
    """Deletes the temporary files that killed writers on this machine left in a local
    folder; returns how many. Files of live writers and of other machines are kept."""
    if not is_local(folder) or not os.path.isdir(folder):
        return 0
    removed = 0
    for found in os.scandir(folder):
        if not (found.name.startswith(".") and found.name.endswith(_PARTIAL_SUFFIX)):
            continue
        parts = found.name[: -len(_PARTIAL_SUFFIX)].rsplit("~", 3)
        if len(parts) == 4 and parts[1] == _HOST and parts[2].isdigit():
            if not _alive(int(parts[2])):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(found.path)
                    removed += 1
    return removed


def write_bytes_atomically(uri: str, data: bytes, overwrite: bool = True) -> None:
    write_atomically(uri, lambda handle: handle.write(data), overwrite)


def write_unless_exists(uri: str, make: Callable[[], bytes]) -> bool:
    """Writes `make()` to `uri` unless something is there; True if it wrote."""
    if exists(uri):
        return False
    write_bytes_atomically(uri, make())
    return True


def list_files(folder: str, pattern: str = "*") -> list[str]:
    """Paths of the files directly in `folder` matching `pattern`; [] if none."""
    glob = folder.rstrip("/") + "/" + pattern
    try:
        matched = _filesystems().match([glob])[0].metadata_list
    except BeamIOError as error:
        if _is_not_found(error):
            return []
        raise
    return sorted(metadata.path for metadata in matched)


def seconds_since_modified(uri: str) -> float | None:
    """How long ago the file at `uri` was last written (any Beam filesystem); None if
    it is gone."""
    try:
        matched = _filesystems().match([uri])[0].metadata_list
    except BeamIOError as error:
        if _is_not_found(error):
            return None
        raise
    return time.time() - matched[0].last_updated_in_seconds if matched else None


def delete(uris: Iterable[str]) -> None:
    uris = list(uris)
    if uris:
        _filesystems().delete(uris)
