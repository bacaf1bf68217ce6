"""The `imaginem` entry point: logging first, then the command."""

from __future__ import annotations

import logging
import sys

from beam_pipeline.log_noise import console_handler

USAGE = """usage: imaginem COMMAND [options]
  ingest DROP_DIR --corpus ROOT --version VERSION   copy a drop into the corpus
  run --corpus ROOT --version VERSION [--steps ...]  run the pipeline
  watch --corpus ROOT --version VERSION [--steps ...]  process images as they land
  report --corpus ROOT --version VERSION --out DIR  write an HTML report to review
  review confirm|reject|name|list --corpus ROOT ...  record decisions about faces
  diff --corpus ROOT --from V1 --to V2              what changed, what V2 still needs
  migrate --corpus ROOT                              convert an older release's tables
  models export                                      convert models once (needs torch)
  quota-server --rate RATE [--host HOST]             one API rate for several runs
  sample-corpus DIR                                  build a sample drop
  steps                                              list known steps
Add --help after a command for its options."""
COMMAND_NAMES = (
    "ingest",
    "run",
    "watch",
    "report",
    "review",
    "diff",
    "migrate",
    "models",
    "quota-server",
    "sample-corpus",
    "steps",
)


def _configure_logging() -> None:
    root = logging.getLogger()
    root.handlers = [console_handler()]
    root.setLevel(logging.WARNING)
    logging.getLogger("imaginem").setLevel(logging.INFO)
    # It repeats every worker-process warning a second time.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv or argv[0] not in COMMAND_NAMES:
        if argv:
            print(f"imaginem: unknown command {argv[0]!r}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    _configure_logging()
    # Imported only now, so that the filter above sees what importing Beam logs.
    from beam_pipeline.commands import COMMANDS

    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
