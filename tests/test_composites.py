"""One TestPipeline test per composite transform."""

import dataclasses
import hashlib
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.dataset as pads
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from tests import image_factory
from tests.conftest import make_test_pipeline
from transforms import paths
from transforms.corpus.ingest import read_manifest
from transforms.corpus.read import ALIASES, ReadCorpus, shard_bounds, shard_filter
from transforms.per_image import ERRORS, RECORDS
from transforms.records import ErrorRecord, ImageRecord
from transforms.tables import delta, schemas
from transforms.tasks.decode import DecodeImages, DecodeSettings, decode_record
from transforms.tasks.output import MergeIntoTable, WriteTables
from transforms.tasks.thumbnail import (
    RESULT_TYPE,
    MakeThumbnails,
    ThumbnailSettings,
    thumbnail_size,
)

BAD = image_factory.BAD_FILES
GOOD = image_factory.GOOD_FILES


def _counter(result, namespace, name):
    query = MetricsFilter().with_namespace(namespace).with_name(name)
    return sum(c.committed for c in result.metrics().query(query)["counters"])


def _records(root):
    """Manifest entries of v1 with their bytes, as ReadCorpus would emit them."""
    return [
        ImageRecord(entry=entry, data=open(entry.uri, "rb").read())
        for entry in read_manifest(root, "v1")
    ]


def _decoded(root):
    return [
        decode_record(record, DecodeSettings(), allow_heif=True)[0]
        for record in _records(root)
        if record.entry.source_path in GOOD
    ]


def test_read_corpus_reads_every_file_and_reports_damaged_ones(small_corpus):
    entries = {e.source_path: e for e in read_manifest(small_corpus, "v1")}
    os.remove(entries["root-level.png"].uri)
    with open(entries["camera/UPPER.JPG"].uri, "ab") as handle:
        handle.write(b"tampered")
    pipeline = make_test_pipeline()
    outputs = pipeline | ReadCorpus(small_corpus, "v1")
    # Files with the same bytes travel as one record, the others as its aliases.
    read = outputs[RECORDS] | beam.FlatMap(
        lambda r: [(entry.source_path, len(r.data)) for entry in r.entries]
    )
    failed = outputs[ERRORS] | beam.Map(lambda e: (e.path, e.step, e.error_type))
    expected = [
        (path, entries[path].bytes)
        for path in entries
        if path not in ("root-level.png", "camera/UPPER.JPG")
    ]
    assert_that(read, equal_to(expected), label="Read")
    assert_that(
        failed,
        equal_to(
            [
                ("root-level.png", "read", "FileNotFoundError"),
                ("camera/UPPER.JPG", "read", "IntegrityError"),
            ]
        ),
        label="Errors",
    )
    result = pipeline.run()
    assert _counter(result, "read", "processed") == len(expected)


def test_every_content_falls_in_exactly_one_shard_and_shards_hold_as_many():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(240)]
    table = pa.table({"image_sha256": ["", *hashes]})  # "": a file rejected at ingest
    bounds = shard_bounds(hashes)
    counts = [
        pads.dataset(table).to_table(filter=shard_filter(shard, bounds)).num_rows
        for shard in range(len(bounds) + 1)
    ]
    assert counts == [31] + [30] * 7  # the first also holds the rejected file
    assert len(shard_bounds(hashes * 2 + [f"{i:064x}" for i in range(10**5)])) + 1 == 51
    assert shard_bounds(hashes[:3]) == tuple(sorted(hashes[:3])[1:])
    assert len(shard_bounds(hashes, workers=6)) + 1 == 12  # two shards per worker


def test_decode_images_sends_bad_files_to_errors(small_corpus):
    pipeline = make_test_pipeline()
    outputs = pipeline | beam.Create(_records(small_corpus)) | DecodeImages()
    decoded = outputs[RECORDS] | beam.Map(
        lambda r: (r.entry.source_path, r.image.mode, r.data is None)
    )
    failed = outputs[ERRORS] | beam.Map(lambda e: (e.path, e.step, e.error_type))
    assert_that(decoded, equal_to([(path, "RGB", True) for path in GOOD]), label="Decoded")
    assert_that(
        failed,
        equal_to([(path, "decode", error) for path, (_, error) in BAD.items()]),
        label="Errors",
    )
    result = pipeline.run()
    assert _counter(result, "decode", "failed") == len(BAD)
    assert _counter(result, "decode", "processed") == len(GOOD)


def test_decode_images_validates_its_options():
    try:
        DecodeSettings(max_pixels=0)
    except ValueError as error:
        assert "--max-pixels" in str(error)
    else:
        raise AssertionError("max_pixels=0 was accepted")


def _run_thumbnails(root, records, expected, **options):
    pipeline = make_test_pipeline()
    outputs = pipeline | beam.Create(records) | MakeThumbnails(root, ThumbnailSettings(**options))
    results = outputs[RECORDS] | beam.Map(
        lambda r: (
            r.results["thumbnail"]["uri"],
            r.results["thumbnail"]["width"],
            r.results["thumbnail"]["height"],
        )
    )
    assert_that(results, equal_to(expected))
    return pipeline.run()


def test_make_thumbnails_writes_once_and_skips_existing(small_corpus):
    records = _decoded(small_corpus)
    expected = [
        (
            paths.transform_uri(
                small_corpus, "thumbnail", "1", r.entry.set_path, "v1", r.entry.file_name + ".jpg"
            ),
            *thumbnail_size(r.width, r.height, 32),
        )
        for r in records
    ]
    # The EXIF-rotated 64x48 original is shown 48x64, so its thumbnail is portrait.
    assert (small_corpus + "/transform/thumbnail/1/camera/v1/rotated.jpg.jpg", 24, 32) in expected
    result = _run_thumbnails(small_corpus, records, expected, max_side=32)
    assert _counter(result, "thumbnail", "processed") == len(GOOD)
    mtimes = {uri: os.stat(uri).st_mtime_ns for uri, _, _ in expected}
    for uri, width, height in expected:
        with Image.open(uri) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == ("JPEG", (width, height))
    result = _run_thumbnails(small_corpus, records, expected, max_side=32)
    assert _counter(result, "thumbnail", "skipped_existing") == len(GOOD)
    assert {uri: os.stat(uri).st_mtime_ns for uri, _, _ in expected} == mtimes


def test_make_thumbnails_passes_undecoded_images_on(small_corpus):
    record = _records(small_corpus)[0]
    undecoded = dataclasses.replace(record, data=None)
    pipeline = make_test_pipeline()
    outputs = pipeline | beam.Create([undecoded]) | MakeThumbnails(small_corpus)
    assert_that(outputs[RECORDS] | beam.Map(lambda r: r.results), equal_to([{}]))
    result = pipeline.run()
    assert _counter(result, "thumbnail", "skipped_upstream_failed") == 1


def test_merge_into_table_upserts_and_deletes_only_what_it_owns(tmp_path):
    where = delta.location(str(tmp_path), "t")
    schema = pa.schema([("corpus_version", pa.string()), ("key", pa.string()), ("n", pa.int64())])
    delta.append(
        where,
        pa.Table.from_pylist([{"corpus_version": "v2", "key": "x", "n": 0}], schema=schema),
        ["corpus_version"],
    )
    for rows in ([{"key": str(i), "n": i} for i in range(50)], [{"key": "0", "n": 7}], []):
        pipeline = make_test_pipeline()
        created = pipeline | beam.Create([{"corpus_version": "v1", **row} for row in rows])
        plan = delta.Merge(("corpus_version", "key"), delete_unmatched="t.corpus_version = 'v1'")
        merged = created | MergeIntoTable(where, schema, plan, ("corpus_version",), {})
        assert_that(merged, equal_to([len(rows)]))
        pipeline.run()
        table = {(r["corpus_version"], r["key"]): r["n"] for r in delta.read(where).to_pylist()}
        assert table == {("v2", "x"): 0, **{("v1", row["key"]): row["n"] for row in rows}}


def test_write_parquet_tables_writes_images_and_errors(small_corpus):
    records = [r.with_result("thumbnail", None) for r in _decoded(small_corpus)]
    error = ErrorRecord("v1", "bad/x.jpg", "u", "h", "decode", "EmptyFileError", "empty")
    pipeline = make_test_pipeline()
    outputs = {
        RECORDS: pipeline | "Records" >> beam.Create(records),
        ERRORS: pipeline | "Errors" >> beam.Create([error]),
    }
    outputs | WriteTables(small_corpus, "v1", {"thumbnail": RESULT_TYPE}, ("decode", "thumbnail"))
    pipeline.run()
    images = delta.read(delta.location(small_corpus, schemas.IMAGES))
    assert sorted(images.column("source_path").to_pylist()) == sorted(GOOD)
    assert images.schema.field("thumbnail").type == RESULT_TYPE
    errors = delta.read(delta.location(small_corpus, schemas.ERRORS)).to_pylist()
    assert errors == [dataclasses.asdict(error)]


def _with_faces(record: ImageRecord, count: int) -> ImageRecord:
    faces = [
        {
            "face_id": f"{record.entry.image_sha256[:8]}-{index}",
            "face_index": index,
            "box": {"left": 0.0, "top": 0.0, "right": 10.0, "bottom": 10.0},
            "keypoints": [],
            "score": 0.9,
        }
        for index in range(count)
    ]
    return record.with_result("facedetection", {"model": "test", "faces": faces})


def _write_faces(root, records, errors=()):
    pipeline = make_test_pipeline()
    outputs = {
        RECORDS: pipeline | "Records" >> beam.Create(records),
        ERRORS: pipeline | "Errors" >> beam.Create(list(errors)),
    }
    outputs | WriteTables(root, "v1", {}, ("decode", "facedetection"))
    pipeline.run()
    faces = delta.read(delta.location(root, schemas.FACES)).to_pylist()
    images = delta.read(delta.location(root, schemas.IMAGES)).column("source_path").to_pylist()
    return sorted((f["source_path"], f["face_index"]) for f in faces), sorted(images)


def test_rows_merged_a_few_images_at_a_time_replace_each_files_faces(small_corpus, monkeypatch):
    decoded = [r for r in _records(small_corpus) if r.entry.source_path in GOOD]
    paths_ = sorted(r.entry.source_path for r in decoded)
    # Shards end as the next one's records arrive, each merged on its own.
    monkeypatch.setattr("transforms.tasks.output.LATER_SHARD_FILES", 1)
    monkeypatch.setattr("transforms.tasks.output.SMALL_SHARD_FILES", 1)
    sharded = [dataclasses.replace(r, shard=i // 2) for i, r in enumerate(decoded)]
    faces, _ = _write_faces(small_corpus, [_with_faces(r, 2) for r in sharded])
    assert faces == sorted((path, index) for path in paths_ for index in (0, 1))
    history = delta.history(delta.location(small_corpus, schemas.IMAGES))
    merges = [commit for commit in history if commit["operation"] == "MERGE"]
    assert len(merges) == len({r.shard for r in sharded})

    # Committed one image at a time: each commit replaces only its own files' faces.
    monkeypatch.setattr("transforms.tasks.output.COMMIT_IMAGES", 1)
    failed, kept = decoded[0], decoded[1:]
    unreadable = ErrorRecord.for_entry(failed.entry, "read", FileNotFoundError("gone"))
    faces, images = _write_faces(small_corpus, [_with_faces(r, 1) for r in kept], [unreadable])
    assert faces == sorted((r.entry.source_path, 0) for r in kept)
    # The file that could not be read this time keeps no rows.
    assert images == sorted(r.entry.source_path for r in kept)

    # A file that left the version loses its rows too.
    departed, staying = kept[0], kept[1:]
    manifest = delta.location(small_corpus, schemas.MANIFEST)
    delta.delete(manifest, f"source_path = {delta.quote(departed.entry.source_path)}")
    faces, images = _write_faces(small_corpus, [_with_faces(r, 1) for r in staying])
    assert images == sorted(r.entry.source_path for r in staying)
    assert faces == sorted((r.entry.source_path, 0) for r in staying)


def test_every_file_of_content_that_no_longer_decodes_loses_its_rows(small_corpus):
    first, second = [r for r in _records(small_corpus) if r.entry.source_path in GOOD][:2]
    copy = dataclasses.replace(second.entry, image_sha256=first.entry.image_sha256)
    record = dataclasses.replace(first, aliases=(copy,))
    _, images = _write_faces(small_corpus, [_with_faces(record, 1)])
    assert images == sorted([first.entry.source_path, second.entry.source_path])

    undecodable = ErrorRecord.for_entry(first.entry, "decode", ValueError("truncated"))
    pipeline = make_test_pipeline()
    outputs = {
        RECORDS: pipeline | "Records" >> beam.Create([]),
        ERRORS: pipeline | "Errors" >> beam.Create([undecodable]),
        ALIASES: pipeline | "Aliases" >> beam.Create([(copy.image_sha256, record.entries)]),
    }
    outputs | WriteTables(small_corpus, "v1", {}, ("decode", "facedetection"))
    pipeline.run()
    assert not delta.read(delta.location(small_corpus, schemas.IMAGES)).num_rows
    errors = delta.read(delta.location(small_corpus, schemas.ERRORS)).column("path")
    assert sorted(errors.to_pylist()) == images
