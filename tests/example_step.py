"""A user-defined step, loaded with `--step-module tests.example_step`."""

import apache_beam as beam
import pyarrow as pa
from PIL import ImageStat

from transforms.tasks import ApplyToEachImage, Outcome, Step


def mean_gray(record):
    gray = ImageStat.Stat(record.image.convert("L")).mean[0]
    return record.with_result("grayscale", {"mean": gray}), Outcome.PROCESSED


class MeasureBrightness(beam.PTransform):
    def expand(self, records):
        return records | ApplyToEachImage("grayscale", mean_gray)


STEP = Step(
    name="grayscale",
    version="1",
    build=lambda context: MeasureBrightness(),
    result_type=pa.struct([("mean", pa.float64())]),
    description="mean grey level",
)
