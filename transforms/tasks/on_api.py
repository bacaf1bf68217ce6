"""Model steps that can run on a remote API instead of their local model.

Such a step's settings have a `backend` field (`remote.registry.backend_setting`)
and an `api()` method; its builder hands the chosen API to `on_api`. The results have the same
columns as the local model's (`backend` and `model` say who answered), so later
steps and the tables do not care where a result came from.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from transforms.records import LOCAL_BACKEND
from transforms.remote import registry
from transforms.remote.api import Api
from transforms.remote.api_step import CallVisionApi, ResultMaker
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


def on_api(
    context: StepContext, step: str, backend: str, api: Api, make_result: ResultMaker
) -> CallVisionApi:
    """The step run on `backend`'s `api`, its results made from answers by `make_result`."""
    if context.api is None:
        raise ValueError(f"--{step}-backend needs the run's API settings")
    return CallVisionApi(
        step=step,
        api=api,
        corpus_root=context.corpus_root,
        settings=context.api,
        read=registry.feature_for(step, backend).read,
        make_result=make_result,
    )


def model_parameters(settings: Any, local_model: str, **options: Any) -> dict[str, Any]:
    """What makes a model step's result: the backend, its model, and the step's options."""
    api = chosen_api(settings)
    backend, model = (api.name, api.model_version) if api else (LOCAL_BACKEND, local_model)
    return {"backend": backend, "model": model, **options}
