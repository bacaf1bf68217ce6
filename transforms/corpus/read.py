"""`ReadCorpus`: the images of one corpus version, with the results already stored for them."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.dataset as pads
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
from transforms.tables.result_store import STORED_COLUMNS, ResultPlan, ResultStore

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


# A version is read in shards: ranges of content hashes, each read, joined with its
# stored results and processed by one worker without a shuffle in between, so no
# process ever holds the whole manifest, and no runner buffers its rows (Beam's
# local runner keeps every element that crosses a shuffle in the driver). Shards are
# the unit of work a runner deals to its workers: as many images in each, at least
# `MIN_SHARDS` of them, about `SHARD_IMAGES` images each for larger versions, and on
# the local runner a multiple of its workers.
MIN_SHARDS = 8
SHARD_IMAGES = 2_000


def shard_bounds(hashes: Iterable[str], workers: int = 0) -> tuple[str, ...]:
    """The first content hash of each shard but the first; with `workers` known, as
    many shards as make every worker an equal share."""
    ordered = sorted(set(hashes) - {""})
    shards = max(MIN_SHARDS, math.ceil(len(ordered) / SHARD_IMAGES))
    if workers > 0:
        shards = math.ceil(shards / workers) * workers
    shards = min(len(ordered), shards)
    return tuple(ordered[(index * len(ordered)) // shards] for index in range(1, shards))


def shard_filter(shard: int, bounds: Sequence[str]) -> pads.Expression:
    """Rows of shard `shard` (of `len(bounds) + 1`): an `image_sha256` from the shard's
    bound up to the next one's. The first shard also holds rows without a hash (files
    rejected at ingest)."""
    field = pads.field("image_sha256")
    expression = pads.scalar(True)
    if shard > 0:
        expression &= field >= bounds[shard - 1]
    if shard < len(bounds):
        expression &= field < bounds[shard]
    return expression


class _ReadShard(beam.DoFn):
    """shard index -> (content key, {"files": manifest rows, "stored": stored results,
    "shard": the index}) for each content of the shard."""

    def __init__(
        self,
        corpus_root: str,
        corpus_version: str,
        bounds: tuple[str, ...],
        stored: tuple[ResultStore, ResultPlan, int] | None,
    ) -> None:
        self._corpus_root = corpus_root
        self._corpus_version = corpus_version
        self._bounds = bounds
        self._stored = stored  # (store, plan, pinned snapshot version)

    def process(self, shard: int):
        in_shard = shard_filter(shard, self._bounds)
        where = delta.location(self._corpus_root, schemas.MANIFEST)
        manifest = delta.read(where, None, version_filter(self._corpus_version) & in_shard)
        contents: dict[str, dict] = {}
        for row in manifest.to_pylist():
            key, row = _by_content(row)
            contents.setdefault(key, {"files": [], "stored": [], "shard": shard})
            contents[key]["files"].append(row)
        for sha, stored in self._stored_results(in_shard):
            if sha in contents:  # else: results of images that are not in this version
                contents[sha]["stored"].append(stored)
        yield from contents.items()

    def _stored_results(self, in_shard: pads.Expression):
        if self._stored is None:
            return
        store, plan, version = self._stored
        table = delta.read(store.location, STORED_COLUMNS, plan.wanted() & in_shard, version)
        columns = (table.column(name).to_pylist() for name in STORED_COLUMNS)
        for sha, step, computed_at, result in zip(*columns, strict=True):
            yield sha, (step, computed_at, result)


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
    """One record per distinct content, with its stored results and pending steps, and
    the bytes of its file (or of the first of its copies that reads) when it must be
    decoded again.

    The bytes are read here rather than after a shuffle: records leave this step as
    one collection, in the worker that read their shard.
    """

    def __init__(self, corpus_root: str, plan: ResultPlan | None) -> None:
        self._corpus_root = corpus_root
        self._plan = plan

    def setup(self) -> None:
        self._not_read = progress.counter(READ_STEP, "not_needed")
        self._read = progress.counter(READ_STEP, "processed")
        self._failed = progress.counter(READ_STEP, "failed")
        self._rejected = Metrics.counter(INGEST_STEP, "failed")

    def process(self, keyed):
        _, grouped = keyed
        files = sorted(grouped["files"], key=lambda row: row["source_path"])
        entries = [locate(ManifestEntry(**row), self._corpus_root) for row in files]
        if entries[0].rejected_reason:
            self._rejected.inc()
            error = RejectedAtIngestError(entries[0].rejected_reason)
            yield _error(entries[0], INGEST_STEP, error)
            return
        record = start_record(entries, list(grouped["stored"]), self._plan)
        record = dataclasses.replace(record, shard=grouped["shard"])
        if record.must_run(StepName.DECODE):
            yield from self._with_bytes(record)
        else:
            self._not_read.inc(len(entries))
            yield record

    def _with_bytes(self, record: ImageRecord):
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


def _aliases(record: ImageRecord):
    """(image SHA-256, its files) for content read from more than one file."""
    if record.aliases:
        yield record.entry.image_sha256, record.entries


def _error(entry: ManifestEntry, step: str, error: Exception):
    return beam.pvalue.TaggedOutput(ERRORS, ErrorRecord.for_entry(entry, step, error))


@dataclasses.dataclass(eq=False)
class ReadCorpus(beam.PTransform):
    """Lists a corpus version from its manifest, joins the results stored for its images,
    and reads the originals that still have a step to run, a shard of contents at a time.

    Files with the same bytes become one record (the first path, the others as its
    `aliases`), so each content is computed once.

    Args:
        corpus_root: the corpus root, any Beam filesystem path.
        corpus_version: the version to read.
        plan: the run's steps and fingerprints; None runs every step on every image.
        store: where results are stored; without it (or a plan) nothing is reused.
        workers: how many workers share the shards, if known (the local runner's).

    Returns:
        Outputs `records` (ImageRecord with stored results, and bytes if needed),
        `errors` (files rejected at ingest, missing from storage, or changed since)
        and `aliases` (image SHA-256 -> the files sharing those bytes).
    """

    corpus_root: str
    corpus_version: str
    plan: ResultPlan | None = None
    store: ResultStore | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        super().__init__()
        paths.check_version(self.corpus_version)
        hashes = manifest_rows(self.corpus_root, self.corpus_version, ("image_sha256",))
        found = hashes.column(0).to_pylist() if hashes.num_rows else ()
        self._bounds = shard_bounds(found, self.workers)
        self._stored = None
        if self.store and self.plan and self.plan.fingerprints:
            # Pinned now, so every worker reads the same snapshot.
            snapshot = delta.snapshot(self.store.location)
            if snapshot is not None:
                self._stored = (self.store, self.plan, snapshot[0])

    def expand(self, pipeline):
        started = (
            pipeline
            | "Shards" >> beam.Create(range(len(self._bounds) + 1))
            | "ReadShard"
            >> beam.ParDo(
                _ReadShard(self.corpus_root, self.corpus_version, self._bounds, self._stored)
            )
            | "StartImages"
            >> beam.ParDo(_StartImages(self.corpus_root, self.plan)).with_outputs(
                ERRORS, main=RECORDS
            )
        )
        records = started[RECORDS]
        return {
            RECORDS: records,
            ERRORS: started[ERRORS],
            ALIASES: records | "Aliases" >> beam.FlatMap(_aliases),
        }
