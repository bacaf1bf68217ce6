import pyarrow as pa
import pytest

from transforms.tasks import Step
from transforms.tasks.registry import (
    DEFAULT_DEFINITION,
    StepDefinitionError,
    load_registry,
    parse_definition,
    resolve_steps,
)


def _names(definition, registry=None):
    registry = registry or load_registry()
    return [step.name for step in resolve_steps(parse_definition(definition), registry)]


def _step(name, *depends_on, terminal=False):
    return Step(
        name=name,
        version="1",
        build=lambda context: None,
        depends_on=depends_on,
        result_type=pa.string(),
        terminal=terminal,
    )


@pytest.fixture
def registry():
    steps = [
        _step("decode"),
        _step("facedetection", "decode"),
        _step("facecrop", "facedetection"),
        _step("faceprint", "facecrop"),
        _step("pipelineoutput", "decode", terminal=True),
    ]
    return {step.name: step for step in steps}


def test_default_definition_resolves_in_order():
    assert _names("decode,thumbnail,pipelineoutput") == ["decode", "thumbnail", "pipelineoutput"]
    assert _names(DEFAULT_DEFINITION) == ["decode", *DEFAULT_DEFINITION.split(",")]


def test_builtin_face_steps_declare_their_chain():
    assert _names("facematch") == [
        "decode",
        "facedetection",
        "facecrop",
        "faceprint",
        "facematch",
        "pipelineoutput",
    ]


def test_missing_dependencies_are_added_in_place(registry):
    assert _names("faceprint", registry) == [
        "decode",
        "facedetection",
        "facecrop",
        "faceprint",
        "pipelineoutput",
    ]


def test_decode_is_implied_and_output_appended():
    assert _names("thumbnail") == ["decode", "thumbnail", "pipelineoutput"]


def test_unknown_step_names_the_known_ones():
    with pytest.raises(StepDefinitionError, match="unknown step.*thumbnial.*known steps: decode"):
        _names("decode,thumbnial")


def test_step_before_its_dependency_is_refused(registry):
    with pytest.raises(StepDefinitionError, match="'facecrop' is listed before 'facedetection'"):
        _names("facecrop,facedetection", registry)


def test_output_must_be_last():
    with pytest.raises(StepDefinitionError, match="must be the last step"):
        _names("pipelineoutput,thumbnail")


def test_repeated_step_is_refused():
    with pytest.raises(StepDefinitionError, match="more than once: thumbnail"):
        _names("thumbnail,thumbnail")


def test_empty_definition_is_refused():
    with pytest.raises(StepDefinitionError, match="empty"):
        parse_definition(" , ")


def test_cycle_is_reported(registry):
    registry["facedetection"] = _step("facedetection", "faceprint")
    with pytest.raises(StepDefinitionError, match="cycle"):
        _names("faceprint", registry)


def test_step_module_adds_a_step():
    registry = load_registry(["tests.example_step"])
    assert _names("grayscale", registry) == ["decode", "grayscale", "pipelineoutput"]


def test_bad_step_module_is_a_clear_error():
    with pytest.raises(StepDefinitionError, match="cannot import step module 'no_such_mod'"):
        load_registry(["no_such_mod"])
    with pytest.raises(StepDefinitionError, match="must define STEP"):
        load_registry(["tests.image_factory"])
