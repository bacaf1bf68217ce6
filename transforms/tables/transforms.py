"""The `transforms` table: which parameters made each transform version.

A transform version is immutable: its outputs are skipped once they exist, so
reusing a version with other parameters would silently mix two kinds of output.
Registering refuses that before any image is written. The registration is one
conditional Delta commit (insert unless the version is there), so of two runs that
race to register one version with different parameters, one is refused.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pyarrow.dataset as pads

from transforms.tables import delta, schemas


@dataclasses.dataclass(frozen=True)
class TransformSpec:
    """A versioned image transform a step writes (a row of the `transforms` table)."""

    transform_name: str
    transform_version: str
    step_version: str
    parameters: Mapping[str, Any]


class TransformVersionConflict(ValueError):
    """A transform version already exists with different parameters."""


def transform_row(spec: TransformSpec) -> dict[str, str]:
    return {
        "transform_name": spec.transform_name,
        "transform_version": spec.transform_version,
        "step_version": spec.step_version,
        "parameters": json.dumps(dict(spec.parameters), sort_keys=True),
    }


def _recorded(where: delta.DeltaLocation, spec: TransformSpec) -> dict | None:
    rows = delta.read_rows(
        where,
        (pads.field("transform_name") == spec.transform_name)
        & (pads.field("transform_version") == spec.transform_version),
    )
    return rows[0] if rows else None


def _check_same(recorded: dict, row: dict, spec: TransformSpec) -> None:
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


def register_transform(corpus_root: str, spec: TransformSpec) -> bool:
    """Records a transform version; returns True if it was new.

    Raises:
        TransformVersionConflict: the version exists with other parameters.
    """
    where = delta.location(corpus_root, schemas.TRANSFORMS)
    row = transform_row(spec)
    if (recorded := _recorded(where, spec)) is not None:
        _check_same(recorded, row, spec)
        return False
    metrics = delta.merge(
        where,
        delta.as_table([row], schemas.TRANSFORMS_SCHEMA),
        delta.Merge(schemas.TABLES[schemas.TRANSFORMS].keys, update_columns=()),
        metadata=delta.commit_metadata("register-transform", transform=spec.transform_name),
    )
    if metrics.get("num_target_rows_inserted"):
        return True
    # Another run registered it between our read and our commit.
    _check_same(_recorded(where, spec) or row, row, spec)
    return False
