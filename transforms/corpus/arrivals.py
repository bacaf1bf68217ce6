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

import dataclasses
import hashlib
import os

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
from transforms.per_image import ERRORS, RECORDS
from transforms.records import READ_STEP, ErrorRecord, ManifestEntry
from transforms.tables.result_store import ResultPlan, ResultStore

WATCH = "watch"  # the namespace of the watch's counters
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


class _PollVersion(beam.DoFn):
    """Lists the version's files every `poll_seconds` until the stop file exists."""

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
        for uri in storage.list_files(paths.join(self._root, paths.ORIGINAL_DIR), "**"):
            if arrived_entry(self._root, self._version, uri) is not None:
                yield uri
        tracker.defer_remainder(Duration.of(self._poll))


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
        poll_seconds: how often the version is listed.

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

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, pipeline):
        poll = _PollVersion(
            self.corpus_root, self.corpus_version, self.poll_seconds, self.stop_file
        )
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
