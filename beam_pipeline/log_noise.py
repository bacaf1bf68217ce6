"""Messages Beam prints that say nothing to a user of this tool, and a console handler
without them (for the driver and for the local runner's worker processes)."""

from __future__ import annotations

import logging

# Optional Google Cloud clients this tool never uses, and a saved main session it
# never needs; Beam logs about each at import or at worker start.
NOISE = (
    "apitools not found",
    "Failed to import GCSFileSystem",
    "No semi_persistent_directory found",
)
FORMAT = "%(levelname)s %(name)s: %(message)s"


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in NOISE)


def console_handler(level: int = logging.WARNING) -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(DropNoise())
    return handler
