"""`ingest` then `run` on a temp folder, through the CLI and the default local runner."""

import ast
import hashlib
import os
import subprocess
import sys

import pytest

from beam_pipeline.cli import main
from beam_pipeline.run import run
from beam_pipeline.summary import step_counters
from tests import image_factory
from tests.corpus_files import files_under, table_rows
from transforms import paths
from transforms.corpus.sample import build_sample_corpus
from transforms.tables import schemas


def _run(root, version="v1", *extra):
    return run(["--corpus", root, "--version", version, *extra])


@pytest.fixture(scope="module")
def sample_drop(tmp_path_factory):
    drop = str(tmp_path_factory.mktemp("sample") / "drop")
    build_sample_corpus(drop)
    return drop


def test_sample_corpus_is_deterministic(sample_drop, tmp_path):
    again = str(tmp_path / "again")
    written = build_sample_corpus(again)
    for path in written:
        relative = os.path.relpath(path, again)
        with open(path, "rb") as first, open(os.path.join(sample_drop, relative), "rb") as second:
            assert first.read() == second.read(), relative
    assert any("people/astronaut" in path for path in written)


def test_ingest_and_run_twice_leaves_each_image_once(sample_drop, tmp_path, capsys):
    root = str(tmp_path / "corpus")
    assert main(["ingest", sample_drop, "--corpus", root, "--version", "v1"]) == 0
    image_count = len(table_rows(root, schemas.MANIFEST, "v1"))
    assert image_count == 16

    assert main(["run", "--corpus", root, "--version", "v1", "--steps", "thumbnail"]) == 0
    summary = capsys.readouterr().out
    assert "decode           16 processed, 0 failed" in summary
    assert f"images table     16 rows in {root}/metadata/images/corpus_version=v1" in summary
    assert f"faces table      0 rows in {root}/metadata/faces/corpus_version=v1" in summary
    thumbnails = files_under(os.path.join(root, "transform"))
    first_images = table_rows(root, schemas.IMAGES)

    result = _run(root, "v1", "--steps", "thumbnail")
    counters = step_counters(result)
    # Every result is stored: nothing is read, decoded or computed again.
    assert counters["thumbnail"]["reused"] == counters["decode"]["reused"] == image_count
    assert counters["thumbnail"].get("processed", 0) == 0
    assert counters["read"].get("processed", 0) == 0
    assert files_under(os.path.join(root, "transform")) == thumbnails

    images = table_rows(root, schemas.IMAGES)
    assert sorted(images, key=str) == sorted(first_images, key=str)
    assert len({row["source_path"] for row in images}) == len(images) == image_count
    assert table_rows(root, schemas.ERRORS) == []
    astronaut = next(row for row in images if row["source_path"].endswith("astronaut.png"))
    assert astronaut["tags"] == ["people", "astronaut"]
    assert (astronaut["width"], astronaut["height"], astronaut["format"]) == (512, 512, "PNG")
    with open(astronaut["uri"], "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == astronaut["image_sha256"]
    assert astronaut["thumbnail"]["uri"] in thumbnails
    assert len(thumbnails) == image_count
    sets = table_rows(root, schemas.IMAGE_SETS)
    assert sum(row["image_count"] for row in sets) == image_count
    assert {row["transform_version"] for row in table_rows(root, schemas.TRANSFORMS)} == {"1"}


def test_new_versions_go_next_to_the_old(sample_drop, tmp_path):
    root = str(tmp_path / "corpus")
    assert main(["ingest", sample_drop, "--corpus", root, "--version", "v1"]) == 0
    _run(root, "v1", "--steps", "thumbnail")
    old_thumbnails = files_under(os.path.join(root, "transform", "thumbnail", "1"))

    _run(
        root,
        "v1",
        "--steps",
        "thumbnail",
        "--thumbnail-version",
        "small",
        "--thumbnail-max-side",
        "64",
    )
    assert files_under(os.path.join(root, "transform", "thumbnail", "1")) == old_thumbnails
    images = table_rows(root, schemas.IMAGES)
    assert {row["thumbnail"]["transform_version"] for row in images} == {"small"}
    assert max(max(r["thumbnail"]["width"], r["thumbnail"]["height"]) for r in images) == 64
    assert len(table_rows(root, schemas.TRANSFORMS)) == 2

    assert main(["ingest", sample_drop, "--corpus", root, "--version", "v2"]) == 0
    before = files_under(os.path.join(root, "transform"))
    counters = step_counters(_run(root, "v2", "--steps", "thumbnail"))
    assert (
        len(table_rows(root, schemas.IMAGES, "v1"))
        == len(table_rows(root, schemas.IMAGES, "v2"))
        == 16
    )
    # The same bytes in v2: the stored thumbnails of v1 are reused, none made again.
    assert counters["thumbnail"]["reused"] == 16
    assert files_under(os.path.join(root, "transform")) == before
    assert all(
        os.path.exists(r["thumbnail"]["uri"]) for r in table_rows(root, schemas.IMAGES, "v2")
    )


def test_awkward_inputs_land_in_images_or_errors(tmp_path):
    drop, outside = str(tmp_path / "drop"), str(tmp_path / "outside")
    secret = image_factory.awkward_drop(drop, outside)
    root = str(tmp_path / "corpus")
    assert main(["ingest", drop, "--corpus", root, "--version", "v1"]) == 1  # symlinks refused

    result = _run(root)
    assert result.state == "DONE"

    images = {row["source_path"]: row for row in table_rows(root, schemas.IMAGES)}
    assert set(images) == set(image_factory.GOOD_FILES)
    assert (images["camera/rotated.jpg"]["width"], images["camera/rotated.jpg"]["height"]) == (
        48,
        64,
    )
    assert images["camera/actually-png.jpg"]["format"] == "PNG"
    assert images["colour/cmyk.jpg"]["mode"] == "CMYK"
    assert images["motion/animated.gif"]["frames"] == 3
    assert images["camera/iphone.HEIC"]["format"] == "HEIF"
    assert images["root-level.png"]["set_path"] == "" and images["root-level.png"]["tags"] == []
    assert all(row["thumbnail"] is not None for row in images.values())

    errors = {
        (row["path"], row["step"], row["error_type"]) for row in table_rows(root, schemas.ERRORS)
    }
    expected = {(path, "decode", error) for path, (_, error) in image_factory.BAD_FILES.items()}
    expected |= {
        ("bad/outside.jpg", "ingest", "RejectedAtIngestError"),
        ("outside-folder", "ingest", "RejectedAtIngestError"),
    }
    assert errors == expected
    assert all(row["message"] for row in table_rows(root, schemas.ERRORS))

    # Nothing outside the drop was copied or hashed.
    with open(secret, "rb") as handle:
        secret_hash = hashlib.sha256(handle.read()).hexdigest()
    assert secret_hash not in {row["image_sha256"] for row in table_rows(root, schemas.MANIFEST)}
    assert not any("secret" in path for path in files_under(root))


def test_a_step_module_adds_a_column(small_corpus, capsys):
    code = main(
        [
            "run",
            "--corpus",
            small_corpus,
            "--version",
            "v1",
            "--step-module",
            "tests.example_step",
            "--steps",
            "grayscale",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    # Files with the same bytes are computed once.
    assert f"grayscale        {len(set(image_factory.GOOD_FILES.values()))} processed" in out
    # The files that failed are named, with the step and the reason.
    assert f"{len(image_factory.BAD_FILES)} failure(s), in the errors table:" in out
    for path, (_, error_type) in image_factory.BAD_FILES.items():
        assert f"  {path}: decode: {error_type}: " in out
    images = table_rows(small_corpus, schemas.IMAGES)
    assert len(images) == len(image_factory.GOOD_FILES)
    assert all(0 <= row["grayscale"]["mean"] <= 255 for row in images)
    assert all(row["thumbnail"] is None for row in images)


READER_SCRIPT = """
import sys
import duckdb
import polars as pl
from deltalake import DeltaTable

metadata = sys.argv[1]
images = DeltaTable(f"{metadata}/images").to_pyarrow_dataset()
errors = DeltaTable(f"{metadata}/errors").to_pyarrow_dataset()
faces = pl.read_delta(f"{metadata}/faces")
print(duckdb.sql(\"""
  SELECT set_path, count(*) AS images, avg(width) AS mean_width
  FROM images GROUP BY set_path ORDER BY set_path\""").fetchall())
print(duckdb.sql("SELECT step, error_type, path, message FROM errors").fetchall())
print(duckdb.sql(\"""
  SELECT source_path, face_index, person, round(distance, 3), cluster_id, crop_uri
  FROM faces ORDER BY person NULLS LAST, cluster_id\""").fetchall())
print(duckdb.sql(\"""
  SELECT source_path, generalclassification.labels[1].label AS best_label, ocr.text
  FROM images\""").fetchall())
"""


def test_tables_read_with_deltalake_polars_and_duckdb(small_corpus):
    """The README's readers, in a process of their own as a user would run them."""
    _run(small_corpus)
    metadata = paths.join(small_corpus, paths.METADATA_DIR)
    done = subprocess.run(
        [sys.executable, "-c", READER_SCRIPT, metadata], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    counts, errors, faces, labels = (ast.literal_eval(line) for line in done.stdout.splitlines())
    assert sum(row[1] for row in counts) == len(image_factory.GOOD_FILES)
    assert {row[2] for row in errors} == set(image_factory.BAD_FILES)
    assert faces == []  # generated gradients have no faces
    assert len(labels) == len(image_factory.GOOD_FILES) and all(row[1] for row in labels)


def test_a_moved_corpus_still_runs(small_corpus, tmp_path):
    moved = str(tmp_path / "moved")
    os.rename(small_corpus, moved)
    _run(moved, "v1", "--steps", "thumbnail")
    images = table_rows(moved, schemas.IMAGES)
    assert len(images) == len(image_factory.GOOD_FILES)
    assert all(row["uri"].startswith(moved + "/original/") for row in images)
