"""The steps: the pure work of each task, its composite transform and its registration.

What a step of another package needs is exported here.
"""

from transforms.per_image import ERRORS, RECORDS, ApplyToEachImage, Outcome
from transforms.settings import setting
from transforms.tables.transforms import TransformSpec
from transforms.tasks.base import Step, StepContext

__all__ = [
    "ERRORS",
    "RECORDS",
    "ApplyToEachImage",
    "Outcome",
    "Step",
    "StepContext",
    "TransformSpec",
    "setting",
]
