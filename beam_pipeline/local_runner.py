"""The default local runner: Beam's FnApiRunner on every core, never Prism.

Beam 2.77's `DirectRunner` first tries to download the Prism binary; offline that
fails (or on a hanging network, stalls) before falling back. Building the
FnApiRunner directly skips that, and handing it provision info that carries the
pipeline options lets worker processes see them (Beam's Azure filesystem needs
them there).
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle


def uses_default_runner(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner is None


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


def local_runner(options: PipelineOptions) -> fn_runner.FnApiRunner:
    # Only explicit options: re-encoding Beam's defaults yields flags (such as negated
    # booleans) that workers cannot parse back.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options(drop_default=True))
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=provision_info)
