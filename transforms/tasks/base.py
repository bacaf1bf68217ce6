"""What every step shares: the context it is built from and its registration.

The per-image error contract (`records` and `errors` outputs) is in
`transforms.per_image`; a step's options are a settings dataclass
(`transforms.settings`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import apache_beam as beam
import pyarrow as pa

from transforms.remote.api_step import ApiSettings
from transforms.tables.azure_tables import AzureTables
from transforms.tables.result_store import ResultPlan, ResultStore
from transforms.tables.transforms import TransformSpec

Settings = TypeVar("Settings")


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a step is built from: where the corpus is and the steps' settings."""

    corpus_root: str
    corpus_version: str
    settings: Mapping[type, Any] = dataclasses.field(default_factory=dict)  # by class
    expected_images: int = 0  # manifest size, to size outputs
    step_columns: Mapping[str, pa.DataType] = dataclasses.field(default_factory=dict)
    azure_tables: AzureTables | None = None  # where the Azure Table copy goes, if any
    api: ApiSettings | None = None  # how steps on a remote backend call their APIs
    run_steps: tuple[str, ...] = ()  # every step of the run, in order
    step_versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    results: ResultPlan | None = None  # which stored results the run reuses
    result_store: ResultStore | None = None

    def settings_for(self, kind: type[Settings]) -> Settings:
        """The run's settings of this class, or its defaults."""
        found = self.settings.get(kind)
        return found if found is not None else kind()


@dataclasses.dataclass(frozen=True)
class Step:
    """A registered pipeline step.

    Attributes:
        name: the name used in a pipeline definition.
        version: bumped when the step's results change; stored with every result.
        build: makes the step's `PTransform` from a context.
        depends_on: steps whose results this one needs (`decode` is always implied).
        result_type: Arrow type of the step's column in `images`, or None.
        settings: the step's settings dataclass (its options), or None.
        transform_spec: the versioned transform it writes, if any.
        terminal: consumes `records`, `errors` (of every step) and its side inputs,
            and writes the tables.
        description: one line for `imaginem steps`.
        needs_pixels: reads the image's pixels, bytes or artifacts; once no later
            step does, records travel without them.
        side_outputs: what it emits besides `records` and `errors` (e.g. face
            clusters), for a later step to read.
        side_inputs: the side outputs (of earlier steps, or `aliases` from reading
            the corpus) it reads, where the run has them; a step with side inputs
            gets a dict of PCollections, `records` and one per side input.
        parameters: what changes the step's result besides its version (model,
            backend, options); with it, results are stored and reused, keyed by
            their fingerprint. None: computed on every run (cheap or global steps).
        hands_on: later steps read what it leaves in memory (pixels, chips): when
            one of them runs on an image, this step runs too.
    """

    name: str
    version: str
    build: Callable[[StepContext], beam.PTransform]
    depends_on: tuple[str, ...] = ()
    result_type: pa.DataType | None = None
    settings: type | None = None
    transform_spec: Callable[[StepContext], TransformSpec] | None = None
    terminal: bool = False
    description: str = ""
    needs_pixels: bool = True
    side_outputs: tuple[str, ...] = ()
    side_inputs: tuple[str, ...] = ()
    parameters: Callable[[StepContext], Mapping[str, Any]] | None = None
    hands_on: bool = False
