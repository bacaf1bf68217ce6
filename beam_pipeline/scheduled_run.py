"""`imaginem run` as a script, for schedulers that start a Beam pipeline from a file
(Airflow's `BeamRunPythonPipelineOperator` passes every option as `--name=value`)."""

from __future__ import annotations

import sys

from beam_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
