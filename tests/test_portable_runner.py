"""Workers that know nothing of the driver: Beam's portable runner with a separately
started pool of external workers (the SDK side of what Flink runs) gives the same
tables as the default runner, on a local root and on an `azfs://` root."""

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.azurite import ACCOUNT
from tests.corpus_files import imaginem, tables_without_root
from transforms.io import azure_access
from transforms.tables import schemas

TABLES = (schemas.IMAGES, schemas.FACES, schemas.ERRORS)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def environment(azurite):
    """The workers' environment: the connection string, and Python on the PATH."""
    return {
        **os.environ,
        azure_access.CONNECTION_STRING_ENV: azurite.connection_string,
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
    }


@pytest.fixture(scope="module")
def portable_flags(environment, tmp_path_factory):
    """A job service and an external worker pool, started apart from any run."""
    pool_port, job_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("portable")
    services = []
    for module, port in (
        ("apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"),
        ("apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"),
    ):
        log = open(logs / f"{module.rsplit('.', 1)[-1]}.log", "w")  # noqa: SIM115
        services.append(
            subprocess.Popen(
                [sys.executable, "-m", module, port],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        _wait_for(pool_port, services[0])
        _wait_for(job_port, services[1])
        yield [
            "--runner=PortableRunner",
            f"--job_endpoint=localhost:{job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}",
        ]
    finally:
        for service in services:
            service.kill()
            service.wait()


def _imaginem(environment, *argv):
    done = imaginem(*argv, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("where", ["local", "azfs"])
def test_external_workers_give_the_tables_of_the_default_runner(
    where, sample_with_gallery, portable_flags, environment, tmp_path, monkeypatch
):
    drop, gallery = sample_with_gallery
    # This process reads the tables back.
    monkeypatch.setenv(
        azure_access.CONNECTION_STRING_ENV, environment[azure_access.CONNECTION_STRING_ENV]
    )
    tables = {}
    for runner, flags in (("default", []), ("portable", portable_flags)):
        if where == "local":
            root = str(tmp_path / runner)
        else:
            root = f"azfs://{ACCOUNT}/portable-{runner}"
        _imaginem(environment, "ingest", drop, "--corpus", root, "--version", "v1")
        summary = _imaginem(
            environment, "run", "--corpus", root, "--version", "v1", "--gallery", gallery, *flags
        )
        assert "DONE" in summary, summary
        tables[runner] = tables_without_root(root, TABLES)
    assert tables["portable"] == tables["default"]
    assert len(tables["default"][schemas.IMAGES]) >= 16
