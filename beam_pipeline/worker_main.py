"""Entry point of the local runner's worker processes: Beam's SDK harness, quieter.

Ctrl-C on a terminal reaches every process of the foreground group, workers too. The
driver handles it and closes the workers' control channels; Beam's harness then waits
for its bundles in flight, and one still waiting for input would keep the driver
waiting for ever. So a worker gives that a few seconds, then leaves quietly with
status 0, which Beam does not report as a failed worker. The worker command ignores
SIGINT from the start (see `local_runner.WORKER_COMMAND`) until the handler below is
in place, so no KeyboardInterrupt is ever raised in a worker.

Beam's worker configures no logging of its own: the first warning logged while Beam
is imported makes the logging module add a bare stderr handler that prints every
record at the harness's level (INFO until the pipeline options are read). A handler
set up first prints warnings and errors only, without the known noise; every record
still reaches the driver through Beam's logging channel.
"""

import logging
import os
import signal
import sys
import threading

from beam_pipeline.log_noise import console_handler

STOP_SECONDS = 5.0
_stopping = threading.Event()


def _leave() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _on_interrupt(signum, frame) -> None:
    if _stopping.is_set():
        return
    _stopping.set()
    # Beam's threads would report each channel the driver closes.
    logging.disable(logging.CRITICAL)
    threading.excepthook = lambda args: None
    timer = threading.Timer(STOP_SECONDS, _leave)
    timer.daemon = True
    timer.start()


def main() -> None:
    signal.signal(signal.SIGINT, _on_interrupt)
    logging.getLogger().addHandler(console_handler())
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)
    # After an interrupted run a native library can abort the interpreter's exit
    # ("terminate called without an active exception"); nothing is left to do.
    _leave()


if __name__ == "__main__":
    main()
