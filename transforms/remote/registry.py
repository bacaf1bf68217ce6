"""The backend registry: which API runs which step on each backend.

A backend (`azure`, `google`) is a set of API features, each from its API's module.
Adding an API is one module with its `Api`, its readers and its `STEPS`, and its
entries here (in `BACKENDS` and `APIS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transforms.records import LOCAL_BACKEND
from transforms.remote import azure_face, azure_vision, google_vision
from transforms.remote.api import Api, ApiFeature
from transforms.settings import setting

AZURE = "azure"
GOOGLE = "google"

BACKENDS: Mapping[str, Mapping[str, ApiFeature]] = {
    AZURE: {**azure_vision.STEPS, **azure_face.STEPS},
    GOOGLE: google_vision.STEPS,
}
APIS: Mapping[str, type[Api]] = {
    api.name: api
    for api in (azure_vision.AzureVision, azure_face.AzureFace, google_vision.GoogleVision)
}


def backends_for(step: str) -> tuple[str, ...]:
    """The backends that can run `step`, the local model first."""
    return (LOCAL_BACKEND, *(name for name, steps in BACKENDS.items() if step in steps))


def feature_for(step: str, backend: str) -> ApiFeature:
    """How `backend` runs `step`.

    Raises:
        ValueError: the backend is unknown or cannot run the step.
    """
    feature = BACKENDS.get(backend, {}).get(step)
    if feature is None:
        raise ValueError(
            f"{step} cannot run on backend {backend!r}; choose one of "
            f"{', '.join(backends_for(step))}"
        )
    return feature


def api_of(step: str, backend: str, grid_columns: int = 1) -> Api | None:
    """The API `backend` names for `step`, or None for the local model.

    Raises:
        ValueError: the backend is unknown or cannot run the step.
    """
    if backend == LOCAL_BACKEND:
        return None
    return feature_for(step, backend).make(grid_columns)


def backend_setting(step: str, api_features: str) -> Any:
    """The `--<step>-backend` field of a model step's settings."""
    return setting(
        LOCAL_BACKEND,
        f"run on the local model or on an API ({api_features}); endpoints and keys "
        "come from the environment or --api-config",
        choices=backends_for(step),
    )
