"""Ingest: copy a drop folder into the corpus as one version, resumably.

A drop is scanned without ever following a symlink out of it; each image is hashed,
copied with bounded concurrency, and recorded in the version's `manifest` table.
Files already in the version with the same SHA-256 are skipped, so an interrupted
ingest is resumed by running it again. A file never overwrites different content.
A file whose bytes are already anywhere in the corpus (another version or set) is
not transferred again: it is hard-linked on a local root and copied server-side on
Azure, and its manifest row names the original it shares its bytes with.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

from transforms import paths
from transforms.io import storage
from transforms.io.blobs import BlobContainer
from transforms.records import ManifestEntry
from transforms.retry import DEFAULT_RETRY, RetryPolicy, call_with_retries, describe
from transforms.tables import delta, schemas
from transforms.tables.azure_tables import IMAGE_SETS, AzureTables, image_set_entity, upsert
from transforms.tables.delta import version_filter

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
DEFAULT_MAX_PARALLEL = 8
DEFAULT_MAX_PARALLEL_METADATA = 4
_CHUNK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class DropFile:
    """An image found in a drop: where it is on disk and where it goes."""

    source_path: str  # POSIX path relative to the drop folder
    disk_path: str  # what to open (a symlink inside the drop is already resolved)
    set_path: str
    file_name: str
    identity: tuple[int, int] = (0, 0)  # (device, inode) seen by the scan; (0, 0): unchecked


@dataclasses.dataclass(frozen=True)
class Rejected:
    source_path: str
    reason: str


@dataclasses.dataclass
class DropScan:
    files: list[DropFile] = dataclasses.field(default_factory=list)
    rejected: list[Rejected] = dataclasses.field(default_factory=list)
    ignored: int = 0


@dataclasses.dataclass
class IngestReport:
    corpus_version: str
    copied: int = 0  # new bytes, transferred
    linked: int = 0  # bytes already in the corpus: linked or copied within the store
    skipped: int = 0  # already in this version
    ignored: int = 0
    bytes_copied: int = 0
    failed: list[Rejected] = dataclasses.field(default_factory=list)
    image_sets: int = 0
    retries: int = 0  # transient failures retried (each file's final outcome is above)
    table_rows: int = 0  # ImageSets rows upserted in Azure Table Storage
    table_error: str = ""  # why they could not be (re-running ingest writes them)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.table_error


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _display(path: str) -> str:
    """A printable form of a path that may hold undecodable bytes or control characters."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _name_problem(name: str, what: str) -> str | None:
    try:
        (paths.check_file_name if what == "file" else paths.check_component)(name)
    except paths.UnsafePathError as error:
        return f"{what} name: {error}"
    return None


def check_apart(drop_dir: str, root: str) -> None:
    """Raises ValueError if a local corpus root lies inside the drop: the corpus would
    be ingested into itself, one level deeper at every run."""
    if storage.is_local(root) and _inside(os.path.realpath(root), os.path.realpath(drop_dir)):
        raise ValueError(
            f"the corpus root {root} is inside the drop folder {drop_dir}: "
            "keep the corpus outside the drop"
        )


def _real_folders(drop_real: str) -> set[str]:
    """Every folder of the drop the scan walks, reached without following a symlink."""
    found = set()
    for folder, subfolders, _ in os.walk(drop_real):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]  # not walked
        found.update(os.path.join(folder, name) for name in subfolders)
    return found


def scan_drop(drop_dir: str) -> DropScan:
    """Finds the images of a drop; hidden files and folders and non-images are ignored.

    Symlinks are followed only while they resolve inside the drop; one that leads
    outside is rejected without its target ever being opened. A symlink to a real
    folder of the drop is ignored: that folder is walked under its own path, so a link
    never takes over a real folder's set path. Images in a folder whose name is refused
    are each rejected, never dropped unnamed.
    """
    drop_real = os.path.realpath(drop_dir)
    if not os.path.isdir(drop_real):
        raise NotADirectoryError(f"drop folder {drop_dir!r} does not exist or is not a folder")
    scan = DropScan()
    # Real folders keep their own set paths; links to them are not walked again.
    visited = {drop_real} | _real_folders(drop_real)

    def reject(source_path: str, reason: str) -> None:
        scan.rejected.append(Rejected(_display(source_path), reason))

    def walk(disk_dir: str, relative: tuple[str, ...], refused: str | None) -> None:
        try:
            with os.scandir(disk_dir) as listing:
                entries = sorted(listing, key=lambda item: (item.is_symlink(), item.name))
        except OSError as error:
            reject("/".join(relative) or ".", f"cannot list folder: {error.strerror or error}")
            return
        for entry in entries:
            if entry.name.startswith("."):
                scan.ignored += 1
                continue
            source_path = "/".join(relative + (entry.name,))
            target = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
            if not _inside(target, drop_real):
                reject(source_path, "symlink points outside the drop")
            elif os.path.isdir(target):
                if not entry.is_symlink() or target not in visited:
                    visited.add(target)
                    reason = refused or _name_problem(entry.name, "folder")
                    walk(target, relative + (entry.name,), reason)
                else:
                    scan.ignored += 1  # a link to a folder walked under its own path
            elif not is_image_name(entry.name):
                scan.ignored += 1
            elif not os.path.isfile(target):
                reject(source_path, "not a regular file")
            elif reason := refused or _name_problem(entry.name, "file"):
                reject(source_path, reason)
            else:
                scan.files.append(
                    DropFile(source_path, target, "/".join(relative), entry.name, _identity(target))
                )

    walk(drop_real, (), None)
    return scan


def _identity(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


class SwappedDuringIngestError(RuntimeError):
    """The path now leads to another file than the scan found (a folder on the way
    was replaced, perhaps by a symlink out of the drop): it is not read."""


def _open_source(drop_file: DropFile):
    # O_NOFOLLOW refuses a file swapped for a symlink after the scan; a folder on the
    # way swapped for one is caught by the identity check: the file opened must be the
    # very file the scan found, or nothing is read from it.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    handle = os.fdopen(os.open(drop_file.disk_path, flags), "rb")
    status = os.fstat(handle.fileno())
    if drop_file.identity != (0, 0) and (status.st_dev, status.st_ino) != drop_file.identity:
        handle.close()
        raise SwappedDuringIngestError(
            "the path leads to another file than when the drop was scanned; not read"
        )
    return handle


def _chunks(handle) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK_BYTES):
        yield chunk


def sha256_of_file(drop_file: DropFile) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with _open_source(drop_file) as handle:
        for chunk in _chunks(handle):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def sha256_of_uri(uri: str) -> str:
    digest = hashlib.sha256()
    with storage.open_for_read(uri) as handle:
        for chunk in _chunks(handle):
            digest.update(chunk)
    return digest.hexdigest()


class ContentConflictError(RuntimeError):
    """The corpus already holds different bytes under this file's path."""


class ChangedDuringIngestError(RuntimeError):
    """The source file changed between hashing and copying."""


def _copy_into(handle, drop_file: DropFile, sha256: str) -> None:
    digest = hashlib.sha256()
    with _open_source(drop_file) as source:
        for chunk in _chunks(source):
            digest.update(chunk)
            handle.write(chunk)
    if digest.hexdigest() != sha256:
        raise ChangedDuringIngestError("file changed while it was being ingested")


def _holds(uri: str, sha256: str) -> bool:
    try:
        return sha256_of_uri(uri) == sha256
    except Exception:  # noqa: BLE001 - missing or unreadable: the drop's bytes are copied
        return False


class FileSystemDestination:
    """Originals written through Beam's filesystems (a local folder, gs://, ...)."""

    def link_new(self, uri: str, source_uri: str, sha256: str) -> bool | None:
        """Gives `uri` the bytes of `source_uri` without copying them, where the store can.

        Returns:
            True if linked, False if something is at `uri` already, None if this
            store cannot link (the bytes are then copied).
        """
        if not storage.is_local(uri) or not _holds(source_uri, sha256):
            return None  # another store, or a stored original that is gone or changed
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        try:
            os.link(source_uri, uri)
        except FileExistsError:
            return False
        except OSError:
            return None  # e.g. another device: copy instead
        return True

    def stored_sha256(self, uri: str, recorded: str | None) -> str | None:
        """The hash of what is at `uri` (`recorded` in the manifest, if any), or None."""
        if not storage.exists(uri):
            return None
        return recorded or sha256_of_uri(uri)

    def write_new(self, uri: str, drop_file: DropFile, sha256: str) -> bool:
        """Writes the file unless something is at `uri`; False if something was."""
        try:
            storage.write_atomically(
                uri, lambda handle: _copy_into(handle, drop_file, sha256), overwrite=False
            )
        except FileExistsError:
            return False
        return True


class BlobDestination:
    """Originals uploaded to an Azure container with `azure-storage-blob`."""

    def __init__(self, container: BlobContainer) -> None:
        self._container = container

    def stored_sha256(self, uri: str, recorded: str | None) -> str | None:
        return self._container.stored_sha256(uri)

    def link_new(self, uri: str, source_uri: str, sha256: str) -> bool | None:
        return self._container.copy_new(uri, source_uri, sha256)

    def write_new(self, uri: str, drop_file: DropFile, sha256: str) -> bool:
        buffer = io.BytesIO()
        _copy_into(buffer, drop_file, sha256)
        return self._container.upload_new(uri, buffer.getvalue(), sha256)


Destination = FileSystemDestination | BlobDestination


class Stored(enum.StrEnum):
    """How a file's bytes got into the version."""

    COPIED = "copied"  # transferred from the drop
    LINKED = "linked"  # already in the corpus: linked or copied inside the store
    PRESENT = "present"  # already in this version


def copy_one(
    drop_file: DropFile,
    root: str,
    corpus_version: str,
    known: dict[str, str],
    destination: Destination,
    content: dict[str, str] | None = None,
) -> tuple[ManifestEntry, Stored]:
    """Copies one file into the corpus unless it is already there.

    Args:
        known: uri -> SHA-256 from the version's existing manifest.
        content: SHA-256 -> URI of an original anywhere in the corpus with those bytes.

    Returns:
        The manifest entry and how its bytes got there.

    Raises:
        ContentConflictError: different bytes are already stored under its path.
    """
    uri = paths.original_uri(root, drop_file.set_path, corpus_version, drop_file.file_name)
    sha256, size = sha256_of_file(drop_file)
    entry = ManifestEntry(
        source_path=drop_file.source_path,
        set_path=drop_file.set_path,
        file_name=drop_file.file_name,
        corpus_version=corpus_version,
        uri=uri,
        image_sha256=sha256,
        bytes=size,
    )
    stored = destination.stored_sha256(uri, known.get(uri))
    if stored is None:
        source = (content or {}).get(sha256)
        if source and source != uri:
            linked = destination.link_new(uri, source, sha256)
            if linked:
                return dataclasses.replace(entry, same_bytes_as=source), Stored.LINKED
        if destination.write_new(uri, drop_file, sha256):
            return entry, Stored.COPIED
        # Another writer got there first: a concurrent ingest, a name that a
        # case-insensitive store folds onto this one, or an earlier attempt of this
        # upload whose response was lost.
        stored = destination.stored_sha256(uri, None)
    if stored != sha256:
        raise ContentConflictError(
            f"{uri} already holds different content in version {corpus_version}; "
            "ingest the changed drop as a new version"
        )
    return entry, Stored.PRESENT


def _rejected_entry(rejected: Rejected, corpus_version: str) -> ManifestEntry:
    set_path, _, file_name = rejected.source_path.rpartition("/")
    return ManifestEntry(
        source_path=rejected.source_path,
        set_path=set_path,
        file_name=file_name,
        corpus_version=corpus_version,
        uri="",
        image_sha256="",
        bytes=0,
        rejected_reason=rejected.reason,
    )


def read_manifest(root: str, corpus_version: str) -> list[ManifestEntry]:
    return [
        ManifestEntry(**row)
        for row in delta.read_rows(
            delta.location(root, schemas.MANIFEST), version_filter(corpus_version)
        )
    ]


def corpus_content(root: str) -> dict[str, str]:
    """SHA-256 -> URI of one original with those bytes, over every version of the corpus."""
    table = delta.read(
        delta.location(root, schemas.MANIFEST),
        ("set_path", "corpus_version", "file_name", "image_sha256", "rejected_reason"),
    )
    content: dict[str, str] = {}
    for set_path, version, name, sha, rejected in zip(
        *(column.to_pylist() for column in table.columns), strict=True
    ):
        if sha and not rejected and sha not in content:
            content[sha] = paths.original_uri(root, set_path, version, name)
    return content


def record_manifest(root: str, corpus_version: str, entries: list[ManifestEntry]) -> None:
    """Upserts a drop's manifest rows in one commit; rows of other drops are kept.

    Two ingests into one version at once each add their own files: neither loses any.
    """
    rows = delta.as_table(
        (schemas.manifest_row(entry) for entry in entries), schemas.MANIFEST_SCHEMA
    )
    _upsert(root, schemas.MANIFEST, rows, corpus_version)


def _upsert(root: str, table: str, rows, corpus_version: str) -> None:
    spec = schemas.TABLES[table]
    delta.merge(
        delta.location(root, table),
        rows,
        delta.Merge(spec.keys),
        spec.partition_by,
        delta.commit_metadata("ingest", corpus_version=corpus_version),
    )


def image_set_rows(root: str, entries: list[ManifestEntry]) -> list[dict]:
    """One `image_sets` row per set path of a version, from its ingested files."""
    by_set: dict[str, list[ManifestEntry]] = {}
    for entry in entries:
        if not entry.rejected_reason:
            by_set.setdefault(entry.set_path, []).append(entry)
    return [
        {
            "set_path": set_path,
            "corpus_version": members[0].corpus_version,
            "tags": paths.tags_of(set_path),
            "blob_prefix": paths.set_prefix(root, set_path, members[0].corpus_version),
            "image_count": len(members),
            "bytes": sum(entry.bytes for entry in members),
        }
        for set_path, members in sorted(by_set.items())
    ]


def ingest_drop(
    drop_dir: str,
    root: str,
    corpus_version: str,
    max_parallel: int = DEFAULT_MAX_PARALLEL,
    progress: Callable[[int], Callable[[], None]] | None = None,
    destination: Destination | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY,
    azure_tables: AzureTables | None = None,
    max_parallel_metadata: int = DEFAULT_MAX_PARALLEL_METADATA,
) -> IngestReport:
    """Copies a drop into `root` as `corpus_version` and records its tables.

    Args:
        drop_dir: the local folder to ingest; each sub-folder is an ImageSet.
        root: corpus root, any Beam filesystem path.
        corpus_version: the version this drop becomes.
        max_parallel: files copied at once.
        progress: given the file count, returns a callback run once per file.
        destination: where originals are written (default: Beam's filesystems).
        retry_policy: how transient storage failures are retried, per file.
        azure_tables: also record the version's ImageSets there.
        max_parallel_metadata: Azure Table transactions at once.

    Returns:
        Counts and every file that failed, with its reason.
    """
    paths.check_version(corpus_version)
    if max_parallel < 1 or max_parallel_metadata < 1:
        raise ValueError("max_parallel and max_parallel_metadata must be at least 1")
    check_apart(drop_dir, root)
    destination = destination or FileSystemDestination()
    scan = scan_drop(drop_dir)
    for set_path in {drop_file.set_path for drop_file in scan.files}:
        # Copies a killed ingest had under way: this run writes them again.
        storage.remove_abandoned_partials(paths.set_prefix(root, set_path, corpus_version))
    previous = {entry.source_path: entry for entry in read_manifest(root, corpus_version)}
    known = {entry.uri: entry.image_sha256 for entry in previous.values() if entry.uri}
    content = corpus_content(root)
    report = IngestReport(corpus_version, ignored=scan.ignored, failed=list(scan.rejected))
    entries: dict[str, ManifestEntry] = {
        path: entry for path, entry in previous.items() if not entry.rejected_reason
    }
    tick = progress(len(scan.files)) if progress else (lambda: None)
    retried = itertools.count(1)

    def copy_with_retries(drop_file: DropFile) -> tuple[ManifestEntry, Stored]:
        return call_with_retries(
            lambda: copy_one(drop_file, root, corpus_version, known, destination, content),
            retry_policy,
            on_retry=lambda error: next(retried),
        )

    pool = ThreadPoolExecutor(max_workers=max_parallel)
    try:
        futures = {pool.submit(copy_with_retries, drop_file): drop_file for drop_file in scan.files}
        for future in as_completed(futures):
            drop_file = futures[future]
            tick()
            try:
                entry, stored = future.result()
            except Exception as error:  # noqa: BLE001 - every failure is reported per file
                report.failed.append(Rejected(drop_file.source_path, describe(error)))
                continue
            entries[entry.source_path] = entry
            report.copied += stored == Stored.COPIED
            report.linked += stored == Stored.LINKED
            report.skipped += stored == Stored.PRESENT
            report.bytes_copied += entry.bytes if stored == Stored.COPIED else 0
    except BaseException:
        # Ctrl-C: drop the queued copies instead of waiting for all of them.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    report.retries = next(retried) - 1
    for rejected in report.failed:
        if rejected.source_path not in entries:
            entries[rejected.source_path] = _rejected_entry(rejected, corpus_version)
    record_manifest(root, corpus_version, sorted(entries.values(), key=lambda e: e.source_path))
    # Sets from the whole version, this drop's files and any other ingest's.
    set_rows = image_set_rows(root, read_manifest(root, corpus_version))
    _upsert(
        root,
        schemas.IMAGE_SETS,
        delta.as_table(set_rows, schemas.IMAGE_SETS_SCHEMA),
        corpus_version,
    )
    if azure_tables is not None:
        try:
            report.table_rows = _record_image_sets(
                azure_tables, root, set_rows, max_parallel_metadata, retry_policy
            )
        except Exception as error:  # noqa: BLE001 - the files are in; say what is missing
            report.table_error = describe(error)
    report.failed.sort(key=lambda rejected: rejected.source_path)
    report.image_sets = len(set_rows)
    return report


def _record_image_sets(
    azure_tables: AzureTables,
    root: str,
    set_rows: list[dict],
    max_parallel: int,
    retry_policy: RetryPolicy,
) -> int:
    """Upserts one ImageSets row per set, each set its own partition and transaction."""
    client = azure_tables.table_client(IMAGE_SETS)
    entities = [image_set_entity(row, root) for row in set_rows]
    with ThreadPoolExecutor(max_workers=max_parallel) as pool:
        return sum(
            pool.map(
                lambda entity: call_with_retries(lambda: upsert(client, [entity]), retry_policy),
                entities,
            )
        )
