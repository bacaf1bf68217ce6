"""Runs the Azurite storage emulator on loopback for the tests that need Azure.

`run_tests.sh` installs it with `npm ci --prefix tools/azurite`. Each instance picks
its own free ports (port 0), keeps its data in memory unless given a folder, and is
stopped with its whole process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AZURITE_BIN = os.path.join(REPOSITORY, "tools", "azurite", "node_modules", ".bin", "azurite")
ACCOUNT = "devstoreaccount1"
# The emulator's published development key: not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at \S+:(\d+)"
)
_START_TIMEOUT_SECONDS = 30


class Azurite:
    """One emulator process.

    Args:
        location: folder to persist data in (survives `restart`); None keeps it in memory.
        debug_log: file for Azurite's request log (one line per request stage).
    """

    def __init__(self, location: str | None = None, debug_log: str | None = None) -> None:
        if not os.path.exists(AZURITE_BIN):
            raise RuntimeError(
                f"Azurite is not installed at {AZURITE_BIN}: run ./run_tests.sh, or "
                "`npm ci --prefix tools/azurite`"
            )
        self.location = location
        self.debug_log = debug_log
        self.ports: dict[str, int] = {"Blob": 0, "Queue": 0, "Table": 0}
        self._process: subprocess.Popen | None = None

    def start(self) -> Azurite:
        command = [
            AZURITE_BIN,
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            *(["--location", self.location] if self.location else ["--inMemoryPersistence"]),
            *(["--debug", self.debug_log] if self.debug_log else []),
        ]
        for service, port in self.ports.items():
            name = service.lower()
            command += [f"--{name}Host", "127.0.0.1", f"--{name}Port", str(port)]
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        found: dict[str, int] = {}
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        output = []
        while len(found) < len(self.ports) and time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                break
            output.append(line)
            if match := _LISTENING.search(line):
                found[match.group(1)] = int(match.group(2))
        if len(found) < len(self.ports):
            self.stop()
            raise RuntimeError("Azurite did not start:\n" + "".join(output))
        self.ports = found
        return self

    def stop(self) -> None:
        """Stops the emulator gracefully (it saves a persisted store on the way out)."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process.stdout.close()
        self._process = None

    def restart(self) -> None:
        """Starts again on the same ports (clients keep their connection string)."""
        self.stop()
        self.start()

    def endpoint(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint('Blob')};QueueEndpoint={self.endpoint('Queue')};"
            f"TableEndpoint={self.endpoint('Table')};"
        )
