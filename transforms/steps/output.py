"""The `pipelineoutput` step: write the `images`, `faces` and `errors` tables of a run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import paths, schemas
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
class WriteParquetTables(beam.PTransform):
    """Replaces the corpus version's partitions of `images`, `faces` and `errors`.

    Input is a dict with `records` and `errors`, and `face_clusters` when the run
    clusters faces.

    Args:
        corpus_root: where `metadata/` lives.
        corpus_version: the partition (`corpus_version=<v>`) this run owns.
        step_columns: step name -> Arrow type of its result column.
        expected_images: images in the version, to size the shards.

    Returns:
        A dict of PCollections of the shard files written, by table.
    """

    corpus_root: str
    corpus_version: str
    step_columns: Mapping[str, pa.DataType]
    expected_images: int = 0

    def __post_init__(self) -> None:
        super().__init__()
        paths.check_version(self.corpus_version)

    def _partition(self, table: str) -> str:
        return paths.partition_dir(self.corpus_root, table, corpus_version=self.corpus_version)

    def expand(self, outputs):
        step_columns = dict(self.step_columns)
        shards = shard_count(self.expected_images)
        images = (
            outputs[RECORDS]
            | "ImageRows" >> beam.Map(_image_row, step_columns)
            | "WriteImages"
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
        faces = self._write_faces(outputs, shards)
        return {schemas.IMAGES: images, FACES: faces, schemas.ERRORS: errors}

    def _write_faces(self, outputs, shards: int):
        if FACE_CLUSTERS in outputs:
            clusters = beam.pvalue.AsDict(outputs[FACE_CLUSTERS])
        else:
            clusters = beam.pvalue.AsDict(
                outputs[RECORDS].pipeline | "NoClusters" >> beam.Create([])
            )
        return (
            outputs[RECORDS]
            | "FaceRows" >> beam.FlatMap(_face_rows, clusters)
            | "WriteFaces"
            >> WriteTablePartition(self._partition(FACES), FACES_SCHEMA, _face_key, shards)
        )


def _build(context: StepContext) -> WriteParquetTables:
    return WriteParquetTables(
        corpus_root=context.corpus_root,
        corpus_version=context.corpus_version,
        step_columns=context.step_columns,
        expected_images=context.expected_images,
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
