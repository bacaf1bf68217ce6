"""Azure pieces on Azurite: keys with forbidden characters, credentials, ingest retries."""

import base64
import contextlib
import hashlib
import os
import re
import socket
import threading
import time
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from beam_pipeline.cli import main
from tests import image_factory
from tests.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.conftest import make_test_pipeline
from transforms.corpus.ingest import BlobDestination, ingest_drop
from transforms.io import azure_access
from transforms.io.azure_access import AzureAccess, AzureAccessError
from transforms.io.blobs import BlobContainer
from transforms.io.table_keys import table_key
from transforms.retry import RetryPolicy
from transforms.tables import azure_tables
from transforms.tables.azure_sink import WriteAzureTable
from transforms.tables.azure_tables import AzureTables

FAST_RETRY = RetryPolicy(tries=12, first_delay=0.2, max_delay=2.0)


@pytest.fixture(autouse=True)
def beam_filesystems():
    # Beam's Azure filesystem reads the connection string from the environment.
    FileSystems.set_options(PipelineOptions([]))


@pytest.fixture
def connection_string(azurite, monkeypatch):
    monkeypatch.setenv(azure_access.CONNECTION_STRING_ENV, azurite.connection_string)
    return azurite.connection_string


def test_keys_with_every_forbidden_character_round_trip(connection_string):
    table = TableServiceClient.from_connection_string(connection_string).create_table_if_not_exists(
        "KeyRoundTrip"
    )
    values = [
        "a/b\\c#d?e" + "".join(map(chr, range(0x20))) + "\x7f\x9f",
        "a~2Fb",
        "a!b",
        "",
        "deep/" * 200,
        "deep/" * 200 + "x",
    ]
    entities = [
        azure_tables.build_entity(table_key("v1", value), table_key(value), {"value": value})
        for value in values
    ]
    for entity in entities:
        azure_tables.upsert(table, [entity])
    assert len(list(table.list_entities())) == len(values)
    for value, entity in zip(values, entities, strict=True):
        stored = table.get_entity(entity["PartitionKey"], entity["RowKey"])
        assert stored["value"] == value


def test_connection_string_comes_from_env_or_file_and_must_match_the_account(
    azurite, tmp_path, monkeypatch
):
    monkeypatch.delenv(azure_access.CONNECTION_STRING_ENV, raising=False)
    root = f"azfs://{ACCOUNT}/corpus"
    with pytest.raises(AzureAccessError, match="no Azure connection string") as missing:
        azure_access.resolve(root)
    assert ACCOUNT_KEY not in str(missing.value)

    secret_file = tmp_path / "secret"
    secret_file.write_text(azurite.connection_string + "\n")
    assert azure_access.resolve(root, connection_string_file=str(secret_file)) == AzureAccess(
        ACCOUNT
    )
    # Exported for Beam's Azure filesystem and the local runner's workers.
    assert os.environ[azure_access.CONNECTION_STRING_ENV] == azurite.connection_string

    monkeypatch.setenv("OTHER_ACCOUNT", azurite.connection_string.replace(ACCOUNT, "someone"))
    with pytest.raises(AzureAccessError, match="for account 'someone'") as wrong:
        azure_access.resolve(root, connection_string_env="OTHER_ACCOUNT")
    assert ACCOUNT_KEY not in str(wrong.value)


def test_azure_ad_sign_in_checks_its_url(monkeypatch):
    root = f"azfs://{ACCOUNT}/corpus"
    url = f"https://{ACCOUNT}.blob.core.windows.net/"
    monkeypatch.setenv(azure_access.CONNECTION_STRING_ENV, "AccountName=x;AccountKey=y")
    monkeypatch.setenv(azure_access.ACCOUNT_URL_ENV, "")  # restored after the test
    with pytest.raises(AzureAccessError, match="unset it"):
        azure_access.resolve(root, account_url=url)
    monkeypatch.delenv(azure_access.CONNECTION_STRING_ENV)
    access = azure_access.resolve(root, account_url=url)
    assert access.table_url == f"https://{ACCOUNT}.table.core.windows.net"
    assert access.connection_string_env is None
    # Code that knows only the root (the Delta tables, a worker) signs in the same way.
    assert azure_access.account_access(ACCOUNT) == access
    assert azure_access.account_access("other").connection_string_env is not None
    with pytest.raises(AzureAccessError, match="not the corpus account"):
        azure_access.resolve(root, account_url="https://other.blob.core.windows.net")
    with pytest.raises(AzureAccessError, match="no SAS") as sas:
        azure_access.resolve(root, account_url=url + "?sv=2024&sig=SECRET")
    assert "SECRET" not in str(sas.value)


def test_uploads_are_conditional_and_the_container_private(connection_string):
    access = AzureAccess(ACCOUNT)
    container = BlobContainer(access, f"azfs://{ACCOUNT}/private-corpus")
    container.create_container()
    container.create_container()  # again: no error
    uri = f"azfs://{ACCOUNT}/private-corpus/original/v1/a#b?.jpg"
    data = image_factory.jpeg_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert container.stored_sha256(uri) is None
    assert container.upload_new(uri, data, sha)
    assert not container.upload_new(uri, b"other bytes", "0" * 64)
    assert container.stored_sha256(uri) == sha
    service = BlobServiceClient.from_connection_string(connection_string)
    client = service.get_container_client("private-corpus")
    assert client.get_container_properties().public_access is None
    assert client.download_blob("original/v1/a#b?.jpg").readall() == data


def _requests(debug_logs: list[str], container: str) -> list[tuple[int, str, str, str]]:
    """(emulator, method, blob name, status) of each PUT and HEAD in Azurite's logs."""
    request = re.compile(
        rf"(\S+) info: .*RequestMethod=(PUT|HEAD) RequestURL=\S+/{container}/(\S+) "
    )
    found, status = {}, {}
    for emulator, path in enumerate(debug_logs):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if match := request.search(line):
                    found[match.group(1)] = (emulator, match.group(2), match.group(3))
                elif "End response" in line and (code := re.search(r"StatusCode=(\d+)", line)):
                    status[line.split()[1]] = code.group(1)
    return [(*found[id_], status.get(id_, "")) for id_ in found]


def _successful_puts(debug_logs: list[str], container: str) -> Counter:
    """Blob name -> Put Blob requests that Azurite answered with 201 and kept.

    Azurite stopped mid-request drops the connection, saves its store, then finishes
    the request and logs 201 for a blob the saved store never holds. Such a write is
    not counted when a later emulator answers 404 for that name: blobs are never
    deleted here, so the 404 proves it was lost and uploading it again was right.
    """
    requests = _requests(debug_logs, container)
    lost = {
        (earlier, name)
        for later, method, name, status in requests
        if method == "HEAD" and status == "404"
        for earlier in range(later)
    }
    return Counter(
        name
        for emulator, method, name, status in requests
        if method == "PUT" and status == "201" and (emulator, name) not in lost
    )


def test_ingest_survives_the_emulator_restarting_mid_run(tmp_path, monkeypatch):
    """Storage goes away while files upload; every file still ends up stored exactly once."""
    logs = [str(tmp_path / "azurite-1.log"), str(tmp_path / "azurite-2.log")]
    emulator = Azurite(location=str(tmp_path / "store"), debug_log=logs[0]).start()
    try:
        monkeypatch.setenv(azure_access.CONNECTION_STRING_ENV, emulator.connection_string)
        drop = tmp_path / "drop"
        files = {
            f"set{i % 4}/photo{i:02d}.png": image_factory.png_bytes(64 + i, 48) for i in range(40)
        }
        image_factory.write_files(str(drop), files)
        root = f"azfs://{ACCOUNT}/flaky"
        container = BlobContainer(AzureAccess(ACCOUNT), root)
        container.create_container()
        restarted = threading.Event()

        def restart_later():
            time.sleep(1.5)
            emulator.debug_log = logs[1]
            emulator.start()
            restarted.set()

        def progress(total):
            done = []

            def tick():
                done.append(1)
                if len(done) == 8:
                    emulator.stop()
                    threading.Thread(target=restart_later).start()

            return tick

        report = ingest_drop(
            str(drop),
            root,
            "v1",
            max_parallel=4,
            progress=progress,
            destination=BlobDestination(container),
            retry_policy=FAST_RETRY,
        )
        assert restarted.wait(30)
        assert report.failed == []
        assert report.copied + report.skipped == len(files)
        assert report.retries > 0
        for source_path, data in files.items():
            set_path, name = source_path.split("/")
            uri = f"{root}/original/{set_path}/v1/{name}"
            assert container.stored_sha256(uri) == hashlib.sha256(data).hexdigest()
        emulator.stop()  # flushes the request log
        puts = _successful_puts(logs, "flaky")
        originals = {n: count for n, count in puts.items() if n.startswith("original/")}
        assert len(originals) == len(files)
        assert set(originals.values()) == {1}, originals
    finally:
        emulator.stop()


def _write(tables, entities, owned):
    with make_test_pipeline() as pipeline:
        _ = (
            pipeline
            | beam.Create(entities)
            | WriteAzureTable(tables, azure_tables.FACES, owned, replace=True)
        )


def test_a_run_owns_its_partitions_whole(connection_string):
    """Rows an earlier run wrote but this one did not are deleted, even in an emptied set."""
    tables = AzureTables(AzureAccess(ACCOUNT), prefix="Owned")
    tables.create_all()
    client = tables.table_client(azure_tables.FACES)
    kept, gone = table_key("v1", "kept set"), table_key("v1", "emptied set")
    other_version = table_key("v2", "kept set")
    first = [
        {"PartitionKey": pk, "RowKey": f"face{i}", "n": i} for pk in (kept, gone) for i in (1, 2)
    ]
    azure_tables.upsert(client, first + [{"PartitionKey": other_version, "RowKey": "face1"}])

    second = [{"PartitionKey": kept, "RowKey": "face1", "n": 10}]
    _write(tables, second, owned=(kept, gone))
    _write(tables, second, owned=(kept, gone))  # again: the same single row

    rows = {(e["PartitionKey"], e["RowKey"]): e for e in client.list_entities()}
    assert set(rows) == {(kept, "face1"), (other_version, "face1")}
    assert rows[(kept, "face1")]["n"] == 10


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", ["ingest", "run"])
def test_an_account_out_of_reach_or_refusing_the_key_stops_before_any_work(
    azurite, tmp_path, monkeypatch, capsys, command
):
    drop = tmp_path / "drop"
    image_factory.write_files(str(drop), {"a.png": image_factory.png_bytes()})
    root = f"azfs://{ACCOUNT}/unreached"
    arguments = [str(drop)] if command == "ingest" else []
    arguments += ["--corpus", root, "--version", "v1"]
    nowhere = f"http://127.0.0.1:{_unused_port()}/{ACCOUNT}"
    wrong_key = base64.b64encode(b"not the key" * 6).decode()
    cases = {
        "cannot reach the blob service of account": azurite.connection_string.replace(
            azurite.endpoint("Blob"), nowhere
        ),
        "refused the credential": azurite.connection_string.replace(ACCOUNT_KEY, wrong_key),
    }
    sas = "sv=2024-11-04&ss=b&srt=sco&sp=rl&se=2030-01-01&sig=bm90IGEgc2lnbmF0dXJl"
    cases["refused the credential "] = (
        f"AccountName={ACCOUNT};BlobEndpoint={azurite.endpoint('Blob')};SharedAccessSignature={sas}"
    )
    for message, connection_string in cases.items():
        monkeypatch.setenv(azure_access.CONNECTION_STRING_ENV, connection_string)
        with pytest.raises(SystemExit) if command == "ingest" else contextlib.nullcontext():
            assert main([command, *arguments]) == 2
        err = capsys.readouterr().err
        assert message.strip() in err and "Traceback" not in err, err
        assert wrong_key not in err and "sig=" not in err
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    assert not blobs.get_container_client("unreached").exists()
