"""The `pipelineoutput` step: write the `images`, `faces` and `errors` tables of a run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import paths, schemas
from transforms.azure_sink import WriteAzureTables
from transforms.azure_tables import AzureTables
from transforms.corpus import set_paths
from transforms.faces.match import FACE_CLUSTERS
from transforms.faces.table import FACES, FACES_SCHEMA, face_rows
from transforms.parquet_sink import WriteTablePartition, shard_count
from transforms.records import ErrorRecord, ImageRecord, StepName
from transforms.steps.base import ERRORS, RECORDS, Step, StepContext

IMAGE_ROWS = "image_rows"
ERROR_ROWS = "error_rows"
FACE_ROWS = "face_rows"


def _image_row(record: ImageRecord, step_columns: dict[str, pa.DataType]) -> dict:
    Metrics.counter(StepName.PIPELINE_OUTPUT, IMAGE_ROWS).inc()
    return schemas.image_row(record, step_columns)


def _error_row(error: ErrorRecord) -> dict:
    Metrics.counter(StepName.PIPELINE_OUTPUT, ERROR_ROWS).inc()
    return schemas.error_row(error)


def _image_key(row) -> str:
    return row["source_path"]


def _face_rows(record: ImageRecord, clusters: dict[str, str]) -> list[dict]:
    rows = face_rows(record, clusters)
    Metrics.counter(StepName.PIPELINE_OUTPUT, FACE_ROWS).inc(len(rows))
    return rows


def _face_key(row) -> str:
    return f"{row['source_path']}\x00{row['face_index']}"


def _error_key(row) -> str:
    return f"{row['path']}\x00{row['step']}"


@dataclasses.dataclass(eq=False)
class WriteTables(beam.PTransform):
    """Replaces the corpus version's partitions of `images`, `faces` and `errors`.

    With `azure_tables`, the same images and faces also go to Azure Table Storage.

    Input is a dict with `records` and `errors`, and `face_clusters` when the run
    clusters faces.

    Args:
        corpus_root: where `metadata/` lives.
        corpus_version: the partition (`corpus_version=<v>`) this run owns.
        step_columns: step name -> Arrow type of its result column.
        expected_images: images in the version, to size the shards.
        azure_tables: where the Azure copy goes, or None.
        set_paths: the version's set paths (the Azure partitions the run owns).

    Returns:
        A dict of PCollections of the shard files written, by table.
    """

    corpus_root: str
    corpus_version: str
    step_columns: Mapping[str, pa.DataType]
    expected_images: int = 0
    azure_tables: AzureTables | None = None
    set_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__init__()
        paths.check_version(self.corpus_version)

    def _partition(self, table: str) -> str:
        return paths.partition_dir(self.corpus_root, table, corpus_version=self.corpus_version)

    def expand(self, outputs):
        step_columns = dict(self.step_columns)
        shards = shard_count(self.expected_images)
        image_rows = outputs[RECORDS] | "ImageRows" >> beam.Map(_image_row, step_columns)
        images = image_rows | (
            "WriteImages"
            >> WriteTablePartition(
                self._partition(schemas.IMAGES),
                schemas.images_schema(step_columns),
                _image_key,
                shards,
            )
        )
        errors = (
            outputs[ERRORS]
            | "ErrorRows" >> beam.Map(_error_row)
            | "WriteErrors"
            >> WriteTablePartition(
                self._partition(schemas.ERRORS),
                schemas.ERRORS_SCHEMA,
                _error_key,
                shards,
            )
        )
        # Always replaced, empty if no face step ran: faces never outlive their images rows.
        face_rows = self._face_rows(outputs)
        faces = face_rows | "WriteFaces" >> WriteTablePartition(
            self._partition(FACES), FACES_SCHEMA, _face_key, shards
        )
        written = {schemas.IMAGES: images, FACES: faces, schemas.ERRORS: errors}
        if self.azure_tables is not None:
            written["azure"] = {"images": image_rows, "faces": face_rows} | (
                "WriteAzureTables"
                >> WriteAzureTables(
                    self.azure_tables,
                    self.corpus_root,
                    self.corpus_version,
                    tuple(step_columns),
                    self.set_paths,
                )
            )
        return written

    def _face_rows(self, outputs):
        if FACE_CLUSTERS in outputs:
            clusters = beam.pvalue.AsDict(outputs[FACE_CLUSTERS])
        else:
            clusters = beam.pvalue.AsDict(
                outputs[RECORDS].pipeline | "NoClusters" >> beam.Create([])
            )
        return outputs[RECORDS] | "FaceRows" >> beam.FlatMap(_face_rows, clusters)


def _build(context: StepContext) -> WriteTables:
    azure = context.azure_tables
    return WriteTables(
        corpus_root=context.corpus_root,
        corpus_version=context.corpus_version,
        step_columns=context.step_columns,
        expected_images=context.expected_images,
        azure_tables=azure,
        set_paths=set_paths(context.corpus_root, context.corpus_version) if azure else (),
    )


STEP = Step(
    name=StepName.PIPELINE_OUTPUT,
    version="1",
    build=_build,
    depends_on=(StepName.DECODE,),
    terminal=True,
    needs_pixels=False,
    description="write the images, faces and errors tables (always last)",
)
