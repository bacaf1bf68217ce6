"""The default local runner: Beam's FnApiRunner on every core, never Prism.

Beam 2.77's `DirectRunner` first tries to download the Prism binary; offline that
fails (or on a hanging network, stalls for ever) before falling back, so
`--runner DirectRunner` runs here too. Building the
FnApiRunner directly skips that, and handing it provision info that carries the
pipeline options lets worker processes see them (Beam's Azure filesystem needs
them there).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shlex
import signal
import sys
import threading

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle

# Beam's DirectRunner runs a batch pipeline on the FnApiRunner too, after trying Prism.
_LOCAL_RUNNER_NAMES = ("directrunner", "direct")


def uses_default_runner(options: PipelineOptions) -> bool:
    """No runner chosen, or DirectRunner: both run here, on the FnApiRunner."""
    runner = options.view_as(StandardOptions).runner
    return runner is None or (isinstance(runner, str) and runner.lower() in _LOCAL_RUNNER_NAMES)


def with_local_defaults(options: PipelineOptions, flags: list[str]) -> PipelineOptions:
    """Multi-process on all cores unless the flags chose a mode or worker count."""
    direct = options.view_as(DirectOptions)
    if not any(flag.startswith("--direct_running_mode") for flag in flags):
        direct.direct_running_mode = "multi_processing"
    if not any(flag.startswith("--direct_num_workers") for flag in flags):
        direct.direct_num_workers = os.cpu_count() or 1
    harness = options.view_as(WorkerOptions)
    if not any(flag.startswith("--default_sdk_harness_log_level") for flag in flags):
        # Worker processes otherwise log every channel they open at INFO.
        harness.default_sdk_harness_log_level = "WARNING"
    return options


# The command FnApiRunner gives its multi_processing workers (Beam 2.77), and ours:
# SIGINT ignored by the shell before Python starts (an ignored signal stays ignored
# across exec), `exec` so that no shell stays between Beam and the worker, and our
# entry point (see worker_main).
BEAM_WORKER_COMMAND = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
WORKER_MODULE = "beam_pipeline.worker_main"
WORKER_COMMAND = f"trap '' INT; exec {shlex.quote(sys.executable)} -m {WORKER_MODULE}"


class _LocalRunner(fn_runner.FnApiRunner):
    """FnApiRunner whose worker processes run our entry point."""

    def run_via_runner_api(self, pipeline_proto, options):
        for environment in pipeline_proto.components.environments.values():
            if (
                environment.urn == python_urns.SUBPROCESS_SDK
                and environment.payload == BEAM_WORKER_COMMAND.encode()
            ):
                environment.payload = WORKER_COMMAND.encode()
        return super().run_via_runner_api(pipeline_proto, options)


def local_runner(options: PipelineOptions) -> fn_runner.FnApiRunner:
    # Only explicit options: re-encoding Beam's defaults yields flags (such as negated
    # booleans) that workers cannot parse back.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options(drop_default=True))
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return _LocalRunner(provision_info=provision_info)


@contextlib.contextmanager
def interrupted_quietly():
    """Ctrl-C stops the run without Beam's noise.

    The KeyboardInterrupt makes FnApiRunner close the workers' channels and wait for
    them; each worker leaves within seconds of its own SIGINT (see worker_main), which
    a terminal sends to them all and which is passed on here for an interrupt sent to
    this process alone. Meanwhile Beam's threads and loggers would report every
    channel that breaks.
    """
    hook = threading.excepthook

    def on_interrupt(signum, frame):
        logging.disable(logging.CRITICAL)
        threading.excepthook = lambda args: None
        for pid in _worker_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        threading.excepthook = hook
        logging.disable(logging.NOTSET)


def _worker_processes() -> list[int]:
    """This process's children that run our worker entry point (none off Linux)."""
    found = []
    for children in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with contextlib.suppress(OSError), open(children) as listing:
            for pid in listing.read().split():
                with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as command:
                    if WORKER_MODULE.encode() in command.read():
                        found.append(int(pid))
    return found
