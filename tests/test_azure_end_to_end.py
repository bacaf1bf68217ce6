"""The sample corpus on Azurite: ingest to Blob Storage, every step, tables in Azure.

Runs the real command line in a subprocess (so worker processes and their logs are
included), then checks the blobs, the Azure Table rows and their keys, and the
Parquet tables read back from `azfs://`; then runs everything again and checks that
nothing was uploaded, rewritten or duplicated.
"""

import os
import re
import subprocess
import sys

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from tests import image_factory
from tests.azurite import ACCOUNT, ACCOUNT_KEY
from tests.corpus_files import table_rows
from transforms import paths
from transforms.corpus.sample import build_sample_corpus, build_sample_gallery
from transforms.io import azure_access
from transforms.io.table_keys import MAX_KEY_CHARS, table_key
from transforms.tables import schemas
from transforms.tables.azure_tables import FACES, IMAGE_SETS, IMAGE_TRANSFORMS, IMAGES
from transforms.tables.schemas import FACES as FACES_PARQUET
from transforms.tables.transforms import TransformSpec, TransformVersionConflict, register_transform

CONTAINER = "e2e-corpus"
ROOT = f"azfs://{ACCOUNT}/{CONTAINER}"
ODD_SET = "odd #1?"
ODD_FILE = "what?#.png"
LONG_SET = "/".join(["n" * 200] * 3)


def _imaginem(*args, env):
    completed = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = completed.stdout + completed.stderr
    assert ACCOUNT_KEY not in output and "AccountKey" not in output
    assert completed.returncode == 0, output
    return completed.stdout


def _snapshot(connection_string):
    """Blob name -> ETag of every original and transform; table name -> entities."""
    container = BlobServiceClient.from_connection_string(connection_string).get_container_client(
        CONTAINER
    )
    blobs = {
        blob.name: blob.etag
        for blob in container.list_blobs()
        if blob.name.startswith(("original/", "transform/"))
    }
    service = TableServiceClient.from_connection_string(connection_string)
    entities = {
        table: list(service.get_table_client(table).list_entities())
        for table in (IMAGE_SETS, IMAGE_TRANSFORMS, IMAGES, FACES)
    }
    return blobs, entities


@pytest.fixture(scope="module")
def azure_runs(azurite, tmp_path_factory):
    base = tmp_path_factory.mktemp("azure")
    drop, gallery = str(base / "drop"), str(base / "gallery")
    build_sample_corpus(drop)
    build_sample_gallery(drop, gallery)
    image_factory.write_files(
        drop,
        {
            f"{ODD_SET}/{ODD_FILE}": image_factory.png_bytes(),
            f"{LONG_SET}/photo.png": image_factory.png_bytes(80, 60),
        },
    )
    env = {**os.environ, azure_access.CONNECTION_STRING_ENV: azurite.connection_string}
    ingest = ("ingest", drop, "--corpus", ROOT, "--version", "v1")
    run = ("run", "--corpus", ROOT, "--version", "v1", "--gallery", gallery)
    outputs = {"ingest": _imaginem(*ingest, env=env), "run": _imaginem(*run, env=env)}
    first = _snapshot(azurite.connection_string)
    outputs["ingest again"] = _imaginem(*ingest, env=env)
    outputs["run again"] = _imaginem(*run, env=env)
    second = _snapshot(azurite.connection_string)
    outputs["ingest v2"] = _imaginem("ingest", drop, "--corpus", ROOT, "--version", "v2", env=env)
    outputs["thumbnail only"] = _imaginem(
        "run", "--corpus", ROOT, "--version", "v1", "--steps", "thumbnail", env=env
    )
    partial = _snapshot(azurite.connection_string)
    os.environ[azure_access.CONNECTION_STRING_ENV] = azurite.connection_string
    FileSystems.set_options(PipelineOptions([]))
    parquet = {
        table: table_rows(ROOT, table, "v1")
        for table in (schemas.MANIFEST, schemas.IMAGE_SETS, schemas.IMAGES, FACES_PARQUET)
    }
    yield {
        "outputs": outputs,
        "first": first,
        "second": second,
        "partial": partial,
        "parquet": parquet,
        "env": env,
        "gallery": gallery,
        "base": base,
    }
    del os.environ[azure_access.CONNECTION_STRING_ENV]


def test_every_file_is_uploaded_and_processed(azure_runs):
    outputs = azure_runs["outputs"]
    assert "18 new" in outputs["ingest"] and "0 failed" in outputs["ingest"]
    assert "decode           18 processed, 0 failed" in outputs["run"]
    assert f"images table     18 rows in {ROOT}/metadata/images/corpus_version=v1" in outputs["run"]
    assert "Azure tables     Images 18 upserted, 0 stale deleted" in outputs["run"]
    blobs, _ = azure_runs["first"]
    for row in azure_runs["parquet"][schemas.MANIFEST]:
        assert row["uri"].removeprefix(ROOT + "/") in blobs
    images = azure_runs["parquet"][schemas.IMAGES]
    assert len({row["source_path"] for row in images}) == 18
    odd = next(row for row in images if row["set_path"] == ODD_SET)
    assert odd["uri"] == f"{ROOT}/original/{ODD_SET}/v1/{ODD_FILE}"
    for row in images:
        thumbnail = row["thumbnail"]["uri"]
        assert thumbnail == paths.transform_uri(
            ROOT, "thumbnail", "1", row["set_path"], "v1", row["file_name"] + ".jpg"
        )
        assert thumbnail.removeprefix(ROOT + "/") in blobs
    faces = azure_runs["parquet"][FACES_PARQUET]
    assert len(faces) >= 2 and {"eileen-collins", "photographer"} <= {f["person"] for f in faces}
    for face in faces:
        assert face["crop_uri"].removeprefix(ROOT + "/") in blobs


def test_table_rows_and_keys(azure_runs):
    _, entities = azure_runs["first"]
    parquet = azure_runs["parquet"]
    images = {(e["PartitionKey"], e["RowKey"]): e for e in entities[IMAGES]}
    assert len(images) == len(parquet[schemas.IMAGES]) == 18
    for row in parquet[schemas.IMAGES]:
        entity = images[(table_key(CONTAINER, "v1", row["set_path"]), table_key(row["file_name"]))]
        assert entity["image_sha256"] == row["image_sha256"]
        assert entity["source_path"] == row["source_path"]
        assert "thumbnail" in entity and "generalclassification" in entity
    long_key = table_key(CONTAINER, "v1", LONG_SET)
    assert len(long_key) == MAX_KEY_CHARS and long_key in {pk for pk, _ in images}
    assert ("e2e-corpus!v1!odd~20~231~3F", "what~3F~23.png") in images

    faces = {(e["PartitionKey"], e["RowKey"]): e for e in entities[FACES]}
    assert len(faces) == len(parquet[FACES_PARQUET])
    for row in parquet[FACES_PARQUET]:
        file_name = row["source_path"].rpartition("/")[2]
        key = (
            table_key(CONTAINER, "v1", row["set_path"]),
            table_key(file_name, f"{row['face_index']:04d}"),
        )
        assert faces[key]["face_id"] == row["face_id"]
        assert faces[key].get("person") == row["person"]

    sets = {(e["PartitionKey"], e["RowKey"]): e for e in entities[IMAGE_SETS]}
    for row in parquet[schemas.IMAGE_SETS]:
        original = sets[(table_key(CONTAINER, row["set_path"]), "v1")]
        assert original["kind"] == "original" and original["blob_prefix"] == row["blob_prefix"]
        for transform, version in (("thumbnail", "1"), ("facecrop", "2")):
            transformed = sets[
                (table_key(CONTAINER, row["set_path"]), table_key("v1", transform, version))
            ]
            assert transformed["kind"] == "transform"
            assert transformed["blob_prefix"].startswith(f"{ROOT}/transform/{transform}/{version}/")
    assert {(e["PartitionKey"], e["RowKey"]) for e in entities[IMAGE_TRANSFORMS]} == {
        (f"{CONTAINER}!thumbnail", "1"),
        (f"{CONTAINER}!facecrop", "2"),
    }


def test_running_again_uploads_rewrites_and_duplicates_nothing(azure_runs):
    outputs = azure_runs["outputs"]
    assert (
        "0 new (0 bytes copied), 0 already in the corpus (linked, no bytes copied), "
        "18 already in this version, 0 failed" in outputs["ingest again"]
    )
    # Every result is stored: the second run reads, decodes and computes nothing.
    assert re.search(r"thumbnail +0 processed, \d+ reused \(stored result\)", outputs["run again"])
    assert re.search(r"read +0 processed, .* \d+ not read", outputs["run again"])
    first_blobs, first_entities = azure_runs["first"]
    second_blobs, second_entities = azure_runs["second"]
    assert second_blobs == first_blobs  # same names, same ETags: nothing written again
    for table, entities in first_entities.items():
        keys = [(e["PartitionKey"], e["RowKey"]) for e in second_entities[table]]
        assert len(keys) == len(set(keys))
        assert sorted(keys) == sorted((e["PartitionKey"], e["RowKey"]) for e in entities), table


AZURE_READERS = """
import sys
import duckdb
import polars as pl
from deltalake import DeltaTable
from transforms.tables import delta

root = sys.argv[1]
where = {name: delta.location(root, name) for name in ("images", "faces", "errors")}
table = DeltaTable(where["images"].uri, storage_options=where["images"].storage_options())
images = pl.read_delta(where["images"].uri, storage_options=where["images"].storage_options())
faces = pl.read_delta(where["faces"].uri, storage_options=where["faces"].storage_options())
assert table.version() >= 0
print(duckdb.sql("SELECT count(*) FROM images").fetchall()[0][0], faces.height)
"""


def test_tables_on_azure_read_with_deltalake_polars_and_duckdb(azure_runs, azurite):
    env = {**os.environ, azure_access.CONNECTION_STRING_ENV: azurite.connection_string}
    done = subprocess.run(
        [sys.executable, "-c", AZURE_READERS, ROOT], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    images, faces = map(int, done.stdout.split())
    assert images == len(azure_runs["parquet"][schemas.IMAGES])
    assert faces == len(azure_runs["parquet"][FACES_PARQUET]) > 0


def test_a_partial_run_keeps_the_other_steps_in_azure_tables(azure_runs):
    _, before = azure_runs["second"]
    _, after = azure_runs["partial"]
    assert sorted(after[FACES], key=str) == sorted(before[FACES], key=str)
    images_before = {(e["PartitionKey"], e["RowKey"]): e for e in before[IMAGES]}
    assert len(after[IMAGES]) == len(images_before)
    for entity in after[IMAGES]:
        old = images_before[(entity["PartitionKey"], entity["RowKey"])]
        for step in ("generalclassification", "ocr", "facedetection", "facematch"):
            assert entity.get(step) == old.get(step), step


def test_a_new_version_of_the_same_drop_is_copied_inside_the_account(azure_runs):
    assert (
        "0 new (0 bytes copied), 18 already in the corpus (linked, no bytes copied)"
        in azure_runs["outputs"]["ingest v2"]
    )


def test_the_report_and_decisions_on_azure(azure_runs):
    env, faces = azure_runs["env"], azure_runs["parquet"][FACES_PARQUET]
    out = azure_runs["base"] / "report"
    report = ("report", "--corpus", ROOT, "--version", "v1", "--out", str(out))
    printed = _imaginem(*report, "--gallery", azure_runs["gallery"], env=env)
    assert "18 images and" in printed and "could not be read" not in printed
    # Every chip and thumbnail came from the blobs the run wrote.
    assert len(list((out / "media" / "faces").iterdir())) == len({f["face_id"] for f in faces})
    assert len(list((out / "media" / "images").iterdir())) == 18
    people = (out / "people.html").read_text()
    assert "eileen-collins" in people and "photographer" in people
    camera = next(face for face in faces if face["person"] == "photographer")
    review = ("review", "reject", "--corpus", ROOT, "--reviewer", "ana", "--person")
    _imaginem(*review, "photographer", camera["face_id"], env=env)
    listed = _imaginem("review", "list", "--corpus", ROOT, env=env)
    assert "reject" in listed and camera["face_id"] in listed and "1 decision(s)" in listed
    _imaginem(*report, env=env)
    person_pages = [page.read_text() for page in out.glob("person-*.html")]
    assert person_pages and not any(camera["face_id"] in page for page in person_pages)


def test_help_shows_no_secret(azurite):
    env = {**os.environ, azure_access.CONNECTION_STRING_ENV: azurite.connection_string}
    for command in ("ingest", "run"):
        assert "--azure-connection-string-file" in _imaginem(command, "--help", env=env)


def _ingest_process(drop, root, env):
    return subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.cli", "ingest", drop, "--corpus", root,
         "--version", "v1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def test_concurrent_ingests_into_one_version_on_azure_keep_both(azurite, tmp_path, monkeypatch):
    root = f"azfs://{ACCOUNT}/concurrent-ingests"
    env = {**os.environ, azure_access.CONNECTION_STRING_ENV: azurite.connection_string}
    drops = []
    for name in ("a", "b"):
        files = {
            f"{name}/{i}.png": image_factory.png_bytes(20 + i, 10 + ord(name)) for i in range(4)
        }
        image_factory.write_files(str(tmp_path / name), files)
        drops.append(str(tmp_path / name))
    processes = [_ingest_process(drop, root, env) for drop in drops]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
    monkeypatch.setenv(azure_access.CONNECTION_STRING_ENV, azurite.connection_string)
    FileSystems.set_options(PipelineOptions([]))
    manifest = sorted(row["source_path"] for row in table_rows(root, schemas.MANIFEST, "v1"))
    spec = TransformSpec("thumbnail", "1", "1", {"quality": 80})
    assert register_transform(root, spec) is True
    with pytest.raises(TransformVersionConflict):
        register_transform(root, TransformSpec("thumbnail", "1", "1", {"quality": 90}))
    assert manifest == sorted(f"{name}/{i}.png" for name in "ab" for i in range(4))
