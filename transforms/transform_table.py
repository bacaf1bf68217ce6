"""The `transforms` table: which parameters made each transform version.

A transform version is immutable: its outputs are skipped once they exist, so
reusing a version with other parameters would silently mix two kinds of output.
Registering refuses that before any image is written.
"""

from __future__ import annotations

import json

from transforms import paths, schemas, tables
from transforms.steps.base import TransformSpec


class TransformVersionConflict(ValueError):
    """A transform version already exists with different parameters."""


def transform_row(spec: TransformSpec) -> dict[str, str]:
    return {
        "transform_name": spec.transform_name,
        "transform_version": spec.transform_version,
        "step_version": spec.step_version,
        "parameters": json.dumps(dict(spec.parameters), sort_keys=True),
    }


def register_transform(corpus_root: str, spec: TransformSpec) -> bool:
    """Records a transform version; returns True if it was new.

    Raises:
        TransformVersionConflict: the version exists with other parameters.
    """
    partition = paths.partition_dir(
        corpus_root,
        schemas.TRANSFORMS,
        transform_name=spec.transform_name,
        transform_version=spec.transform_version,
    )
    row = transform_row(spec)
    existing = tables.read_partition(partition)
    if existing:
        recorded = existing[0]
        if (recorded["parameters"], recorded["step_version"]) != (
            row["parameters"],
            row["step_version"],
        ):
            raise TransformVersionConflict(
                f"{spec.transform_name} version {spec.transform_version!r} was made with "
                f"{recorded['parameters']} (step version {recorded['step_version']}); "
                f"these settings give {row['parameters']} (step version {row['step_version']}). "
                f"Choose a new --{spec.transform_name}-version to write them next to the old ones."
            )
        return False
    tables.replace_partition(partition, [row], schemas.TRANSFORMS_SCHEMA)
    return True
