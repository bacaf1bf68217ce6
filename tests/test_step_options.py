"""A step's settings dataclass becomes its flags, and the parsed flags its settings."""

import argparse
import dataclasses

import pytest

from beam_pipeline.step_options import add_step_arguments, step_settings
from transforms.tasks import Step, StepContext, setting


@dataclasses.dataclass(frozen=True)
class LevelSettings:
    min_level: int = setting(10, "darkest grey level counted")
    label: str | None = setting(None, "name written with the result", flag="--level-name")
    gain: float = setting(1.5, "multiply the level by this")

    def __post_init__(self) -> None:
        if not 0 <= self.min_level <= 255:
            raise ValueError(f"--levels-min-level must be 0-255, got {self.min_level}")


STEP = Step(name="levels", version="1", build=lambda context: None, settings=LevelSettings)
PLAIN = Step(name="plain", version="1", build=lambda context: None)


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_step_arguments(parser, [STEP, PLAIN])
    return parser, step_settings(parser.parse_args(argv), [STEP, PLAIN])


def test_defaults_come_from_the_settings_fields():
    _, settings = _parse()
    assert settings == {LevelSettings: LevelSettings()}


def test_fields_become_typed_flags_named_by_step_or_by_the_field():
    _, settings = _parse("--levels-min-level", "40", "--level-name", "dark", "--levels-gain", "2")
    assert settings[LevelSettings] == LevelSettings(min_level=40, label="dark", gain=2.0)


def test_help_shows_each_default_once(capsys):
    parser, _ = _parse()
    parser.print_help()
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "--levels-min-level LEVELS_MIN_LEVEL darkest grey level counted (default 10)" in help_text
    )
    assert "name written with the result" in help_text


def test_a_bad_value_fails_in_the_settings_with_the_flag_named():
    with pytest.raises(ValueError, match="--levels-min-level must be 0-255"):
        _parse("--levels-min-level", "300")


def test_a_value_of_the_wrong_type_is_refused_by_the_parser():
    with pytest.raises(SystemExit):
        _parse("--levels-gain", "bright")


def test_a_context_without_the_settings_gives_their_defaults():
    context = StepContext(corpus_root="/corpus", corpus_version="v1")
    assert context.settings_for(LevelSettings) == LevelSettings()
