"""`ReadCorpus`: the images of one corpus version, read from its manifest."""

from __future__ import annotations

import dataclasses
import hashlib

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from transforms import paths, storage, tables
from transforms.ingest import manifest_partition
from transforms.records import INGEST_STEP, READ_STEP, ErrorRecord, ImageRecord, ManifestEntry
from transforms.steps.base import ERRORS, RECORDS


class IntegrityError(RuntimeError):
    """The stored bytes no longer match the SHA-256 recorded at ingest."""


class RejectedAtIngestError(RuntimeError):
    """Ingest refused the file; the manifest keeps the reason."""


def manifest_shards(corpus_root: str, corpus_version: str) -> list[str]:
    return storage.list_files(manifest_partition(corpus_root, corpus_version), tables.SHARD_PATTERN)


def set_paths(corpus_root: str, corpus_version: str) -> tuple[str, ...]:
    """Every set path of a version, read from its manifest's `set_path` column only."""
    found: set[str] = set()
    for shard in manifest_shards(corpus_root, corpus_version):
        with storage.open_for_read(shard) as handle:
            found.update(pq.read_table(handle, columns=["set_path"]).column(0).to_pylist())
    return tuple(sorted(found))


def image_hashes(corpus_root: str, corpus_version: str) -> set[str]:
    """The distinct SHA-256s of a version's images (files rejected at ingest left out)."""
    found: set[str] = set()
    for shard in manifest_shards(corpus_root, corpus_version):
        with storage.open_for_read(shard) as handle:
            table = pq.read_table(handle, columns=["image_sha256", "rejected_reason"])
        for sha, rejected in zip(*(column.to_pylist() for column in table.columns), strict=True):
            if not rejected:
                found.add(sha)
    return found


def read_original(entry: ManifestEntry) -> bytes:
    """The bytes of an ingested original, checked against its recorded hash."""
    data = storage.read_bytes(entry.uri)
    if hashlib.sha256(data).hexdigest() != entry.image_sha256:
        raise IntegrityError(f"{entry.uri} does not match the SHA-256 recorded at ingest")
    return data


def locate(entry: ManifestEntry, corpus_root: str) -> ManifestEntry:
    """The entry with its URI rebuilt under `corpus_root`, so a corpus can be moved."""
    if entry.rejected_reason:
        return entry
    uri = paths.original_uri(corpus_root, entry.set_path, entry.corpus_version, entry.file_name)
    return dataclasses.replace(entry, uri=uri)


class _HashOrder(beam.DoFn):
    """Re-emits manifest rows in the order of their paths' hashes, a window at a time.

    Beam's local runner gives each worker every n-th element in arrival order, and
    a manifest is in path order, where alike files alternate (the front and back of
    each scanned print, a page after each photo): split that way, one worker can get
    all the expensive images. In hash order each share is a random sample. Its input
    is a bounded read in the global window, where every row is emitted.
    """

    WINDOW = 4096  # rows held at once

    def start_bundle(self) -> None:
        self._held: list[dict] = []

    def process(self, row: dict):
        self._held.append(row)
        if len(self._held) >= self.WINDOW:
            yield from self._release()

    def finish_bundle(self):
        for row in self._release():
            yield GlobalWindows.windowed_value(row)

    def _release(self) -> list[dict]:
        held, self._held = self._held, []
        return sorted(
            held, key=lambda row: hashlib.sha256((row["source_path"] or "").encode()).digest()
        )


class _ReadOriginals(beam.DoFn):
    def __init__(self, corpus_root: str) -> None:
        self._corpus_root = corpus_root

    def setup(self) -> None:
        self._read = Metrics.counter(READ_STEP, "processed")
        self._failed = Metrics.counter(READ_STEP, "failed")
        self._rejected = Metrics.counter(INGEST_STEP, "failed")

    def process(self, row: dict):
        entry = locate(ManifestEntry(**row), self._corpus_root)
        if entry.rejected_reason:
            self._rejected.inc()
            error = RejectedAtIngestError(entry.rejected_reason)
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord.for_entry(entry, INGEST_STEP, error))
            return
        try:
            data = read_original(entry)
        except Exception as error:  # noqa: BLE001 - a missing or damaged blob is reported
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord.for_entry(entry, READ_STEP, error))
            return
        self._read.inc()
        yield ImageRecord(entry=entry, data=data)


@dataclasses.dataclass(eq=False)
class ReadCorpus(beam.PTransform):
    """Lists a corpus version from its manifest and reads each original once.

    Args:
        corpus_root: the corpus root, any Beam filesystem path.
        corpus_version: the version to read.

    Returns:
        Outputs `records` (ImageRecord with bytes) and `errors` (files rejected at
        ingest, missing from storage, or changed since ingest).
    """

    corpus_root: str
    corpus_version: str

    def __post_init__(self) -> None:
        super().__init__()
        paths.check_version(self.corpus_version)

    def expand(self, pipeline):
        pattern = paths.join(
            manifest_partition(self.corpus_root, self.corpus_version), tables.SHARD_PATTERN
        )
        return (
            pipeline
            | "ReadManifest" >> beam.io.ReadFromParquet(pattern)
            | "HashOrder" >> beam.ParDo(_HashOrder())
            # Spread the reads (and the steps fused after them) over all workers.
            | "Spread" >> beam.Reshuffle()
            | "ReadOriginals"
            >> beam.ParDo(_ReadOriginals(self.corpus_root)).with_outputs(ERRORS, main=RECORDS)
        )
