"""`WatchVersion`: the files of a corpus version as they land, an unbounded source.

Every few seconds the `original/` tree is listed and the version's files taken,
whoever wrote them (`imaginem ingest`, Azure Storage Explorer, azcopy), or, for a
large container, blob-created events are read from a Storage Queue. Each file goes on once:
a stateful step keyed by path lets a path through the first time only. A file is
then read, hashed and joined with the results the store already has for its bytes,
so an image a batch run or an earlier watch computed is not computed again.

The source ends, and the pipeline drains, when the stop file appears (the driver
writes it on Ctrl-C or SIGTERM); a runner's own drain (Dataflow, Flink) ends it too.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Duration

from transforms import paths, progress
from transforms.corpus.ingest import is_image_name
from transforms.corpus.read import start_record
from transforms.io import storage
from transforms.io.azure_access import AZFS_SCHEME, AzureAccess, split_azfs
from transforms.per_image import ERRORS, RECORDS
from transforms.records import READ_STEP, ErrorRecord, ManifestEntry, StepName
from transforms.tables import delta, schemas
from transforms.tables.result_store import ResultPlan, ResultStore

WATCH = "watch"  # the namespace of the watch's counters
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
# The Blob and Data Lake calls after which a created blob is complete.
COMPLETE_WRITES = ("PutBlob", "PutBlockList", "FlushWithClose", "CopyBlob", "PutBlobFromUrl")
DEFAULT_VISIBILITY_SECONDS = 60
MAX_MESSAGES_PER_POLL = 256
SEEN = "seen"
_FOREVER = 2**62  # polls a source may make: more than any watch lives


def arrived_entry(corpus_root: str, corpus_version: str, uri: str) -> ManifestEntry | None:
    """The manifest entry of a file under `original/<set path>/<version>/`, without
    its hash; None for a file of another version, a hidden file or not an image."""
    prefix = paths.join(corpus_root, paths.ORIGINAL_DIR) + "/"
    if not uri.startswith(prefix):
        return None
    parts = uri[len(prefix) :].split("/")
    if len(parts) < 2:
        return None  # a file directly in original/ belongs to no version
    *folders, version, name = parts
    if version != corpus_version or name.startswith(".") or not is_image_name(name):
        return None
    set_path = "/".join(folders)
    try:
        if paths.original_uri(corpus_root, set_path, corpus_version, name) != uri:
            return None
    except paths.UnsafePathError:
        return None  # ingest refuses such names; no one else writes them here
    return ManifestEntry(
        source_path=f"{set_path}/{name}" if set_path else name,
        set_path=set_path,
        file_name=name,
        corpus_version=corpus_version,
        uri=uri,
        image_sha256="",
        bytes=0,
    )


class _Polls(RestrictionProvider):
    """The polls of one source, numbered; the source claims one per poll."""

    def initial_restriction(self, element):
        return OffsetRange(0, _FOREVER)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def truncate(self, element, restriction):
        return None  # a runner's drain ends the source


_POLLS = beam.DoFn.RestrictionParam(_Polls())
# Whether a path was let through; one per path, on the worker that owns its key.
_SEEN = beam.DoFn.StateParam(ReadModifyWriteStateSpec("seen", BooleanCoder()))


@beam.DoFn.unbounded_per_element()
class _Poller(beam.DoFn):
    """Emits what `poll` finds every `poll_seconds` until the stop file exists."""

    def __init__(self, corpus_root: str, corpus_version: str, poll_seconds: float, stop_file: str):
        self._root = corpus_root
        self._version = corpus_version
        self._poll = poll_seconds
        self._stop_file = stop_file

    def process(self, element, tracker=_POLLS):
        poll = tracker.current_restriction().start
        if not tracker.try_claim(poll):
            return
        if os.path.exists(self._stop_file):
            tracker.try_claim(tracker.current_restriction().stop - 1)
            return
        yield from self.poll()
        tracker.defer_remainder(Duration.of(self._poll))

    def is_ours(self, uri: str) -> bool:
        return arrived_entry(self._root, self._version, uri) is not None

    def poll(self):
        raise NotImplementedError


class _ListVersion(_Poller):
    """Every file of the version's folders, each time."""

    def poll(self):
        for uri in storage.list_files(paths.join(self._root, paths.ORIGINAL_DIR), "**"):
            if self.is_ours(uri):
                yield uri


def blob_created_uris(message: str, corpus_root: str) -> list[str]:
    """The azfs URIs of the blobs a queue message says were written, complete, in the
    root's container; [] for any other message.

    Event Grid delivers its events to a Storage Queue base64-encoded, in its own
    schema or as CloudEvents; both name the blob in `subject`
    (`/blobServices/default/containers/C/blobs/PATH`). On a hierarchical namespace a
    file's creation is announced while it is still empty (`CreateFile`): only the
    calls that leave a complete blob count.
    """
    account, container, _ = split_azfs(corpus_root)
    text = message.strip()
    if not text.startswith(("{", "[")):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return []
    try:
        events = json.loads(text)
    except ValueError:
        return []
    prefix = f"/blobServices/default/containers/{container}/blobs/"
    uris = []
    for event in events if isinstance(events, list) else [events]:
        if not isinstance(event, dict):
            continue
        kind = event.get("eventType") or event.get("type")
        subject = str(event.get("subject") or "")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        complete = data.get("api", COMPLETE_WRITES[0]) in COMPLETE_WRITES
        if kind == BLOB_CREATED and subject.startswith(prefix) and complete:
            uris.append(f"{AZFS_SCHEME}{account}/{container}/{subject[len(prefix) :]}")
    return uris


def finished_paths(
    corpus_root: str,
    corpus_version: str,
    steps: Sequence[str],
    source_paths: Sequence[str] | None = None,
    unreadable_finishes: bool = True,
) -> set[str]:
    """The version's files (of `source_paths`, or all) that need nothing more from
    `steps`: each step's result is in the file's `images` row or its error in `errors`;
    or the file does not decode (or, if `unreadable_finishes`, cannot be read)."""

    def rows(table: str, path_column: str, columns: Sequence[str]) -> list[dict]:
        where = delta.location(corpus_root, table)
        if not delta.exists(where):
            return []
        condition = f"corpus_version = {delta.quote(corpus_version)}"
        if source_paths is not None:
            listed = ", ".join(delta.quote(path) for path in source_paths) or "NULL"
            condition += f" AND {path_column} IN ({listed})"
        selected = ", ".join(columns)
        return delta.query(where, f"SELECT {selected} FROM t WHERE {condition}").to_pylist()

    failed: dict[str, set[str]] = {}
    for row in rows(schemas.ERRORS, "path", ("path", "step")):
        failed.setdefault(row["path"], set()).add(row["step"])
    final = {StepName.DECODE, READ_STEP} if unreadable_finishes else {StepName.DECODE}
    finished = {path for path, steps_failed in failed.items() if steps_failed & final}
    columns = delta.column_names(delta.location(corpus_root, schemas.IMAGES))
    if not set(steps) <= set(columns):
        return finished  # a step no run has filled yet: no image is finished with it
    has = [f'{step} IS NOT NULL AS "{step}"' for step in steps]
    for row in rows(schemas.IMAGES, "source_path", ("source_path", *has)):
        path = row["source_path"]
        if all(row[step] or step in failed.get(path, ()) for step in steps):
            finished.add(path)
    return finished


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """A Storage Queue of blob-created events, in the corpus's account.

    Attributes:
        name: the queue.
        access: how to reach the account (no secret inside).
        steps: the watch's steps that fill a column of `images`.
        visibility_seconds: how long a received message stays hidden; it is deleted
            when it shows again and its file's rows are committed.
    """

    name: str
    access: AzureAccess
    steps: tuple[str, ...]  # the watch's steps with a result column: done when all are in
    visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS


class _ReadQueue(_Poller):
    """The files that blob-created messages name, each time a message shows.

    A message is hidden while its files go through the steps, and deleted only once
    it shows again with their rows committed, each step's result or error
    (at-least-once delivery; results are stored once whatever happens). Messages
    about anything but images of this version are deleted as they come: a queue
    serves one watch.
    """

    def __init__(self, corpus_root, corpus_version, poll_seconds, stop_file, queue: QueueSettings):
        super().__init__(corpus_root, corpus_version, poll_seconds, stop_file)
        self._queue = queue

    def setup(self) -> None:
        self._client = self._queue.access.queue_client(self._queue.name)
        self._acknowledged = progress.counter(WATCH, "messages_deleted")

    def poll(self):
        shown_again = []
        for message in self._client.receive_messages(
            messages_per_page=32,
            max_messages=MAX_MESSAGES_PER_POLL,
            visibility_timeout=self._queue.visibility_seconds,
        ):
            uris = [
                uri
                for uri in blob_created_uris(message.content, self._root)
                if arrived_entry(self._root, self._version, uri)
            ]
            if not uris:
                self._client.delete_message(message)
            elif message.dequeue_count > 1:
                shown_again.append((message, uris))
            else:
                yield from uris
        if not shown_again:
            return
        paths = {uri: arrived_entry(self._root, self._version, uri).source_path
                 for _, uris in shown_again for uri in uris}  # fmt: skip
        done = finished_paths(self._root, self._version, self._queue.steps, sorted(paths.values()))
        for message, uris in shown_again:
            if all(paths[uri] in done for uri in uris):
                self._client.delete_message(message)
                self._acknowledged.inc()
            else:
                yield from uris  # in flight (let through once), or lost: let through again


class _FirstTime(beam.DoFn):
    """Lets each path through once, however often it is listed."""

    def __init__(self, done: frozenset[str]) -> None:
        self._done = done

    def setup(self) -> None:
        self._seen = progress.counter(WATCH, SEEN)

    def process(self, keyed, seen=_SEEN):
        uri = keyed[0]
        if not seen.read():
            seen.write(True)
            if uri not in self._done:
                self._seen.inc()
                yield uri


class _StartArrival(beam.DoFn):
    """A new file -> its record, with its bytes and the results stored for them."""

    def __init__(self, corpus_root: str, corpus_version: str, plan: ResultPlan, store: ResultStore):
        self._root = corpus_root
        self._version = corpus_version
        self._plan = plan
        self._store = store

    def setup(self) -> None:
        self._read = progress.counter(READ_STEP, "processed")
        self._failed = progress.counter(READ_STEP, "failed")

    def process(self, uri: str):
        entry = arrived_entry(self._root, self._version, uri)
        try:
            data = storage.read_bytes(uri)
        except Exception as error:  # noqa: BLE001 - a file gone or unreadable is reported
            self._failed.inc()
            error_row = ErrorRecord.for_entry(entry, READ_STEP, error)
            yield beam.pvalue.TaggedOutput(ERRORS, error_row)
            return
        self._read.inc()
        sha = hashlib.sha256(data).hexdigest()
        entry = dataclasses.replace(entry, image_sha256=sha, bytes=len(data))
        yield start_record([entry], self._store.stored_results(self._plan, sha), self._plan, data)


@dataclasses.dataclass(eq=False)
class WatchVersion(beam.PTransform):
    """New files of a corpus version as records, until the stop file appears.

    Args:
        corpus_root: the corpus root, a local folder or a Beam filesystem URI.
        corpus_version: the version watched.
        plan: the steps and fingerprints, to reuse stored results.
        store: the result store.
        stop_file: a local path; the source ends once it exists.
        done: URIs already processed (their rows are in the tables): not started again.
        poll_seconds: how often the version is listed (or the queue read).
        queue: read blob-created events from this queue instead of listing.

    Returns:
        Outputs `records` (with bytes and stored results) and `errors` (unreadable files).
    """

    corpus_root: str
    corpus_version: str
    plan: ResultPlan
    store: ResultStore
    stop_file: str
    done: frozenset[str] = frozenset()
    poll_seconds: float = 2.0
    queue: QueueSettings | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, pipeline):
        where = (self.corpus_root, self.corpus_version, self.poll_seconds, self.stop_file)
        poll = _ReadQueue(*where, self.queue) if self.queue else _ListVersion(*where)
        started = (
            pipeline
            | "Source" >> beam.Create([self.corpus_version])
            | "Poll" >> beam.ParDo(poll)
            | "ByPath" >> beam.Map(lambda uri: (uri, None))
            | "FirstTime" >> beam.ParDo(_FirstTime(self.done))
            | "Start"
            >> beam.ParDo(
                _StartArrival(self.corpus_root, self.corpus_version, self.plan, self.store)
            ).with_outputs(ERRORS, main=RECORDS)
        )
        return {RECORDS: started[RECORDS], ERRORS: started[ERRORS]}
