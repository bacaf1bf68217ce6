"""`imaginem watch` end to end on a local root: started in a process of its own, it
processes two ingests a few seconds apart as they land, commits each image within
seconds, drains on SIGINT with a summary, and computes nothing again on restart."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from tests import image_factory
from tests.azurite import ACCOUNT, ACCOUNT_KEY
from tests.corpus_files import table_rows
from transforms.corpus.arrivals import arrived_entry, blob_created_uris
from transforms.corpus.ingest import ingest_drop
from transforms.io import azure_access
from transforms.tables import schemas

STEPS = "thumbnail,phash,facematch"  # and facematch's own: facedetection, facecrop, faceprint
ARRIVAL_LIMIT = 30.0


def test_an_arrival_is_a_file_of_the_version_under_its_set():
    root = "/corpus"
    entry = arrived_entry(root, "v1", "/corpus/original/red/robin/v1/a.jpg")
    assert (entry.source_path, entry.set_path, entry.file_name) == (
        "red/robin/a.jpg",
        "red/robin",
        "a.jpg",
    )
    assert arrived_entry(root, "v1", "/corpus/original/v1/a.png").source_path == "a.png"
    # Set `v1` of the root's version `v2` is not version v1.
    assert arrived_entry(root, "v1", "/corpus/original/v1/v2/a.png") is None
    for other in (
        "/corpus/original/red/v2/a.jpg",  # another version
        "/corpus/original/red/v1/.a.jpg.partial-host-1",  # a copy being written
        "/corpus/original/red/v1/notes.txt",  # not an image
        "/corpus/transform/thumbnail/1/red/v1/a.jpg.jpg",  # not an original
        "/elsewhere/original/red/v1/a.jpg",
        "/corpus/original/a.jpg",  # in no version folder
    ):
        assert arrived_entry(root, "v1", other) is None, other


def _start(root, *extra, env=None):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beam_pipeline.cli",
            "watch",
            "--corpus",
            root,
            "--version",
            "v1",
            "--steps",
            STEPS,
            "--poll-seconds",
            "1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a Ctrl-C at the test's terminal is not the watch's
    )


def _rows_by_path(root, table, key):
    try:
        return {row[key]: row for row in table_rows(root, table, "v1")}
    except Exception:  # noqa: BLE001 - the table may not exist yet
        return {}


def _arrival_seconds(root, paths, since, table=schemas.IMAGES, key="source_path"):
    """Seconds from `since` until every path has a row in `table`."""
    deadline = since + ARRIVAL_LIMIT + 30
    while time.monotonic() < deadline:
        if set(paths) <= set(_rows_by_path(root, table, key)):
            return time.monotonic() - since
        time.sleep(0.5)
    raise AssertionError(f"{sorted(set(paths) - set(_rows_by_path(root, table, key)))} never came")


def _stop(process, how=signal.SIGINT):
    process.send_signal(how)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@pytest.fixture
def drops(tmp_path):
    first, second = tmp_path / "drop1", tmp_path / "drop2"
    image_factory.write_files(str(first), {"people/a.png": image_factory.png_bytes(64, 48)})
    (first / "people" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    image_factory.write_files(
        str(second),
        {"street/b.png": image_factory.png_bytes(80, 60), "c.png": image_factory.png_bytes(30, 30)},
    )
    return first, second


def test_watch_processes_ingests_as_they_land_and_restarts_without_recomputing(tmp_path, drops):
    root = str(tmp_path / "corpus")
    process = _start(root)
    try:
        time.sleep(8)  # models load while the version is still empty
        assert process.poll() is None, process.communicate()
        since = time.monotonic()
        assert ingest_drop(str(drops[0]), root, "v1").ok
        first = _arrival_seconds(root, ["people/a.png"], since)
        _arrival_seconds(root, ["people/broken.jpg"], since, schemas.ERRORS, "path")
        since = time.monotonic()
        assert ingest_drop(str(drops[1]), root, "v1").ok
        second = _arrival_seconds(root, ["street/b.png", "c.png"], since)
        assert first < ARRIVAL_LIMIT and second < ARRIVAL_LIMIT, (first, second)
    finally:
        code, out, err = _stop(process)
    assert code == 0, err
    assert "Watch of" in out and "4 seen, 4 committed" in out
    assert "broken.jpg: decode" in out
    images = table_rows(root, schemas.IMAGES, "v1")
    assert sorted(row["source_path"] for row in images) == ["c.png", "people/a.png", "street/b.png"]
    assert all(row["thumbnail"] and row["facematch"] for row in images)
    results = table_rows(root, schemas.RESULTS)
    keys = [(row["image_sha256"], row["step"]) for row in results]
    # decode, thumbnail, phash, facedetection, facecrop, faceprint: each once per image
    assert len(keys) == len(set(keys)) == 3 * 6
    # A later batch run of the version sees the same files.
    manifest = {row["source_path"] for row in table_rows(root, schemas.MANIFEST, "v1")}
    assert manifest == {"c.png", "people/a.png", "street/b.png", "people/broken.jpg"}

    # Restarted: nothing is started again; a file copied in by another tool is found;
    # SIGTERM drains as Ctrl-C does.
    restarted = _start(root)
    try:
        time.sleep(8)
        since = time.monotonic()
        copied = os.path.join(root, "original", "street", "v1", "d.png")
        shutil.copy(os.path.join(root, "original", "street", "v1", "b.png"), copied + ".tmp")
        os.replace(copied + ".tmp", copied)  # what a careful copier does
        _arrival_seconds(root, ["street/d.png"], since)
    finally:
        code, out, err = _stop(restarted, signal.SIGTERM)
    assert code == 0, err
    assert "1 seen, 1 committed" in out
    # Same bytes as b.png: every result came from the store.
    assert "thumbnail        0 processed" in out and "facedetection    0 processed" in out
    assert len(table_rows(root, schemas.RESULTS)) == len(results)
    # Grouped with b.png when the watch ended: the same bytes under two paths.
    groups = {row["source_path"]: row["group_id"] for row in table_rows(root, schemas.DUPLICATES)}
    assert groups["street/d.png"] == groups["street/b.png"]
    assert "near-duplicate groups, all versions" in out


def test_watch_on_azure_blob_storage(azurite, tmp_path, drops, monkeypatch):
    """The same on an azfs:// root on Azurite: listed, read and committed through Azure."""
    root = f"azfs://{ACCOUNT}/watched"
    monkeypatch.setenv(azure_access.CONNECTION_STRING_ENV, azurite.connection_string)
    FileSystems.set_options(PipelineOptions([]))
    env = dict(os.environ)
    process = _start(root, env=env)
    try:
        time.sleep(8)
        assert process.poll() is None, process.communicate()
        since = time.monotonic()
        ingest = [sys.executable, "-m", "beam_pipeline.cli", "ingest", str(drops[0])]
        subprocess.run([*ingest, "--corpus", root, "--version", "v1"], env=env, check=True)
        arrived = _arrival_seconds(root, ["people/a.png"], since)
        _arrival_seconds(root, ["people/broken.jpg"], since, schemas.ERRORS, "path")
    finally:
        code, out, err = _stop(process)
    assert code == 0, err
    assert arrived < ARRIVAL_LIMIT
    assert "2 seen, 2 committed" in out
    assert azurite.connection_string not in out + err and ACCOUNT_KEY not in out + err


def _blob_created(container, path, kind="Microsoft.Storage.BlobCreated", api="PutBlob"):
    """A blob-created event as Event Grid delivers it to a Storage Queue."""
    event = {
        "topic": f"/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/{ACCOUNT}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{path}",
        "eventType": kind,
        "id": path,
        "data": {
            "api": api,
            "url": f"https://{ACCOUNT}.blob.core.windows.net/{container}/{path}",
        },
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": "2026-11-30T00:00:00Z",
    }
    return base64.b64encode(json.dumps(event).encode()).decode()


def test_blob_created_messages_name_complete_files_of_the_root_container():
    root = f"azfs://{ACCOUNT}/box"
    assert blob_created_uris(_blob_created("box", "original/a/v1/x.jpg"), root) == [
        f"azfs://{ACCOUNT}/box/original/a/v1/x.jpg"
    ]
    # CloudEvents, not encoded, several in one message.
    cloud_events = json.dumps(
        [
            {
                "type": "Microsoft.Storage.BlobCreated",
                "subject": f"/blobServices/default/containers/box/blobs/{name}",
                "data": {"api": api},
            }
            for name, api in (("y.png", "PutBlockList"), ("z.png", "FlushWithClose"))
        ]
    )
    assert blob_created_uris(cloud_events, root) == [
        f"azfs://{ACCOUNT}/box/y.png",
        f"azfs://{ACCOUNT}/box/z.png",
    ]
    for other in (
        _blob_created("another", "original/a/v1/x.jpg"),
        _blob_created("box", "x.jpg", kind="Microsoft.Storage.BlobDeleted"),
        _blob_created("box", "x.jpg", api="CreateFile"),  # a Data Lake file, still empty
        "hello",
        base64.b64encode(b"\xff\xfe").decode(),
        "[1, 2]",
    ):
        assert blob_created_uris(other, root) == [], other


def test_watch_reads_blob_created_events_from_a_storage_queue(
    azurite, tmp_path, drops, monkeypatch
):
    """Event Grid's messages on Azurite's queue service: each image is processed once,
    a message is deleted only once its file's rows are committed, and a message for a
    blob that is not there becomes an error row."""
    from azure.storage.queue import QueueClient

    container = "queued"
    root = f"azfs://{ACCOUNT}/{container}"
    monkeypatch.setenv(azure_access.CONNECTION_STRING_ENV, azurite.connection_string)
    FileSystems.set_options(PipelineOptions([]))
    env = dict(os.environ)
    queue = QueueClient.from_connection_string(azurite.connection_string, "new-blobs")
    queue.create_queue()
    ingest = [sys.executable, "-m", "beam_pipeline.cli", "ingest", str(drops[0])]
    subprocess.run([*ingest, "--corpus", root, "--version", "v1"], env=env, check=True)
    process = _start(root, "--queue", "new-blobs", "--queue-visibility-seconds", "3", env=env)
    try:
        time.sleep(8)
        assert process.poll() is None, process.communicate()
        since = time.monotonic()
        for path in ("people/a.png", "people/a.png", "people/gone.png"):  # one twice
            queue.send_message(_blob_created(container, f"original/people/v1/{path.split('/')[1]}"))
        queue.send_message(_blob_created(container, "transform/thumbnail/1/x.jpg"))  # not ours
        _arrival_seconds(root, ["people/a.png"], since)
        _arrival_seconds(root, ["people/gone.png"], since, schemas.ERRORS, "path")
        deadline = time.monotonic() + 60
        while (
            queue.get_queue_properties().approximate_message_count and time.monotonic() < deadline
        ):
            time.sleep(1)
        assert queue.get_queue_properties().approximate_message_count == 0
    finally:
        code, out, err = _stop(process)
    assert code == 0, err
    # broken.jpg was ingested but no message named it: a queue watch does not list.
    assert "2 seen, 2 committed" in out
    assert [row["source_path"] for row in table_rows(root, schemas.IMAGES, "v1")] == [
        "people/a.png"
    ]
    (gone,) = table_rows(root, schemas.ERRORS, "v1")
    assert (gone["path"], gone["step"]) == ("people/gone.png", "read")
    results = table_rows(root, schemas.RESULTS)
    assert len(results) == len({(row["image_sha256"], row["step"]) for row in results}) == 6
