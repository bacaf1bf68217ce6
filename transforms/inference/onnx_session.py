"""onnxruntime sessions tuned for a worker process that shares its cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def session_options(threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads steal the core from the other worker process.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def new_session(model_path: Path | str, threads: int = 1) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(
        str(model_path), session_options(threads), providers=["CPUExecutionProvider"]
    )
