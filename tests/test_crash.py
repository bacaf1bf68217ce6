"""`kill -9` of ingest or run at some moment, then the same command again: the tables
equal those of a run that was never interrupted, and nothing temporary is left."""

import functools
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.corpus_files import table_rows, tables_without_root
from transforms.tables import schemas

STEPS = "thumbnail,generalclassification,ocr,facedetection,facecrop,faceprint,facematch"
TABLES = (schemas.MANIFEST, schemas.IMAGE_SETS, schemas.IMAGES, schemas.FACES, schemas.ERRORS)


@pytest.fixture(scope="module")
def sample(sample_with_gallery):
    return sample_with_gallery


def _commands(sample, root):
    drop, gallery = sample
    return {
        "ingest": ["ingest", drop, "--corpus", root, "--version", "v1"],
        "run": ["run", "--corpus", root, "--version", "v1", "--steps", STEPS, "--gallery", gallery],
    }


def _imaginem(argv, kill_when=None):
    """Runs a command to the end, or kills it (and its workers) once `kill_when()` holds.

    Returns:
        Whether it was killed before it ended.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its worker processes die with it
    )
    if kill_when is None:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr.decode()[-3000:]
        return False
    deadline = time.monotonic() + 600
    while process.poll() is None and not kill_when() and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = process.poll() is None
    if killed:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    return killed


def _count(folder, suffix=""):
    return sum(
        name.endswith(suffix) and not name.startswith(".")
        for _, _, names in os.walk(folder)
        for name in names
    )


def _committed(root, table):
    return os.path.exists(
        os.path.join(root, "metadata", table, "_delta_log", "00000000000000000000.json")
    )


# Moments to kill at, as conditions on what is on disk: after some copies; at start-up;
# after some images were computed but before any result was stored; once results
# were stored; between the `images` and `faces` commits (missed if it is too short).
KILL_POINTS = {
    "ingest copying": ("ingest", lambda root: _count(os.path.join(root, "original")) >= 5, True),
    "run starting": ("run", lambda root: False, True),
    "run computing": (
        "run",
        lambda root: _count(os.path.join(root, "transform", "thumbnail"), ".jpg") >= 3,
        True,
    ),
    "run stored results": ("run", lambda root: _committed(root, schemas.RESULTS), True),
    "run between tables": (
        "run",
        lambda root: _committed(root, schemas.IMAGES) and not _committed(root, schemas.FACES),
        False,
    ),
}


def _tables(root):
    return tables_without_root(root, TABLES)


def _temporary_files(root):
    return [
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith(".partial") or "#" in name or name.endswith(".tmp")
    ]


@pytest.fixture(scope="module")
def clean_tables(sample, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("clean") / "corpus")
    commands = _commands(sample, root)
    _imaginem(commands["ingest"])
    _imaginem(commands["run"])
    return _tables(root)


@pytest.mark.parametrize("moment", sorted(KILL_POINTS))
def test_killed_then_run_again_equals_a_clean_run(sample, clean_tables, tmp_path, moment):
    command, condition, must_hit = KILL_POINTS[moment]
    root = str(tmp_path / "corpus")
    commands = _commands(sample, root)
    if command == "run":
        _imaginem(commands["ingest"])
    started = time.monotonic()
    if moment == "run starting":
        condition = lambda root: time.monotonic() - started > 1.5  # noqa: E731
    killed = _imaginem(commands[command], kill_when=lambda: condition(root))
    assert killed or not must_hit, f"{command} ended before the moment {moment!r}"
    for name in ("ingest", "run"):
        _imaginem(commands[name])
    assert _tables(root) == clean_tables
    assert _temporary_files(root) == []


def test_killed_on_azure_after_results_were_stored_then_run_again(sample, azurite, monkeypatch):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from tests.azurite import ACCOUNT
    from transforms.io import azure_access
    from transforms.tables import delta

    monkeypatch.setenv(azure_access.CONNECTION_STRING_ENV, azurite.connection_string)
    FileSystems.set_options(PipelineOptions([]))
    tables = {}
    for name in ("clean", "killed"):
        root = f"azfs://{ACCOUNT}/crash-{name}"
        commands = _commands(sample, root)
        _imaginem(commands["ingest"])
        if name == "killed":
            stored = functools.partial(delta.exists, delta.location(root, schemas.RESULTS))
            assert _imaginem(commands["run"], kill_when=stored)
        _imaginem(commands["run"])
        tables[name] = _tables(root)
    assert tables["killed"] == tables["clean"]


def _age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_table_files_no_commit_took_are_removed_once_a_day_old(small_corpus):
    """What a killed writer, or a commit that lost a race, leaves in a table's folder."""
    from beam_pipeline.run import plan_run, prepare_outputs
    from transforms.tables import delta

    where = delta.location(small_corpus, schemas.MANIFEST)
    rows = table_rows(small_corpus, schemas.MANIFEST)
    before, _ = delta.snapshot(where)
    # Its rewritten file is removed from the table but kept for reads of `before`.
    delta.delete(where, "source_path = 'root-level.png'")
    committed = next(
        os.path.join(folder, name)
        for folder, _, names in os.walk(where.folder)
        for name in names
        if name.endswith(".parquet")
    )
    orphans = {}
    ages = {
        "old": delta.ORPHAN_AGE_SECONDS + 60,
        "fresh": 60,  # a writer may still be about to commit it
        "ancient": delta.REMOVED_FILE_RETENTION_SECONDS + 60,  # maybe an old version's: VACUUM's
    }
    for name, age in ages.items():
        orphans[name] = os.path.join(os.path.dirname(committed), f"part-orphan-{name}.parquet")
        with open(committed, "rb") as source, open(orphans[name], "wb") as copy:
            copy.write(source.read())
        _age(orphans[name], age)

    prepare_outputs(plan_run(["--corpus", small_corpus, "--version", "v1"]))
    assert not os.path.exists(orphans["old"])
    assert os.path.exists(orphans["fresh"]) and os.path.exists(orphans["ancient"])
    assert len(table_rows(small_corpus, schemas.MANIFEST)) == len(rows) - 1
    assert delta.read(where, version=before).num_rows == len(rows)
