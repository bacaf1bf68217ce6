"""The fake vision API: the official clients call it and parse its answers; it limits
the rate with real 429s and injects the faults it is asked for."""

import base64
import json

import httpx
import pytest
from azure.ai.vision.face import FaceClient
from azure.ai.vision.face.models import FaceDetectionModel, FaceRecognitionModel
from azure.ai.vision.imageanalysis import ImageAnalysisClient
from azure.ai.vision.imageanalysis.models import VisualFeatures
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import vision

from tests import image_factory
from tests.fake_apis import FakeApiSettings, FakeVisionApi
from transforms.remote.quota import Rate

KEY = "fake-key-123"


def _one_face(image):
    return [(10, 5, 20, 24)]


@pytest.fixture
def fake():
    with FakeVisionApi(FakeApiSettings(key=KEY, find_faces=_one_face)) as server:
        yield server


def test_azure_image_analysis_client_parses_the_fake(fake):
    client = ImageAnalysisClient(fake.url, AzureKeyCredential(KEY))
    result = client.analyze(
        image_data=image_factory.jpeg_bytes(64, 52),
        visual_features=[VisualFeatures.TAGS, VisualFeatures.READ],
    )
    assert result.model_version == "2023-10-01"
    assert (result.metadata.width, result.metadata.height) == (64, 52)
    assert "landscape" in [tag.name for tag in result.tags.list]
    assert result.read.blocks == []
    with pytest.raises(HttpResponseError) as refused:
        client.analyze(image_data=b"not an image", visual_features=[VisualFeatures.TAGS])
    assert refused.value.status_code == 400
    assert "Image format is not valid" in str(refused.value)
    with pytest.raises(HttpResponseError) as denied:
        ImageAnalysisClient(fake.url, AzureKeyCredential("wrong")).analyze(
            image_data=image_factory.jpeg_bytes(), visual_features=[VisualFeatures.TAGS]
        )
    assert denied.value.status_code == 401


def test_azure_face_client_parses_the_fake(fake):
    client = FaceClient(fake.url, AzureKeyCredential(KEY))
    faces = client.detect(
        image_factory.jpeg_bytes(),
        detection_model=FaceDetectionModel.DETECTION03,
        recognition_model=FaceRecognitionModel.RECOGNITION04,
        return_face_id=False,
    )
    rectangle = faces[0].face_rectangle
    assert (rectangle.left, rectangle.top, rectangle.width, rectangle.height) == (10, 5, 20, 24)


def test_google_cloud_vision_rest_client_parses_the_fake(fake):
    client = vision.ImageAnnotatorClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=fake.url, api_key=None),
    )
    features = [
        vision.Feature(type_=vision.Feature.Type.LABEL_DETECTION, max_results=5),
        vision.Feature(type_=vision.Feature.Type.FACE_DETECTION),
    ]
    requests = [
        vision.AnnotateImageRequest(image=vision.Image(content=data), features=features)
        for data in (image_factory.jpeg_bytes(), b"broken", image_factory.png_bytes(40, 80))
    ]
    response = client.batch_annotate_images(requests=requests, metadata=[("x-goog-api-key", KEY)])
    first, broken, third = response.responses
    assert "landscape" in [label.description for label in first.label_annotations]
    assert [(v.x, v.y) for v in first.face_annotations[0].bounding_poly.vertices][0] == (10, 5)
    assert broken.error.message == "Bad image data."
    assert "portrait" in [label.description for label in third.label_annotations]


def test_rate_limit_answers_429_with_retry_after():
    with FakeVisionApi(FakeApiSettings(rate=Rate(2))) as server:
        body = json.dumps(
            {
                "requests": [
                    {"image": {"content": base64.b64encode(image_factory.png_bytes()).decode()}}
                ]
            }
        )
        statuses = [httpx.post(f"{server.url}/v1/images:annotate", content=body) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 429, 429]
    assert statuses[2].headers["Retry-After"] == "1"
    assert [entry.status for entry in server.log] == [200, 200, 429, 429]


@pytest.mark.parametrize("fault", ["500", "503", "timeout", "reset", "malformed"])
def test_each_fault_looks_like_the_real_thing(fault):
    settings = FakeApiSettings(fault_rate=1.0, faults=(fault,), stall_seconds=1.0)
    with FakeVisionApi(settings) as server:
        url = f"{server.url}/computervision/imageanalysis:analyze?features=tags"
        try:
            response = httpx.post(url, content=image_factory.jpeg_bytes(), timeout=0.3)
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.TransportError:
            outcome = "reset"
        else:
            try:
                response.json()
                outcome = str(response.status_code)
            except json.JSONDecodeError:
                outcome = "malformed"
    assert outcome == fault
    assert server.log[0].status == fault
