"""Results accumulate: stored once, reused by later runs, merged into the tables."""

import json
import multiprocessing
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from beam_pipeline.cli import main
from tests.corpus_files import files_under, table_rows
from transforms.corpus.ingest import ingest_drop
from transforms.remote.answer_store import AnswerStore
from transforms.tables import delta, schemas
from transforms.tables.result_store import ResultPlan, fingerprint
from transforms.tables.transforms import TransformSpec, TransformVersionConflict, register_transform
from transforms.tasks import decode

FACE_PLAN = ResultPlan(
    order=("decode", "facedetection", "facecrop", "faceprint", "facematch", "pipelineoutput"),
    fingerprints={"decode": "d", "facedetection": "f", "facecrop": "c", "faceprint": "p"},
    dependencies={
        "facedetection": ("decode",),
        "facecrop": ("decode", "facedetection"),
        "faceprint": ("decode", "facecrop"),
        "facematch": ("decode", "faceprint"),
        "pipelineoutput": ("decode",),
    },
    needs_pixels=frozenset({"facedetection", "facecrop", "faceprint"}),
    hands_on=frozenset({"decode", "facecrop"}),
)
STORED = ("decode", "facedetection", "facecrop", "faceprint")


def test_a_step_with_every_result_stored_runs_only_the_unstored_steps():
    assert FACE_PLAN.pending(STORED) == {"facematch", "pipelineoutput"}


def test_a_missing_embedding_brings_back_the_chips_and_pixels_it_reads():
    pending = FACE_PLAN.pending(("decode", "facedetection", "facecrop"))
    assert pending == {"decode", "facecrop", "faceprint", "facematch", "pipelineoutput"}


def test_recompute_forces_a_stored_step():
    plan = ResultPlan(**{**FACE_PLAN.__dict__, "recompute": frozenset({"facedetection"})})
    assert plan.pending(STORED) == {"decode", "facedetection", "facematch", "pipelineoutput"}


def test_fingerprints_follow_parameters_versions_and_upstream():
    base = fingerprint("ocr", "1", {"min_score": 0.5}, ["d"])
    assert base == fingerprint("ocr", "1", {"min_score": 0.5}, ["d"])
    assert base != fingerprint("ocr", "1", {"min_score": 0.6}, ["d"])
    assert base != fingerprint("ocr", "2", {"min_score": 0.5}, ["d"])
    assert base != fingerprint("ocr", "1", {"min_score": 0.5}, ["other decode"])


@pytest.fixture(scope="module")
def sample(sample_with_gallery):
    return sample_with_gallery


def _run(root, summary, *extra):
    argv = ["run", "--corpus", root, "--version", "v1", "--summary-json", summary, *extra]
    assert main(argv) == 0
    with open(summary, encoding="utf-8") as handle:
        return json.load(handle)


def test_partial_runs_keep_other_columns_and_reuse_results(sample, tmp_path):
    root, summary = str(tmp_path / "corpus"), str(tmp_path / "summary.json")
    ingest_drop(sample[0], root, "v1")
    first = _run(root, summary, "--steps", "thumbnail,generalclassification")
    assert first["status"] == "DONE"
    assert first["steps"]["generalclassification"] == {
        "computed": 16,
        "reused": 0,
        "failed": 0,
        "skipped_upstream_failed": 0,
    }
    assert first["tables"]["images"] == 16
    labels = {r["source_path"]: r["generalclassification"] for r in table_rows(root, "images")}

    again = _run(root, summary, "--steps", "thumbnail")
    assert again["steps"]["thumbnail"]["reused"] == 16
    assert again["steps"]["thumbnail"]["computed"] == again["read"]["read"] == 0
    images = table_rows(root, "images")
    assert {r["source_path"]: r["generalclassification"] for r in images} == labels

    fewer = _run(root, summary, "--steps", "generalclassification", "--classification-top-k", "2")
    assert fewer["steps"]["generalclassification"]["computed"] == 16
    assert fewer["steps"]["decode"]["computed"] == 16  # pixels for the model, not stored again
    stored = [row["step"] for row in table_rows(root, schemas.RESULTS)]
    assert (stored.count("decode"), stored.count("generalclassification")) == (16, 32)
    assert all(len(r["generalclassification"]["labels"]) == 2 for r in table_rows(root, "images"))
    assert all(r["thumbnail"] is not None for r in table_rows(root, "images"))

    forced = _run(root, summary, "--steps", "thumbnail", "--recompute", "thumbnail")
    assert forced["steps"]["thumbnail"]["computed"] == 16
    history = delta.history(delta.location(root, schemas.IMAGES))
    assert {"run"} == {c.get("imaginem.command") for c in history if "imaginem.steps" in c}
    assert history[0]["imaginem.corpus_version"] == "v1"
    assert json.loads(history[0]["imaginem.step_versions"]) == {
        "decode": decode.STEP_VERSION,
        "thumbnail": "1",
        "pipelineoutput": "1",
    }


def test_recompute_must_name_a_step_of_the_run(sample, tmp_path, capsys):
    root = str(tmp_path / "corpus")
    ingest_drop(sample[0], root, "v1")
    argv = ["run", "--corpus", root, "--version", "v1", "--steps", "thumbnail"]
    assert main([*argv, "--recompute", "ocr"]) == 2
    assert "--recompute names step(s) this run does not include: ocr" in capsys.readouterr().err


def test_a_gallery_change_recomputes_only_matching(sample, tmp_path):
    root, summary = str(tmp_path / "corpus"), str(tmp_path / "summary.json")
    ingest_drop(sample[0], root, "v1")
    steps = ["--steps", "facematch"]
    first = _run(root, summary, *steps, "--gallery", sample[1])
    assert first["steps"]["faceprint"]["computed"] == 16
    people = sorted(os.listdir(sample[1]))
    assert {r["person"] for r in table_rows(root, "faces")} == set(people)
    chips = files_under(os.path.join(root, "transform"))

    smaller = str(tmp_path / "gallery")
    shutil.copytree(os.path.join(sample[1], people[0]), os.path.join(smaller, people[0]))
    second = _run(root, summary, *steps, "--gallery", smaller)
    for step in ("decode", "facedetection", "facecrop", "faceprint"):
        assert second["steps"][step] == {
            "computed": 0,
            "reused": 16,
            "failed": 0,
            "skipped_upstream_failed": 0,
        }, step
    assert second["steps"]["facematch"]["computed"] == 16
    assert {r["person"] for r in table_rows(root, "faces")} == {people[0], None}
    assert files_under(os.path.join(root, "transform")) == chips
    # A run without face steps leaves the faces as they are; one with detection alone
    # changes only the detection's columns.
    faces = sorted(table_rows(root, "faces"), key=str)
    _run(root, summary, "--steps", "thumbnail")
    assert sorted(table_rows(root, "faces"), key=str) == faces
    _run(root, summary, "--steps", "facedetection")
    assert sorted(table_rows(root, "faces"), key=str) == faces


def test_a_new_version_transfers_and_computes_only_its_new_images(sample, tmp_path, capsys):
    root, summary = str(tmp_path / "corpus"), str(tmp_path / "summary.json")
    ingest_drop(sample[0], root, "v1")
    _run(root, summary, "--steps", "generalclassification")
    drop = str(tmp_path / "drop-2")
    subprocess.run(["cp", "-r", sample[0], drop], check=True)
    Image.new("RGB", (64, 48), (10, 200, 30)).save(os.path.join(drop, "new.png"))
    os.remove(os.path.join(drop, "food", "coffee", "coffee.png"))
    report = ingest_drop(drop, root, "v2")
    # Bytes already in the corpus are linked, not copied again.
    assert (report.copied, report.linked) == (1, 15)
    old, new = (
        os.path.join(root, "original", "people", "astronaut", v, "astronaut.png")
        for v in ("v1", "v2")
    )
    assert os.stat(old).st_ino == os.stat(new).st_ino
    v2_rows = table_rows(root, schemas.MANIFEST, "v2")
    assert sum(1 for row in v2_rows if row["same_bytes_as"]) == 15

    assert (
        main(
            [
                "diff",
                "--corpus",
                root,
                "--from",
                "v1",
                "--to",
                "v2",
                "--steps",
                "generalclassification",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "1 added, 1 removed, 0 changed, 15 unchanged" in printed
    assert "  added    new.png" in printed and "  removed  food/coffee/coffee.png" in printed
    assert "  generalclassification  1" in printed
    argv = ["--corpus", root, "--version", "v2", "--steps", "generalclassification"]
    assert main(["run", *argv, "--summary-json", summary]) == 0
    with open(summary, encoding="utf-8") as handle:
        counts = json.load(handle)["steps"]["generalclassification"]
    assert (counts["computed"], counts["reused"]) == (1, 15)
    assert len(table_rows(root, "images", "v2")) == 16


def _ingest(drop, root):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline.cli",
            "ingest",
            drop,
            "--corpus",
            root,
            "--version",
            "v1",
        ],
        capture_output=True,
        text=True,
    )


def test_concurrent_ingests_of_two_drops_keep_both(tmp_path):
    root = str(tmp_path / "corpus")
    drops = []
    for name in ("a", "b"):
        drop = tmp_path / f"drop-{name}" / name
        drop.mkdir(parents=True)
        for index in range(6):
            Image.new("RGB", (32, 32), (index * 40, 0, 100)).save(drop / f"{index}.png")
        drops.append(str(drop.parent))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = pool.starmap(_ingest, [(drop, root) for drop in drops])
    assert [result.returncode for result in done] == [0, 0], [r.stderr for r in done]
    paths = sorted(row["source_path"] for row in table_rows(root, schemas.MANIFEST, "v1"))
    assert paths == sorted(f"{name}/{i}.png" for name in "ab" for i in range(6))
    assert {row["set_path"] for row in table_rows(root, schemas.IMAGE_SETS, "v1")} == {"a", "b"}


def _register(root, quality):
    spec = TransformSpec("thumbnail", "1", "1", {"quality": quality})
    try:
        return register_transform(root, spec)
    except TransformVersionConflict as error:
        return str(error)


def test_racing_registrations_of_one_transform_version_refuse_one(tmp_path):
    root = str(tmp_path / "corpus")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outcomes = pool.starmap(_register, [(root, 80), (root, 90)])
    assert sorted(map(type, outcomes), key=str) == [bool, str], outcomes
    assert "Choose a new --thumbnail-version" in next(o for o in outcomes if isinstance(o, str))
    assert len(table_rows(root, schemas.TRANSFORMS)) == 1


def test_tables_of_an_older_release_are_refused_with_the_fix(tmp_path, capsys):
    root = str(tmp_path / "corpus")
    legacy = os.path.join(root, "metadata", "manifest", "corpus_version=v1")
    os.makedirs(legacy)
    pq.write_table(pa.table({"source_path": ["a.jpg"]}), os.path.join(legacy, "part-0.parquet"))
    assert main(["run", "--corpus", root, "--version", "v1"]) == 2
    assert "imaginem migrate --corpus" in capsys.readouterr().err


def test_migrate_converts_an_older_release_s_tables(sample, tmp_path, capsys):
    root = str(tmp_path / "corpus")
    ingest_drop(sample[0], root, "v1")
    manifest = table_rows(root, schemas.MANIFEST, "v1")
    # The layout of an older release: hive-partitioned shards, no transaction log.
    folder = os.path.join(root, "metadata", "manifest")
    subprocess.run(["rm", "-r", folder], check=True)
    os.makedirs(os.path.join(folder, "corpus_version=v1"))
    pq.write_table(
        pa.Table.from_pylist(manifest, schema=schemas.MANIFEST_SCHEMA),
        os.path.join(folder, "corpus_version=v1", "part-00000-of-00001.parquet"),
    )
    # An answer file of an older release's API answer cache.
    answer = os.path.join(root, "cache", "api", "ocr", "azure-vision", "2023-10-01", "ab" * 32)
    os.makedirs(os.path.dirname(answer))
    with open(answer + ".json", "w", encoding="utf-8") as handle:
        json.dump({"model": "2023-10-01", "answer": {"lines": []}}, handle)
    assert main(["run", "--corpus", root, "--version", "v1"]) == 2
    assert main(["migrate", "--corpus", root]) == 0
    printed = capsys.readouterr()
    assert "imaginem migrate --corpus" in printed.err
    assert "1 table(s) converted" in printed.out and "Moved 1 stored API answer" in printed.out
    store = AnswerStore(root, "ocr", "azure-vision", "2023-10-01")
    assert store.get_many(["ab" * 32])["ab" * 32].answer == {"lines": []}
    assert sorted(table_rows(root, schemas.MANIFEST, "v1"), key=str) == sorted(manifest, key=str)
    assert main(["run", "--corpus", root, "--version", "v1", "--steps", "decode"]) == 0


def _run_process(root, *steps):
    return subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.cli", "run", "--corpus", root, "--version", "v1",
         "--steps", ",".join(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_overlapping_runs_of_one_version_both_land(sample, tmp_path):
    root = str(tmp_path / "corpus")
    ingest_drop(sample[0], root, "v1")
    runs = [_run_process(root, "generalclassification"), _run_process(root, "thumbnail")]
    for process in runs:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    images = table_rows(root, schemas.IMAGES)
    assert len(images) == len({row["source_path"] for row in images}) == 16
    assert all(row["generalclassification"] and row["thumbnail"] for row in images)


FACES_READER = """
import sys
import duckdb
import polars as pl
from deltalake import DeltaTable

folder = sys.argv[1]
faces = DeltaTable(folder).to_pyarrow_dataset()
print(faces.to_table().column("embedding").null_count)
print(pl.read_delta(folder)["embedding"].null_count())
print(duckdb.sql("SELECT count(*) FROM faces WHERE embedding IS NULL").fetchall()[0][0])
"""


def test_faces_without_embeddings_read_everywhere(sample, tmp_path):
    root = str(tmp_path / "corpus")
    ingest_drop(sample[0], root, "v1")
    assert main(["run", "--corpus", root, "--version", "v1", "--steps", "facedetection"]) == 0
    folder = os.path.join(root, "metadata", schemas.FACES)
    done = subprocess.run(
        [sys.executable, "-c", FACES_READER, folder], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2", "2"]


def test_every_file_with_the_same_bad_bytes_is_in_errors(tmp_path):
    drop, root = tmp_path / "drop", str(tmp_path / "corpus")
    for name in ("a/broken.jpg", "b/copy.jpg", "c/again.jpg"):
        (drop / name).parent.mkdir(parents=True, exist_ok=True)
        (drop / name).write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    Image.new("RGB", (40, 30), (1, 2, 3)).save(drop / "fine.png")
    ingest_drop(str(drop), root, "v1")
    os.remove(os.path.join(root, "original", "c", "v1", "again.jpg"))
    assert main(["run", "--corpus", root, "--version", "v1", "--steps", "decode"]) == 0
    errors = {(row["path"], row["step"]) for row in table_rows(root, schemas.ERRORS)}
    # The content fails to decode for both files that hold it; the missing file alone
    # fails to read.
    assert errors == {("a/broken.jpg", "decode"), ("b/copy.jpg", "decode"), ("c/again.jpg", "read")}
    assert [row["source_path"] for row in table_rows(root, schemas.IMAGES)] == ["fine.png"]
