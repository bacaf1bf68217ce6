"""Model steps that can run on a remote API instead of their local model.

Such a step's settings have a `backend` field (`remote.registry.backend_setting`)
and an `api()` method; its builder goes through `on_chosen_backend`. The results have the same
columns as the local model's (`backend` and `model` say who answered), so later
steps and the tables do not care where a result came from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import apache_beam as beam

from transforms.records import LOCAL_BACKEND
from transforms.remote import registry
from transforms.remote.api import Api
from transforms.remote.api_step import CallVisionApi
from transforms.tasks.base import StepContext


@runtime_checkable
class RunsOnApi(Protocol):
    """Settings of a step that can run on a remote API instead of its local model."""

    backend: str

    def api(self) -> Api | None:
        """The API chosen, or None for the local model."""


def chosen_api(settings: Any) -> Api | None:
    """The API a step's settings chose, or None (the local model, or no choice)."""
    return settings.api() if isinstance(settings, RunsOnApi) else None


def on_chosen_backend(
    context: StepContext,
    step: str,
    settings: RunsOnApi,
    local: Callable[[], beam.PTransform],
    result: Callable[..., dict[str, Any]],
    **options: Any,
) -> beam.PTransform:
    """The step on the API its settings chose, else its local composite (`local()`).

    Args:
        result: (record, stored answer, backend=…, **options) -> the step's result.
    """
    api = settings.api()
    if api is None:
        return local()
    if context.api is None:
        raise ValueError(f"--{step}-backend needs the run's API settings")
    return CallVisionApi(
        step=step,
        api=api,
        corpus_root=context.corpus_root,
        settings=context.api,
        read=registry.feature_for(step, settings.backend).read,
        make_result=functools.partial(result, backend=api.name, **options),
    )


def model_parameters(settings: RunsOnApi, local_model: str, **options: Any) -> dict[str, Any]:
    """What makes a model step's result: the backend, its model, and the step's options."""
    api = settings.api()
    backend, model = (api.name, api.model_version) if api else (LOCAL_BACKEND, local_model)
    return {"backend": backend, "model": model, **options}
