"""`WatchVersion`: the files of a corpus version as they land, an unbounded source.

Every few seconds the version's folders under `original/` are listed, whoever wrote
there (`imaginem ingest`, Azure Storage Explorer, azcopy). Each file goes on once:
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

import apache_beam as beam
import pyarrow.dataset as pads
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
from transforms.records import READ_STEP, ErrorRecord, ManifestEntry
from transforms.tables import delta, schemas
from transforms.tables.result_store import ResultPlan, ResultStore

WATCH = "watch"  # the namespace of the watch's counters
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
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
    *folders, version, name = uri[len(prefix) :].split("/")
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


def blob_created_uri(message: str, corpus_root: str) -> str | None:
    """The azfs URI of the blob a queue message says was created in the root's
    container; None for any other message.

    Event Grid delivers its events to a Storage Queue base64-encoded, one per
    message, in its own schema or as CloudEvents; both name the blob in `subject`
    (`/blobServices/default/containers/C/blobs/PATH`).
    """
    account, container, _ = split_azfs(corpus_root)
    text = message.strip()
    if not text.startswith(("{", "[")):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    try:
        events = json.loads(text)
    except ValueError:
        return None
    prefix = f"/blobServices/default/containers/{container}/blobs/"
    for event in events if isinstance(events, list) else [events]:
        if not isinstance(event, dict):
            continue
        kind = event.get("eventType") or event.get("type")
        subject = str(event.get("subject") or "")
        if kind == BLOB_CREATED and subject.startswith(prefix):
            return f"{AZFS_SCHEME}{account}/{container}/{subject[len(prefix) :]}"
    return None


def committed_paths(corpus_root: str, corpus_version: str, source_paths: list[str]) -> set[str]:
    """Those of `source_paths` whose rows (an image's, or an error's) are committed."""
    committed = set()
    for table, column in ((schemas.IMAGES, "source_path"), (schemas.ERRORS, "path")):
        wanted = delta.version_filter(corpus_version) & pads.field(column).isin(source_paths)
        rows = delta.read(delta.location(corpus_root, table), (column,), wanted)
        committed.update(rows.column(column).to_pylist() if rows.num_rows else ())
    return committed


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """A Storage Queue of blob-created events, in the corpus's account.

    Attributes:
        name: the queue.
        access: how to reach the account (no secret inside).
        visibility_seconds: how long a received message stays hidden; it is deleted
            when it shows again and its file's rows are committed.
    """

    name: str
    access: AzureAccess
    visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS


class _ReadQueue(_Poller):
    """The files that blob-created messages name, each time a message shows.

    A message is hidden while its file goes through the steps, and deleted only
    once it shows again with its file's rows committed (at-least-once delivery; the
    results are stored once whatever happens). Messages about anything but an
    image of this version are deleted as they come: a queue serves one watch.
    """

    def __init__(self, corpus_root, corpus_version, poll_seconds, stop_file, queue: QueueSettings):
        super().__init__(corpus_root, corpus_version, poll_seconds, stop_file)
        self._queue = queue

    def setup(self) -> None:
        self._client = self._queue.access.queue_client(self._queue.name)
        self._acknowledged = progress.counter(WATCH, "messages_deleted")

    def poll(self):
        shown_again = {}
        for message in self._client.receive_messages(
            messages_per_page=32,
            max_messages=MAX_MESSAGES_PER_POLL,
            visibility_timeout=self._queue.visibility_seconds,
        ):
            uri = blob_created_uri(message.content, self._root)
            entry = arrived_entry(self._root, self._version, uri) if uri else None
            if entry is None:
                self._client.delete_message(message)
            elif message.dequeue_count > 1:
                shown_again[entry.source_path] = (uri, message)
            else:
                yield uri
        if not shown_again:
            return
        done = committed_paths(self._root, self._version, sorted(shown_again))
        for source_path, (uri, message) in shown_again.items():
            if source_path in done:
                self._client.delete_message(message)
                self._acknowledged.inc()
            else:
                yield uri  # in flight (let through once), or lost: let through again


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
