"""Pipeline steps: one module per step family, registered by name in `registry`."""

from transforms.steps.base import (
    ERRORS,
    RECORDS,
    ApplyToEachImage,
    Outcome,
    Step,
    StepContext,
    TransformSpec,
)

__all__ = [
    "ERRORS",
    "RECORDS",
    "ApplyToEachImage",
    "Outcome",
    "Step",
    "StepContext",
    "TransformSpec",
]
