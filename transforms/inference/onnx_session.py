"""onnxruntime sessions tuned for a worker process that shares its cores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# onnxruntime's own switch for its usage telemetry, read once when the library loads:
# without it, importing onnxruntime writes a device id and a usage database under
# ~/.cache/Microsoft. A tool for private photo collections records nothing about them.
TELEMETRY_OFF = ("ORT_DISABLE_TELEMETRY", "1")


def import_onnxruntime() -> Any:
    """onnxruntime, loaded with its telemetry off; call before anything imports it."""
    name, value = TELEMETRY_OFF
    os.environ[name] = value
    import onnxruntime

    return onnxruntime


def session_options(threads: int) -> Any:
    options = import_onnxruntime().SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads steal the core from the other worker process.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def new_session(model_path: Path | str, threads: int = 1) -> Any:
    return import_onnxruntime().InferenceSession(
        str(model_path), session_options(threads), providers=["CPUExecutionProvider"]
    )
