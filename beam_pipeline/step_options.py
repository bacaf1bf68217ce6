"""Each step's settings dataclass as command-line flags, and parsed flags back as settings.

A field `min_score` of step `ocr` is the flag `--ocr-min-score` unless the field
names its own flag; its default, help and choices come from the field, so they are
stated once, in the library.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from transforms.tasks.base import Step


def flag_of(step: Step, field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or f"--{step.name}-{field.name.replace('_', '-')}"


def _dest(step: Step, field: dataclasses.Field) -> str:
    return f"{step.name}__{field.name}"


def _value_type(annotation: Any) -> type:
    """`int`, `float` or `str` (also for `str | None`)."""
    options = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
    kind = options[0] if options else annotation
    if kind not in (int, float, str):
        raise TypeError(f"a setting must be an int, float or str, not {annotation!r}")
    return kind


def add_step_arguments(parser: argparse.ArgumentParser, steps: Iterable[Step]) -> None:
    """One argument group per step with settings, one flag per field."""
    for step in steps:
        if step.settings is None:
            continue
        group = parser.add_argument_group(f"{step.name} step")
        types = typing.get_type_hints(step.settings)
        for field in dataclasses.fields(step.settings):
            if field.default is dataclasses.MISSING:
                raise TypeError(
                    f"{step.settings.__name__}.{field.name} needs a default: make it with "
                    "setting(default, help)"
                )
            flag, choices = flag_of(step, field), field.metadata.get("choices")
            help_text = field.metadata.get("help", "")
            if field.default is not None:
                help_text += " (default %(default)s)"
            group.add_argument(
                flag,
                dest=_dest(step, field),
                type=_value_type(types[field.name]),
                default=field.default,
                choices=choices,
                # As argparse would name it from the flag; choices show themselves.
                metavar=None if choices else flag.lstrip("-").replace("-", "_").upper(),
                help=help_text,
            )


def step_settings(args: argparse.Namespace, steps: Iterable[Step]) -> Mapping[type, Any]:
    """Settings class -> its instance made from the parsed flags.

    Raises:
        ValueError: a value the settings refuse; the message names the flag.
    """
    built = {}
    for step in steps:
        if step.settings is None:
            continue
        values = {
            field.name: getattr(args, _dest(step, field))
            for field in dataclasses.fields(step.settings)
        }
        built[step.settings] = step.settings(**values)
    return built
