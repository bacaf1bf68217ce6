"""Quieting what native libraries print straight to file descriptor 2."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def stderr_without(*noise: str):
    """What the block prints to stderr, passed on without the lines holding `noise`.

    Native code (LiteRT, for one) writes to descriptor 2 itself, past Python's logging;
    its output is held in an unnamed file while the block runs, then sent on filtered.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().splitlines(keepends=True)
                if not any(text.encode() in line for text in noise)
            ]
            if kept:
                os.write(2, b"".join(kept))
