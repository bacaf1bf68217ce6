"""Azure AI Vision Image Analysis 4.0: labels (`tags`) and text (`read`)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from transforms.records import StepName
from transforms.remote.api import Api, ApiFeature, azure_post, mean, polygon

AZURE_VISION = "azure-vision"
AZURE_VISION_MODEL = "2023-10-01"
AZURE_VISION_API_VERSION = "2023-10-01"


@dataclasses.dataclass(frozen=True)
class AzureVision(Api):
    """Azure AI Vision Image Analysis 4.0, `features=tags` or `features=read`."""

    feature: str = "tags"
    name: ClassVar[str] = AZURE_VISION
    max_side: ClassVar[int] = 4096

    @property
    def model_version(self) -> str:
        return AZURE_VISION_MODEL

    def send(self, client, endpoint, key, packed):
        params = {
            "api-version": AZURE_VISION_API_VERSION,
            "features": self.feature,
            "model-version": AZURE_VISION_MODEL,
            "language": "en",
        }
        url = f"{endpoint.rstrip('/')}/computervision/imageanalysis:analyze"
        return azure_post(client, url, key, params, packed.parts[0])

    def reported_model(self, answer):
        return str(answer.get("modelVersion") or self.model_version)


def labels_from_azure(answer: dict[str, Any], scale: float = 1.0) -> list[dict[str, Any]]:
    values = answer.get("tagsResult", {}).get("values", [])
    tags = [{"label": tag["name"], "score": float(tag["confidence"])} for tag in values]
    return sorted(tags, key=lambda tag: -tag["score"])


def text_from_azure(answer: dict[str, Any], scale: float) -> list[dict[str, Any]]:
    """Lines of the Read result; a line's score is the mean of its words'."""
    return [
        {
            "text": line["text"],
            "score": mean([float(word["confidence"]) for word in line.get("words", [])]),
            "box": polygon(line["boundingPolygon"], scale),
        }
        for block in answer.get("readResult", {}).get("blocks", [])
        for line in block.get("lines", [])
    ]


STEPS = {
    StepName.GENERAL_CLASSIFICATION: ApiFeature(
        lambda grid_columns: AzureVision(feature="tags"), labels_from_azure
    ),
    StepName.OCR: ApiFeature(lambda grid_columns: AzureVision(feature="read"), text_from_azure),
}
