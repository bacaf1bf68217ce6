"""The step registry and the resolver that turns a pipeline definition into a plan.

Built-in steps are listed here; other packages add steps through the
`imaginem.steps` entry-point group or a module named with `--step-module`, each
exposing a `Step` (an entry point names the `Step` object; a module defines `STEP`
or `STEPS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from transforms.records import StepName
from transforms.tasks import classify, decode, face_steps, ocr, output, phash, thumbnail
from transforms.tasks.base import Step

ENTRY_POINT_GROUP = "imaginem.steps"
DEFAULT_DEFINITION = (
    "thumbnail,phash,generalclassification,ocr,"
    "facedetection,facecrop,faceprint,facematch,pipelineoutput"
)


class StepDefinitionError(ValueError):
    """A pipeline definition that cannot run; the message says what to change."""


def builtin_steps() -> list[Step]:
    return [
        decode.STEP,
        thumbnail.STEP,
        phash.STEP,
        classify.STEP,
        ocr.STEP,
        *face_steps.STEPS,
        output.STEP,
    ]


def _steps_of_module(module_name: str) -> list[Step]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise StepDefinitionError(f"cannot import step module {module_name!r}: {error}") from error
    found = list(getattr(module, "STEPS", [])) or ([module.STEP] if hasattr(module, "STEP") else [])
    if not found or not all(isinstance(step, Step) for step in found):
        raise StepDefinitionError(
            f"step module {module_name!r} must define STEP (a transforms.tasks.Step) or STEPS"
        )
    return found


def load_registry(step_modules: Iterable[str] = ()) -> dict[str, Step]:
    """Built-in steps, then entry-point steps, then `--step-module` steps."""
    steps = builtin_steps()
    for point in entry_points(group=ENTRY_POINT_GROUP):
        step = point.load()
        if not isinstance(step, Step):
            raise StepDefinitionError(f"entry point {point.name!r} is not a Step")
        steps.append(step)
    for module_name in step_modules:
        steps.extend(_steps_of_module(module_name))
    registry: dict[str, Step] = {}
    for step in steps:
        if step.name in registry:
            raise StepDefinitionError(f"two steps are registered as {step.name!r}")
        registry[step.name] = step
    return registry


def dependencies(step: Step) -> tuple[str, ...]:
    """Declared dependencies, with `decode` implied for every other step."""
    if step.name == StepName.DECODE:
        return step.depends_on
    return tuple(dict.fromkeys(str(name) for name in (StepName.DECODE, *step.depends_on)))


def parse_definition(definition: str) -> list[str]:
    names = [name.strip() for name in definition.split(",") if name.strip()]
    if not names:
        raise StepDefinitionError("the step list is empty; e.g. --steps decode,thumbnail")
    return names


def resolve_steps(requested: list[str], registry: Mapping[str, Step]) -> list[Step]:
    """Orders the requested steps with their dependencies, or explains why not.

    Dependencies that are not listed are inserted just before the first step that
    needs them. The terminal step (`pipelineoutput`) is appended if missing.

    Raises:
        StepDefinitionError: unknown or repeated names, a step listed before one it
            depends on, a dependency cycle, or a terminal step that is not last.
    """
    unknown = [name for name in requested if name not in registry]
    if unknown:
        raise StepDefinitionError(
            f"unknown step(s): {', '.join(unknown)}; known steps: {', '.join(sorted(registry))}"
        )
    repeated = sorted({name for name in requested if requested.count(name) > 1})
    if repeated:
        raise StepDefinitionError(f"step(s) listed more than once: {', '.join(repeated)}")
    position = {name: index for index, name in enumerate(requested)}
    for name in requested:
        for dependency in dependencies(registry[name]):
            if dependency in position and position[dependency] > position[name]:
                raise StepDefinitionError(
                    f"step {name!r} is listed before {dependency!r}, which it depends on; "
                    f"move {dependency!r} earlier"
                )

    plan: list[str] = []

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise StepDefinitionError(f"dependency cycle: {' -> '.join((*chain, name))}")
        if name in plan:
            return
        if name not in registry:
            raise StepDefinitionError(f"step {chain[-1]!r} depends on unknown step {name!r}")
        for dependency in dependencies(registry[name]):
            add(dependency, (*chain, name))
        plan.append(name)

    for name in requested:
        add(name, ())
    terminal = [name for name in plan if registry[name].terminal]
    if not terminal:
        plan.append(StepName.PIPELINE_OUTPUT)
    elif len(terminal) > 1 or plan[-1] != terminal[0]:
        raise StepDefinitionError(f"{terminal[0]!r} writes the tables and must be the last step")
    return [registry[name] for name in plan]
