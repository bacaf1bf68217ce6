"""The full step list on the sample corpus's real photos: what the models must get right."""

import io
import json
import os

import numpy as np
from PIL import Image

from beam_pipeline.cli import main
from beam_pipeline.run import run
from beam_pipeline.summary import step_counters, summarize
from bench import face_set, ocr_set
from bench.ocr_set import character_accuracy, text_examples
from tests.corpus_files import files_under, table_rows
from transforms.tables import schemas
from transforms.tables.schemas import FACES
from transforms.tasks import classify, ocr
from transforms.tasks.faces import blazeface, dlib_models
from transforms.tasks.registry import load_registry

RENDERED = "documents/rendered/"


def _labels(row):
    return [label["label"] for label in row["generalclassification"]["labels"]]


def test_every_result_names_its_model_and_step_version(sample_run):
    registry = load_registry()
    models = {
        "generalclassification": classify.MODEL_ID,
        "ocr": ocr.MODEL_ID,
        "facedetection": blazeface.MODEL_ID,
        "facecrop": dlib_models.ALIGNER_ID,
        "faceprint": dlib_models.EMBEDDER_ID,
    }
    for row in sample_run["images"].values():
        for step, model in models.items():
            result = row[step]
            assert result["step_version"] == registry[step].version, (row["source_path"], step)
            assert result["model"] == model, (row["source_path"], step)
    assert table_rows(sample_run["root"], schemas.ERRORS) == []


def test_classification_top5(sample_run):
    images = sample_run["images"]
    assert len(images["food/coffee/coffee.png"]["generalclassification"]["labels"]) == 5
    assert {"espresso", "cup"} & set(_labels(images["food/coffee/coffee.png"]))
    assert any("cat" in label for label in _labels(images["animals/cat/chelsea.png"]))
    scores = [
        label["score"]
        for label in images["food/coffee/coffee.png"]["generalclassification"]["labels"]
    ]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def _centre(face):
    box = face["box"]
    return (box["left"] + box["right"]) / 2, (box["top"] + box["bottom"]) / 2


def test_faces_found_where_they_are_and_nowhere_else(sample_run):
    images = sample_run["images"]
    astronaut = images["people/astronaut/astronaut.png"]["facedetection"]["faces"]
    camera = images["people/photographer/camera.png"]["facedetection"]["faces"]
    assert len(astronaut) == 1 and len(camera) == 1
    # Face centres measured by eye on the 512x512 originals.
    assert abs(_centre(astronaut[0])[0] - 226) < 20 and abs(_centre(astronaut[0])[1] - 120) < 25
    assert abs(_centre(camera[0])[0] - 238) < 20 and abs(_centre(camera[0])[1] - 160) < 25
    names = {point["name"] for point in astronaut[0]["keypoints"]}
    assert {"right_eye", "left_eye", "nose_tip", "mouth"} <= names
    faceless = [
        "food/coffee/coffee.png",
        "animals/cat/chelsea.png",
        "space/rocket/rocket.jpg",
        "documents/printed/page.png",
        "documents/printed/text.png",
        *[path for path in images if path.startswith(RENDERED)],
    ]
    for path in faceless:
        assert images[path]["facedetection"]["faces"] == [], path


def test_close_ups_and_profiles_are_found_and_nothing_on_faceless_crops(sample_with_gallery):
    """Tight portraits and profiles (the face filling half to all of the frame, turned,
    mirrored, 96-1000 px) are found; crops of photos without people hold no face."""
    drop, _ = sample_with_gallery
    detect = face_set.local_detector()
    close_ups = face_set.score_detector(face_set.close_ups(drop, 16), detect)
    # bench.face_set: 58 of 60; the profile filling the whole frame scores about 0.6.
    assert close_ups.found >= 15 and close_ups.false_faces == 0, close_ups.summary()
    faceless = face_set.score_detector(face_set.no_face_crops(drop), detect)
    assert faceless.false_faces == 0


def test_ocr_reads_rendered_text(sample_run):
    with open(os.path.join(sample_run["drop"], RENDERED, "ground_truth.json")) as handle:
        truth = json.load(handle)
    assert {"plain.png", "rotated.png", "noisy.png", "low-contrast.png"} <= set(truth)
    for file_name, expected in truth.items():
        result = sample_run["images"][RENDERED + file_name]["ocr"]
        accuracy = character_accuracy(expected, result["text"])
        assert accuracy >= 0.95, (file_name, accuracy, result["text"])
        assert all(len(line["box"]) == 4 and 0 < line["score"] <= 1 for line in result["lines"])


def test_turned_pages_read_as_well_as_upright_ones(tmp_path):
    """Pages fed sideways or upside down are found turned, read upright, and their
    boxes given in the pixels of the file as it is."""
    page = next(e for e in text_examples(str(tmp_path)) if e.name == "page-20px")
    model = ocr.RapidOcr()
    loaded = model.load()
    for angle in (0, 90, 180, 270):
        image = page.image.rotate(angle, expand=True)
        (read,) = model.predict(loaded, [ocr.bgr_pixels(image.convert("RGB"))])
        lines = ocr.text_lines(read, ocr.DEFAULT_MIN_SCORE)
        text = "\n".join(line.text for line in lines)
        assert read.angle == angle and character_accuracy(page.text, text) >= 0.98, (angle, text)
        for line in lines:
            assert all(0 <= x <= image.width and 0 <= y <= image.height for x, y in line.box)


def test_photos_without_text_have_none(tmp_path):
    """Shapes read as a letter or two are lines with their scores, not text."""
    photos = [e for e in ocr_set.no_text_photos() if e.name.startswith(("horse", "coffee"))]
    model = ocr.RapidOcr()
    loaded = model.load()
    for photo in photos:
        (read,) = model.predict(loaded, [ocr.bgr_pixels(photo.image)])
        result = ocr.ocr_result(ocr.text_lines(read, ocr.DEFAULT_MIN_SCORE))
        assert not result["has_text"] and result["text"] == "", (photo.name, result["lines"])


def test_ocr_reads_small_print_on_full_pages_and_in_large_photos(tmp_path):
    """Cases a plain cap on the detector's input loses: 16 px print on a 1000 px page,
    20 px text in a 3000 px photo."""
    examples = {example.name: example for example in text_examples(str(tmp_path))}
    read = ocr_set.local_reader()
    for name in ("full-page-16px", "photo-3000x2002-20px"):
        example = examples[name]
        assert character_accuracy(example.text, read(example.image)) >= 0.95, name


def test_the_text_detector_is_given_the_size_its_limit_allows():
    model = ocr.RapidOcr()
    loaded = model.load()
    detector = loaded._load_det_model()
    seen = []
    run = detector.session
    detector.session = lambda batch: seen.append(batch.shape) or run(batch)
    for width, height, longest in [(600, 380, 608), (1200, 800, 768), (4000, 3000, 1984)]:
        model.predict(loaded, [np.full((height, width, 3), 255, np.uint8)])
        assert max(seen[-1][2:]) == longest, (width, height, seen[-1])  # multiples of 32


def test_ocr_on_openvino_reads_what_onnxruntime_reads(tmp_path):
    examples = {example.name: example for example in text_examples(str(tmp_path))}
    pages = [examples[name].image for name in ("page-12px", "page-20px-noisy")]
    texts = {}
    for engine in ocr.ENGINES:
        model = ocr.RapidOcr(engine=engine)
        loaded = model.load()
        texts[engine] = [
            [line.text for line in ocr.text_lines(output, ocr.DEFAULT_MIN_SCORE)]
            for output in model.predict(loaded, [ocr.bgr_pixels(page) for page in pages])
        ]
    assert texts[ocr.OPENVINO] == texts[ocr.ONNXRUNTIME]
    assert all(len(lines) == 4 for lines in texts[ocr.OPENVINO])


def test_faces_table_matches_gallery_and_clusters_the_rest(sample_run):
    faces = {row["source_path"]: row for row in table_rows(sample_run["root"], FACES)}
    assert set(faces) == {"people/astronaut/astronaut.png", "people/photographer/camera.png"}
    astronaut = faces["people/astronaut/astronaut.png"]
    assert astronaut["person"] == "eileen-collins" and astronaut["distance"] < 0.5
    assert astronaut["cluster_id"] is None
    # Every gallery person is a ranked candidate, whatever the threshold.
    candidates = astronaut["candidates"]
    assert [c["person"] for c in candidates] == ["eileen-collins", "photographer"]
    assert candidates[0]["distance"] == astronaut["distance"] < candidates[1]["distance"]
    assert len(astronaut["embedding"]) == 128 and len(astronaut["landmarks"]) == 5
    with Image.open(astronaut["crop_uri"]) as chip:
        assert chip.size == (150, 150)
    camera = faces["people/photographer/camera.png"]
    assert camera["person"] == "photographer"


def test_summary_counts_faces_and_the_gallery(sample_run):
    steps = ["decode", "facedetection", "facematch", "pipelineoutput"]
    summary = summarize(sample_run["result"], sample_run["root"], "v1", steps)
    assert "faces: 2 matched a known person, 0 not" in summary
    assert "gallery.facedetection 2 processed, 0 failed" in summary
    assert "faces table      2 rows in" in summary


def test_rerun_rewrites_nothing_and_duplicates_nothing(sample_run):
    root = sample_run["root"]
    transforms_before = files_under(os.path.join(root, "transform"))
    faces_before = table_rows(root, FACES)
    result = run(["--corpus", root, "--version", "v1", "--gallery", sample_run["gallery"]])
    counters = step_counters(result)
    # Every result is stored: no model runs and no chip is made again.
    for step in ("facedetection", "facecrop", "faceprint", "generalclassification", "ocr"):
        assert counters[step].get("processed", 0) == 0 and counters[step]["reused"] > 0, step
    assert counters["facecrop"].get("crops_written", 0) == 0
    assert files_under(os.path.join(root, "transform")) == transforms_before
    assert sorted(table_rows(root, FACES), key=str) == sorted(faces_before, key=str)
    assert len(table_rows(root, schemas.IMAGES)) == len(sample_run["images"])


def _jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_the_same_face_matches_after_edits_and_strangers_cluster(tmp_path, sample_run):
    """Gallery: the original astronaut. Drop: edited copies of her, and of the cameraman."""
    drop, gallery, root = tmp_path / "drop", tmp_path / "gallery", str(tmp_path / "corpus")
    (gallery / "eileen-collins").mkdir(parents=True)
    astronaut = Image.open(os.path.join(sample_run["drop"], "people/astronaut/astronaut.png"))
    astronaut = astronaut.convert("RGB")
    astronaut.save(gallery / "eileen-collins" / "original.png")
    (gallery / "nobody").mkdir()
    coffee = os.path.join(sample_run["drop"], "food/coffee/coffee.png")
    Image.open(coffee).save(gallery / "nobody" / "coffee.png")
    camera = Image.open(os.path.join(sample_run["drop"], "people/photographer/camera.png"))
    camera = camera.convert("RGB")
    edits = {
        "astronaut/flipped.png": astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "astronaut/half-size.png": astronaut.resize((256, 256), Image.Resampling.LANCZOS),
        "astronaut/rotated-20.png": astronaut.rotate(20, expand=True, fillcolor=(255, 255, 255)),
        "astronaut/rotated-90.png": astronaut.rotate(90, expand=True),
        "cameraman/original.png": camera,
        "cameraman/flipped.png": camera.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    }
    for name, image in edits.items():
        (drop / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(drop / name)
    (drop / "astronaut" / "jpeg-quality-8.jpg").write_bytes(_jpeg(astronaut, 8))
    assert main(["ingest", str(drop), "--corpus", root, "--version", "v1"]) == 0
    steps = "facedetection,facecrop,faceprint,facematch"
    assert (
        run(
            ["--corpus", root, "--version", "v1", "--steps", steps, "--gallery", str(gallery)]
        ).state
        == "DONE"
    )

    errors = table_rows(root, schemas.ERRORS)
    assert [(e["path"], e["step"]) for e in errors] == [
        ("gallery:nobody/coffee.png", "gallery.facematch")
    ]
    faces = table_rows(root, FACES)
    assert "nobody" not in {face["person"] for face in faces}
    by_path = {}
    for face in faces:
        by_path.setdefault(face["source_path"], []).append(face)
    assert set(by_path) == {*edits, "astronaut/jpeg-quality-8.jpg"}
    assert all(len(found) == 1 for found in by_path.values()), by_path.keys()
    for path, (face,) in by_path.items():
        if path.startswith("astronaut/"):
            assert face["person"] == "eileen-collins", (path, face["distance"])
        else:
            assert face["person"] is None and face["distance"] > 0.6, (path, face["distance"])
            # No match, but the lead a reviewer checks is still there.
            lead = {"person": "eileen-collins", "distance": face["distance"]}
            assert face["candidates"] == [lead]
    cameraman = {by_path[p][0]["cluster_id"] for p in edits if p.startswith("cameraman/")}
    assert len(cameraman) == 1 and None not in cameraman

    # A later run without face steps changes only its own columns: the faces stay.
    assert run(["--corpus", root, "--version", "v1", "--steps", "thumbnail"]).state == "DONE"
    assert sorted(table_rows(root, FACES), key=str) == sorted(faces, key=str)


def test_a_photo_shrunk_on_load_gives_boxes_in_its_own_pixels(tmp_path, sample_run):
    """The astronaut at 4x size, read at a quarter: found, placed and matched as herself."""
    drop, gallery, root = tmp_path / "drop", tmp_path / "gallery", str(tmp_path / "corpus")
    astronaut = Image.open(os.path.join(sample_run["drop"], "people/astronaut/astronaut.png"))
    (gallery / "eileen-collins").mkdir(parents=True)
    astronaut.convert("RGB").save(gallery / "eileen-collins" / "original.png")
    (drop / "large").mkdir(parents=True)
    large = astronaut.convert("RGB").resize((2048, 2048), Image.Resampling.LANCZOS)
    (drop / "large" / "astronaut.jpg").write_bytes(_jpeg(large, 90))
    assert main(["ingest", str(drop), "--corpus", root, "--version", "v1"]) == 0
    steps = "facedetection,facecrop,faceprint,facematch"
    flags = ["--steps", steps, "--gallery", str(gallery), "--working-pixels", "300000"]
    assert run(["--corpus", root, "--version", "v1", *flags]).state == "DONE"

    (image,) = table_rows(root, schemas.IMAGES)
    assert (image["width"], image["height"]) == (2048, 2048)
    (face,) = image["facedetection"]["faces"]
    x, y = _centre(face)
    assert abs(x - 4 * 226) < 80 and abs(y - 4 * 120) < 100, (x, y)
    (crop,) = image["facecrop"]["crops"]
    box = face["box"]
    for point in crop["landmarks"]:  # eye corners and nose, in the file's pixels too
        assert box["left"] <= point["x"] <= box["right"], point
        assert box["top"] <= point["y"] <= box["bottom"], point
    (row,) = table_rows(root, FACES)
    assert row["person"] == "eileen-collins", row["distance"]


def test_a_small_face_in_a_wide_image_is_found_through_tiles(sample_run):
    """A face of 4.4 % of a 1600x900 image: too small for the whole-image pass."""
    astronaut = Image.open(os.path.join(sample_run["drop"], "people/astronaut/astronaut.png"))
    canvas = Image.new("RGB", (1600, 900), (120, 120, 120))
    canvas.paste(astronaut.convert("RGB").resize((400, 400)), (1150, 450))
    detector = blazeface.BlazeFace()
    loaded = detector.load()
    search = blazeface.face_search(canvas, blazeface.DEFAULT_MIN_FACE_FRACTION)
    whole_image = blazeface.FaceSearch(search.tiles[:1], search.pixels[:1], search.close_up)
    assert detector.predict(loaded, [whole_image]) == [[]]
    (faces,) = detector.predict(loaded, [search])
    assert len(faces) == 1
    left, top, right, bottom = faces[0].box
    # The face's centre in the 512 px original, (226, 121), scaled and moved.
    expected = (1150 + 226 * 400 / 512, 450 + 121 * 400 / 512)
    assert abs((left + right) / 2 - expected[0]) < 12 and abs((top + bottom) / 2 - expected[1]) < 12
