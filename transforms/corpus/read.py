"""`ReadCorpus`: the images of one corpus version, with the results already stored for them."""

from __future__ import annotations

import dataclasses
import hashlib

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import paths, progress
from transforms.io import storage
from transforms.per_image import ERRORS, RECORDS
from transforms.records import (
    INGEST_STEP,
    READ_STEP,
    ErrorRecord,
    ImageRecord,
    ManifestEntry,
    StepName,
    with_decoded,
)
from transforms.tables import delta, result_store, schemas
from transforms.tables.delta import version_filter
from transforms.tables.result_store import ReadStoredResults, ResultPlan, ResultStore

_TO_READ = "to_read"
# Output of `ReadCorpus`: image SHA-256 -> every readable file with those bytes.
ALIASES = "aliases"


class IntegrityError(RuntimeError):
    """The stored bytes no longer match the SHA-256 recorded at ingest."""


class RejectedAtIngestError(RuntimeError):
    """Ingest refused the file; the manifest keeps the reason."""


def manifest_rows(
    corpus_root: str, corpus_version: str, columns: tuple[str, ...] | None = None
) -> pa.Table:
    """The version's manifest, or only some of its columns."""
    where = delta.location(corpus_root, schemas.MANIFEST)
    return delta.read(where, columns, version_filter(corpus_version))


def set_paths(corpus_root: str, corpus_version: str) -> tuple[str, ...]:
    """Every set path of a version, read from its manifest's `set_path` column only."""
    table = manifest_rows(corpus_root, corpus_version, ("set_path",))
    return tuple(sorted(set(table.column(0).to_pylist()))) if table.num_rows else ()


IMAGE_COLUMNS = ("image_sha256", "rejected_reason")


def image_hashes(corpus_root: str, corpus_version: str) -> set[str]:
    """The distinct SHA-256s of a version's images (files rejected at ingest left out)."""
    return hashes_of(manifest_rows(corpus_root, corpus_version, IMAGE_COLUMNS))


def hashes_of(manifest: pa.Table) -> set[str]:
    """The distinct SHA-256s in manifest rows of `IMAGE_COLUMNS`, rejected files left out."""
    if not manifest.num_rows:
        return set()
    return {
        sha
        for sha, rejected in zip(
            manifest.column("image_sha256").to_pylist(),
            manifest.column("rejected_reason").to_pylist(),
            strict=True,
        )
        if not rejected
    }


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


def in_hash_order(rows: list[dict]) -> list[dict]:
    """Rows in the order of their paths' hashes.

    Beam's local runner deals each worker every n-th element in arrival order, and
    the join keeps the manifest's path order, where alike files alternate (the front
    and back of each scanned print, a page after each photo): split that way, one
    worker can get all the expensive images. In hash order each share is a random
    sample.
    """
    return sorted(rows, key=lambda row: hashlib.sha256(row["source_path"].encode()).digest())


def _read_manifest(corpus_version: str, corpus_root: str):
    """The version's manifest rows, read on a worker (a manifest can be millions of rows)."""
    yield from in_hash_order(manifest_rows(corpus_root, corpus_version).to_pylist())


def _by_content(row: dict):
    """Files rejected at ingest have no content: each is its own key."""
    return row["image_sha256"] or f"rejected:{row['source_path']}", row


def _newest(stored: list[tuple[str, object, str]]) -> dict[str, object]:
    """step -> decoded result, the newest where a result was stored twice."""
    return {
        step: result_store.decode(result)
        for step, _, result in sorted(stored, key=lambda one: one[1])
    }


def start_record(
    entries: list[ManifestEntry], stored: list, plan: ResultPlan | None, data: bytes | None = None
) -> ImageRecord:
    """The record of one content: its files, its stored results, the steps it runs."""
    recompute = plan.recompute if plan else frozenset()
    # A step computed again starts without its old result: a failure leaves none.
    results = {s: r for s, r in _newest(stored).items() if s not in recompute}
    return ImageRecord(
        entry=entries[0],
        aliases=tuple(entries[1:]),
        data=data,
        results=results,
        pending=plan.pending(results) if plan else None,
        reused=frozenset(results),
        **(with_decoded(results.get(StepName.DECODE)) if StepName.DECODE in results else {}),
    )


class _StartImages(beam.DoFn):
    """One record per distinct content, with its stored results and pending steps.

    A record that must be decoded again goes to `to_read`; the others are complete.
    """

    def __init__(self, corpus_root: str, plan: ResultPlan | None) -> None:
        self._corpus_root = corpus_root
        self._plan = plan

    def setup(self) -> None:
        self._not_read = progress.counter(READ_STEP, "not_needed")
        self._rejected = Metrics.counter(INGEST_STEP, "failed")

    def process(self, keyed):
        _, grouped = keyed
        files = sorted(grouped["files"], key=lambda row: row["source_path"])
        if files:  # else: stored results of images that are not in this version
            yield from self._start(files, list(grouped["stored"]))

    def _start(self, files: list[dict], stored: list):
        entries = [locate(ManifestEntry(**row), self._corpus_root) for row in files]
        if entries[0].rejected_reason:
            self._rejected.inc()
            error = RejectedAtIngestError(entries[0].rejected_reason)
            yield _error(entries[0], INGEST_STEP, error)
            return
        record = start_record(entries, stored, self._plan)
        if record.must_run(StepName.DECODE):
            yield beam.pvalue.TaggedOutput(_TO_READ, record)
        else:
            self._not_read.inc(len(entries))
            yield record


class _ReadOriginals(beam.DoFn):
    """A record with the bytes of its file, or of the first of its copies that reads."""

    def setup(self) -> None:
        self._read = progress.counter(READ_STEP, "processed")
        self._failed = progress.counter(READ_STEP, "failed")

    def process(self, record: ImageRecord):
        # Each file is its own copy of the bytes: one missing or damaged is reported,
        # and the bytes are read from the next.
        readable = []
        data = None
        for entry in record.entries:
            try:
                content = read_original(entry)
            except Exception as error:  # noqa: BLE001 - a missing or damaged blob is reported
                self._failed.inc()
                yield _error(entry, READ_STEP, error)
                continue
            data = data or content
            readable.append(entry)
        if readable:
            self._read.inc(len(readable))
            yield dataclasses.replace(
                record, entry=readable[0], aliases=tuple(readable[1:]), data=data
            )


@beam.ptransform_fn
def _DealEvenly(records):  # noqa: N802 - a PTransform, named like one
    """Records in a shuffle of their own, so the images that must be computed are
    shared evenly between workers, whatever share of the version was stored (the
    local runner deals a shuffle's keys to its workers in turn)."""
    return (
        records
        | "ByContent" >> beam.Map(lambda record: (record.entry.image_sha256, record))
        | "Shuffle" >> beam.GroupByKey()
        | "Records" >> beam.FlatMap(lambda keyed: keyed[1])
    )


def _aliases(record: ImageRecord):
    """(image SHA-256, its files) for content read from more than one file."""
    if record.aliases:
        yield record.entry.image_sha256, record.entries


def _error(entry: ManifestEntry, step: str, error: Exception):
    return beam.pvalue.TaggedOutput(ERRORS, ErrorRecord.for_entry(entry, step, error))


@dataclasses.dataclass(eq=False)
class ReadCorpus(beam.PTransform):
    """Lists a corpus version from its manifest, joins the results stored for its images,
    and reads the originals that still have a step to run.

    Files with the same bytes become one record (the first path, the others as its
    `aliases`), so each content is computed once.

    Args:
        corpus_root: the corpus root, any Beam filesystem path.
        corpus_version: the version to read.
        plan: the run's steps and fingerprints; None runs every step on every image.
        store: where results are stored; without it (or a plan) nothing is reused.

    Returns:
        Outputs `records` (ImageRecord with stored results, and bytes if needed),
        `errors` (files rejected at ingest, missing from storage, or changed since)
        and `aliases` (image SHA-256 -> the files sharing those bytes).
    """

    corpus_root: str
    corpus_version: str
    plan: ResultPlan | None = None
    store: ResultStore | None = None

    def __post_init__(self) -> None:
        super().__init__()
        paths.check_version(self.corpus_version)
        self._stored = (
            ReadStoredResults(self.store, self.plan) if self.store and self.plan else None
        )

    def expand(self, pipeline):
        files = (
            pipeline
            | "Version" >> beam.Create([self.corpus_version])
            | "ReadManifest" >> beam.FlatMap(_read_manifest, self.corpus_root)
            | "ByContent" >> beam.Map(_by_content)
        )
        stored = (
            pipeline | "ReadStoredResults" >> self._stored
            if self._stored
            else pipeline | "NothingStored" >> beam.Create([])
        )
        started = (
            {"files": files, "stored": stored}
            | "JoinStoredResults" >> beam.CoGroupByKey()
            | "StartImages"
            >> beam.ParDo(_StartImages(self.corpus_root, self.plan)).with_outputs(
                ERRORS, _TO_READ, main=RECORDS
            )
        )
        read = (
            started[_TO_READ]
            | "DealEvenly" >> _DealEvenly()
            | "ReadOriginals" >> beam.ParDo(_ReadOriginals()).with_outputs(ERRORS, main=RECORDS)
        )
        records = (started[RECORDS], read[RECORDS]) | "AllImages" >> beam.Flatten()
        return {
            RECORDS: records,
            ERRORS: (started[ERRORS], read[ERRORS]) | "ReadErrors" >> beam.Flatten(),
            ALIASES: records | "Aliases" >> beam.FlatMap(_aliases),
        }
