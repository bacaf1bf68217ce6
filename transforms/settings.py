"""Step settings: frozen dataclasses that state each default once.

A step's settings class lists its options as fields made with `setting()`, which
also carries the help text (and the flag, where it is not `--<step>-<field>`);
the class validates in `__post_init__`, so a bad value fails before a pipeline is
built. `beam_pipeline` turns the fields into command-line flags and the parsed
flags back into an instance: the library never sees a command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


def setting(
    default: Any, help: str, flag: str | None = None, choices: Sequence[str] | None = None
) -> Any:
    """A settings field: its default, what it means, and how it is spelled as a flag."""
    return dataclasses.field(
        default=default, metadata={"help": help, "flag": flag, "choices": choices}
    )
