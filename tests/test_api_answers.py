"""The pure parts of the API backends: answers to neutral form, grids, endpoints, sizes."""

import pytest
from PIL import Image

from transforms.records import ImageRecord, ManifestEntry
from transforms.remote import endpoints, grid
from transforms.remote.answer_store import StoredAnswer
from transforms.remote.api_step import shrink
from transforms.remote.azure_face import AzureFace, faces_from_azure
from transforms.remote.azure_vision import text_from_azure
from transforms.remote.google_vision import (
    GOOGLE_DEFAULT_ENDPOINT,
    GoogleVision,
    faces_from_google,
    text_from_google,
)
from transforms.remote.http_call import ApiRefusedError, ApiUnavailableError
from transforms.tasks.classify import labels_result
from transforms.tasks.faces.detection import eyes, faces_result
from transforms.tasks.ocr import text_result


def _corners(left, top, right, bottom, skip_zero=False):
    vertices = [
        {"x": left, "y": top},
        {"x": right, "y": top},
        {"x": right, "y": bottom},
        {"x": left, "y": bottom},
    ]
    if skip_zero:  # as Cloud Vision sends them
        vertices = [{k: v for k, v in vertex.items() if v} for vertex in vertices]
    return vertices


def test_azure_read_lines_are_scaled_back_and_scored_by_their_words():
    answer = {
        "readResult": {
            "blocks": [
                {
                    "lines": [
                        {
                            "text": "Hello world",
                            "boundingPolygon": _corners(1, 2, 11, 6),
                            "words": [{"confidence": 0.9}, {"confidence": 0.7}],
                        }
                    ]
                }
            ]
        }
    }
    (line,) = text_from_azure(answer, scale=2.0)
    assert line["text"] == "Hello world"
    assert line["score"] == pytest.approx(0.8)
    assert line["box"] == [[2, 4], [22, 4], [22, 12], [2, 12]]


def test_google_text_uses_paragraphs_and_reads_left_out_zero_coordinates():
    paragraph = {
        "boundingBox": {"vertices": _corners(0, 0, 30, 10, skip_zero=True)},
        "confidence": 0.98,
        "words": [{"symbols": [{"text": "H"}, {"text": "i"}]}, {"symbols": [{"text": "!"}]}],
    }
    answer = {"fullTextAnnotation": {"pages": [{"blocks": [{"paragraphs": [paragraph]}]}]}}
    (line,) = text_from_google(answer, scale=1.0)
    assert (line["text"], line["score"]) == ("Hi !", 0.98)
    assert line["box"][0] == [0.0, 0.0] and line["box"][2] == [30.0, 10.0]
    words_only = {
        "textAnnotations": [
            {"description": "Hi"},
            {"description": "Hi", "boundingPoly": {"vertices": _corners(1, 1, 5, 5)}},
        ]
    }
    assert [w["text"] for w in text_from_google(words_only, 1.0)] == ["Hi"]


def test_eyes_are_named_by_where_they_are_whatever_the_api_calls_them():
    azure = [
        {
            "faceRectangle": {"left": 10, "top": 20, "width": 40, "height": 50},
            # Named the other way round on purpose: position decides.
            "faceLandmarks": {
                "pupilLeft": {"x": 40, "y": 30},
                "pupilRight": {"x": 20, "y": 31},
                "mouthLeft": {"x": 20, "y": 60},
                "mouthRight": {"x": 40, "y": 60},
            },
        }
    ]
    (face,) = faces_from_azure(azure, scale=0.5)
    assert face["box"] == [5, 10, 25, 35]
    assert face["keypoints"]["right_eye"] == [10, 15.5]
    assert face["keypoints"]["left_eye"] == [20, 15]
    assert face["keypoints"]["mouth"] == [15, 30]
    assert face["score"] is None
    google = {
        "faceAnnotations": [
            {
                "boundingPoly": {"vertices": _corners(0, 0, 100, 100)},
                "fdBoundingPoly": {"vertices": _corners(10, 10, 60, 70)},
                "landmarks": [
                    {"type": "LEFT_EYE", "position": {"x": 25, "y": 30}},
                    {"type": "RIGHT_EYE", "position": {"x": 45, "y": 30}},
                    {"type": "CHIN_GNATHION", "position": {"x": 35, "y": 70}},
                ],
                "detectionConfidence": 0.93,
            }
        ]
    }
    (face,) = faces_from_google(google, scale=1.0)
    assert face["box"] == [10, 10, 60, 70]
    assert face["keypoints"] == {"right_eye": [25, 30], "left_eye": [45, 30]}
    assert face["score"] == pytest.approx(0.93)


def test_faces_without_eyes_are_aligned_level():
    face = {"box": {"left": 0, "top": 0, "right": 100, "bottom": 100}, "keypoints": []}
    right, left = eyes(face)
    assert right[1] == left[1] and right[0] < left[0]


def test_a_grid_maps_every_face_back_to_its_own_image():
    images = [Image.new("RGB", size) for size in ((800, 600), (300, 900), (1000, 1000))]
    tiled, cells = grid.tile(images, columns=2, side=1000)
    assert tiled.width == 1000 and len(cells) == 3
    assert not cells[0].contains(cells[1].left - 1, cells[1].top)  # a gap between cells
    # One face per image at a known place, as the grid shows it.
    placed = [(100, 50, 200), (10, 500, 90), (600, 600, 300)]
    faces = []
    for cell, (x, y, size) in zip(cells, placed, strict=True):
        faces.append(
            {
                "faceRectangle": {
                    "left": cell.left + x * cell.scale,
                    "top": cell.top + y * cell.scale,
                    "width": size * cell.scale,
                    "height": size * cell.scale,
                },
                "faceLandmarks": {
                    "pupilLeft": {"x": cell.left + x * cell.scale, "y": cell.top + y * cell.scale}
                },
            }
        )
    in_gap = {"faceRectangle": {"left": cells[1].left - 20, "top": 10, "width": 10, "height": 10}}
    per_image = grid.faces_by_cell([*faces, in_gap], cells)
    for found, (x, y, size) in zip(per_image, placed, strict=True):
        (face,) = found
        rectangle = face["faceRectangle"]
        assert (rectangle["left"], rectangle["top"]) == (pytest.approx(x), pytest.approx(y))
        assert rectangle["width"] == pytest.approx(size)
        assert face["faceLandmarks"]["pupilLeft"]["x"] == pytest.approx(x)


def test_azure_face_with_a_grid_sends_one_image_for_several():
    face = AzureFace(grid_columns=3)
    assert face.images_per_request == 9
    assert face.model_version == "detection_03-grid3x3"  # its answers are stored apart
    packed = face.pack([Image.new("RGB", (640, 480)) for _ in range(5)])
    assert len(packed.parts) == 1 and len(packed.layout) == 5
    assert face.split([], packed) == [[]] * 5
    with pytest.raises(ValueError):
        face.split({"error": "not a list"}, packed)


def test_google_answers_split_per_image_and_a_short_answer_is_malformed():
    google = GoogleVision("LABEL_DETECTION")
    packed = google.pack([Image.new("RGB", (60, 60)) for _ in range(3)])
    refused, failed, fine = google.split(
        {
            "responses": [
                {"error": {"code": 3, "message": "Bad image data."}},
                {"error": {"code": 14, "message": "Try again."}},
                {},
            ]
        },
        packed,
    )
    assert isinstance(refused, ApiRefusedError) and "Bad image data" in str(refused)
    assert refused.refuses_the_image  # stored: asking again gets the same
    assert isinstance(failed, ApiUnavailableError)  # not stored: may pass next time
    assert fine == {}
    with pytest.raises(ValueError):
        google.split({"responses": [{}]}, packed)
    assert google.billed_units(images=20, requests=2) == 20
    assert AzureFace(grid_columns=2).billed_units(images=20, requests=5) == 5


def test_shrink_keeps_small_images_and_records_the_scale():
    image = Image.new("RGB", (4000, 1000))
    small, scale = shrink(image, 1600)
    assert small.size == (1600, 400) and scale == 2.5
    assert shrink(small, 1600) == (small, 1.0)


def test_remote_results_fill_the_local_columns():
    entry = ManifestEntry("a.jpg", "", "a.jpg", "v1", "/corpus/a.jpg", "a" * 64, 1)
    record = ImageRecord(entry=entry)
    labels = StoredAnswer(
        "2023-10-01", [{"label": "dog", "score": 0.9}, {"label": "x", "score": 0.1}]
    )
    result = labels_result(record, labels, "azure-vision", top_k=1)
    assert result["labels"] == [{"class_id": None, "label": "dog", "score": 0.9}]
    assert (result["backend"], result["model"]) == ("azure-vision", "2023-10-01")
    lines = [
        {"text": "weak", "score": 0.2, "box": [[0, 0]] * 4},
        {"text": "unscored", "score": None, "box": [[0, 0]] * 4},
    ]
    text = text_result(record, StoredAnswer("m", lines), "google-vision", min_score=0.5)
    assert text["text"] == "unscored" and text["has_text"]
    faces = [
        {"box": [50, 0, 60, 10], "keypoints": {}, "score": 0.9},
        {"box": [0, 0, 10, 10], "keypoints": {}, "score": None},
        {"box": [20, 0, 30, 10], "keypoints": {}, "score": 0.1},
    ]
    result = faces_result(record, StoredAnswer("m", faces), "g", "det", 0.5)
    assert [face["box"]["left"] for face in result["faces"]] == [0, 50]
    assert [face["face_index"] for face in result["faces"]] == [0, 1]


def test_endpoints_come_from_the_environment_first_and_keys_stay_out_of_sight(tmp_path):
    config_file = tmp_path / "apis.toml"
    config_file.write_text(
        '[azure-vision]\nendpoint = "https://from-file.example"\nkey = "file-key"\n'
        "price_per_1000 = 1.5\n"
    )
    config = endpoints.read_config(str(config_file))
    assert "file-key" not in repr(config)
    environ = {"IMAGINEM_AZURE_VISION_ENDPOINT": "https://from-env.example/"}
    endpoint = endpoints.resolve("azure-vision", config["azure-vision"], environ)
    assert endpoint.url == "https://from-env.example"
    assert environ[endpoint.key_env] == "file-key"  # for the local workers
    assert "file-key" not in repr(endpoint)
    environ = {"IMAGINEM_AZURE_VISION_KEY": "env-key"}
    endpoints.resolve("azure-vision", config["azure-vision"], environ)
    assert environ["IMAGINEM_AZURE_VISION_KEY"] == "env-key"
    google = endpoints.resolve("google-vision", None, {"IMAGINEM_GOOGLE_VISION_KEY": "k"})
    assert google.url == GOOGLE_DEFAULT_ENDPOINT
    assert endpoints.checked_key("key-from-a-file\n", "NAME") == "key-from-a-file"
    with pytest.raises(ValueError, match="characters an API key cannot have") as bad:
        endpoints.checked_key("two words", "NAME")
    assert "two words" not in str(bad.value)


def test_only_a_refusal_of_the_image_itself_is_kept():
    assert ApiRefusedError(400, "too small", "InvalidImageSize").refuses_the_image
    assert not ApiRefusedError(400, "API key not valid", "400").refuses_the_image
    assert not ApiRefusedError(401, "denied", "401").refuses_the_image


@pytest.mark.parametrize(
    ("config", "environ", "message"),
    [
        (None, {}, "no endpoint for azure-face: set IMAGINEM_AZURE_FACE_ENDPOINT"),
        (
            None,
            {"IMAGINEM_AZURE_FACE_ENDPOINT": "https://x.example"},
            "no key for azure-face: set IMAGINEM_AZURE_FACE_KEY",
        ),
        (
            None,
            {
                "IMAGINEM_AZURE_FACE_ENDPOINT": "https://x.example/?key=abc",
                "IMAGINEM_AZURE_FACE_KEY": "k",
            },
            "must not carry a query",
        ),
        (
            None,
            {"IMAGINEM_AZURE_FACE_ENDPOINT": "x.example", "IMAGINEM_AZURE_FACE_KEY": "k"},
            "must be an http",
        ),
    ],
)
def test_a_missing_or_unsafe_endpoint_says_what_to_set(config, environ, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        endpoints.resolve("azure-face", config, environ)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[azure-visoin]\nkey = 'k'\n", r"unknown section \[azure-visoin\]"),
        ("[azure-face]\nkee = 'k'\n", "unknown field"),
        ("[google-vision]\nprice_per_1000 = 'cheap'\n", "price_per_1000 must be a number"),
        ("not toml [", "cannot read --api-config"),
    ],
)
def test_a_bad_config_file_is_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "apis.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        endpoints.read_config(str(path))
