"""Plain unit tests of the vision steps' pure functions: geometry, decoding, matching."""

import math

import numpy as np
import pytest
from PIL import Image

from transforms.records import ImageRecord, ManifestEntry
from transforms.tasks import classify, ocr, page_orientation
from transforms.tasks.faces import align, blazeface, match
from transforms.tasks.faces.detection import face_entries, face_id
from transforms.tasks.faces.table import face_rows


def test_classification_input_is_a_centre_crop_in_minus_one_to_one():
    image = Image.new("RGB", (400, 200), (255, 0, 127))
    image.paste((0, 0, 0), (0, 0, 100, 200))  # outside the centred 175 px square
    image.paste((0, 255, 0), (200, 0, 400, 200))  # the right half of the crop
    pixels = classify.preprocess(image)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert pixels[0, :, :100].mean() == pytest.approx(1.0, abs=0.01)  # red left half
    assert pixels[1, :, 124:].mean() == pytest.approx(1.0, abs=0.01)  # green right half
    assert (pixels[:, :, :100] > -0.99).any(axis=0).all()  # the black band was cropped away


def test_top_labels_are_sorted_and_named():
    probabilities = classify.softmax(np.array([0.0, 3.0, 1.0, 2.0]))
    assert probabilities.sum() == pytest.approx(1.0)
    labels = classify.top_labels(probabilities, ["a", "b", "c", "d"], 2)
    assert [label["label"] for label in labels] == ["b", "d"]
    assert labels[0]["score"] > labels[1]["score"]


class _Output:
    txts = ("HELLO", "  ", "faint")
    scores = (0.99, 0.9, 0.3)
    boxes = np.array([[[0, 0], [10, 0], [10, 5], [0, 5]]] * 3, dtype=np.float32)


def test_ocr_drops_weak_and_blank_lines():
    lines = ocr.text_lines(_Output(), min_score=0.5)
    assert [line.text for line in lines] == ["HELLO"]
    result = ocr.ocr_result(lines)
    assert result["text"] == "HELLO" and result["lines"][0]["box"][2] == {"x": 10.0, "y": 5.0}

    class _Nothing:
        txts = scores = boxes = None

    assert ocr.ocr_result(ocr.text_lines(_Nothing(), 0.5))["text"] == ""


@pytest.mark.parametrize("angle", [0, 90, 180, 270])
def test_points_of_the_upright_page_go_back_to_the_files_pixels(angle):
    # A 6x4 file whose pixel values are their (x, y): turned upright and back.
    file_pixels = np.stack(np.meshgrid(np.arange(6), np.arange(4)), axis=-1)
    turned = np.rot90(file_pixels, angle // 90)  # the file as it was turned
    upright = page_orientation.upright(turned, angle)
    assert (upright == file_pixels).all()
    height, width = turned.shape[:2]
    for x, y in [(0, 0), (5, 3), (2, 1)]:
        # The centre of upright pixel (x, y) lands on the centre of the same pixel of
        # the turned file.
        back = page_orientation.image_points(np.array([x + 0.5, y + 0.5]), angle, width, height)
        column, row = (np.floor(back)).astype(int)
        assert tuple(turned[row, column]) == (x, y), (angle, x, y)


def _line(text, score, tall, length=100.0):
    return page_orientation.ReadLine(np.zeros((4, 4, 3), np.uint8), text, score, length, tall)


def test_a_page_that_reads_well_is_not_read_again():
    def never(crops):
        raise AssertionError("read again")

    wide = [_line("a line of text", 0.97, False), _line("x", 0.3, None, 400.0)]
    assert page_orientation.page_angle(wide, never) == 0
    assert page_orientation.page_angle([_line("a tall line", 0.95, True)], never) == 270
    assert page_orientation.page_angle([_line("", 0.0, None)], never) == 0  # no line
    assert page_orientation.page_angle([_line("C000", 0.5, False)], never) == 0  # a word


def test_a_page_reads_turned_when_its_lines_read_better_half_round():
    def better(crops):
        return ["a line"] * len(crops), [0.97] * len(crops)

    def no_better(crops):
        return ["a line"] * len(crops), [0.6] * len(crops)

    upside_down = "ǝuıl ɐ sı sıɥʇ"
    assert page_orientation.page_angle([_line(upside_down, 0.55, False)], better) == 180
    assert page_orientation.page_angle([_line(upside_down, 0.55, True)], better) == 90
    assert page_orientation.page_angle([_line(upside_down, 0.55, False)], no_better) == 0
    assert page_orientation.page_angle([_line("a tall line", 0.85, True)], no_better) == 270


def test_a_lone_letter_or_an_unsure_word_is_no_text():
    box = [(0.0, 0.0)] * 4
    lone = [ocr.TextLine("7", 0.98, box), ocr.TextLine("C000", 0.75, box)]
    result = ocr.ocr_result(lone)
    assert result["has_text"] is False and result["text"] == ""
    assert [line["text"] for line in result["lines"]] == ["7", "C000"]  # kept, with scores
    sure = ocr.ocr_result([*lone, ocr.TextLine("YAMAHA", 0.87, box)])
    assert sure["has_text"] is True and sure["text"] == "7\nC000\nYAMAHA"
    assert ocr.ocr_result(lone, text_min_score=0.7)["has_text"] is True
    assert ocr.has_text([ocr.TextLine("ok", None, box)], 0.8)  # an API without scores


def test_anchors_cover_the_input_grid():
    anchors = blazeface.FULL_RANGE.anchors
    assert anchors.shape == (48 * 48, 2)
    assert anchors[0] == pytest.approx([0.5 / 48, 0.5 / 48])
    assert anchors[1] == pytest.approx([1.5 / 48, 0.5 / 48])  # x varies fastest


def test_short_range_anchors_keep_a_cells_anchors_together():
    anchors = blazeface.SHORT_RANGE.anchors
    assert anchors.shape == (16 * 16 * 2 + 8 * 8 * 6, 2)
    assert anchors[0] == pytest.approx([0.5 / 16, 0.5 / 16])
    assert anchors[1] == pytest.approx(anchors[0])
    assert anchors[2] == pytest.approx([1.5 / 16, 0.5 / 16])
    coarse = anchors[16 * 16 * 2 :]
    assert (coarse[:6] == coarse[0]).all() and coarse[6] == pytest.approx([1.5 / 8, 0.5 / 8])


def test_decode_places_boxes_and_keypoints_around_their_anchor():
    anchors = blazeface.FULL_RANGE.anchors
    regressors = np.zeros((len(anchors), 16), np.float32)
    logits = np.full(len(anchors), -10.0, np.float32)
    regressors[100, :4] = [9.6, -9.6, 38.4, 19.2]  # centre offset and size in input pixels
    regressors[100, 4:6] = [-9.6, 0.0]  # first keypoint
    logits[100] = 5.0
    points, scores = blazeface.decode(regressors, logits, blazeface.FULL_RANGE, min_score=0.5)
    assert len(points) == 1 and scores[0] == pytest.approx(1 / (1 + math.exp(-5)))
    centre = anchors[100] + [0.05, -0.05]
    assert points[0, 0] == pytest.approx(centre - [0.1, 0.05])
    assert points[0, 1] == pytest.approx(centre + [0.1, 0.05])
    assert points[0, 2] == pytest.approx(anchors[100] + [-0.05, 0.0])


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    keypoints = ((0.0, 0.0),) * 6
    merged = blazeface.weighted_nms(
        [
            blazeface.Detection((0, 0, 10, 10), keypoints, 0.9),
            blazeface.Detection((1, 1, 11, 11), keypoints, 0.9),
            blazeface.Detection((50, 50, 60, 60), keypoints, 0.8),
        ]
    )
    assert len(merged) == 2
    assert merged[0].box == pytest.approx((0.5, 0.5, 10.5, 10.5)) and merged[0].score == 0.9


def test_small_images_get_one_tile_and_large_ones_a_grid():
    assert len(blazeface.tiles(300, 200, blazeface.smallest_face(300, 200, 0.04))) == 1
    grid = blazeface.tiles(4000, 3000, blazeface.smallest_face(4000, 3000, 0.04))
    assert len(grid) > 7
    sides = sorted({round(tile.side) for tile in grid})
    assert sides[0] >= blazeface.INPUT_SIZE
    # Every point of the image lies in some tile of the finest level.
    finest = [tile for tile in grid if round(tile.side) == sides[0]]
    for x, y in [(0, 0), (3999, 2999), (2000, 1500), (3999, 0)]:
        assert any(t.left <= x <= t.left + t.side and t.top <= y <= t.top + t.side for t in finest)


def test_faces_cut_by_an_inner_tile_edge_are_left_to_the_neighbour():
    tile = blazeface.Tile(left=100, top=0, side=200, image_width=1000, image_height=200)
    assert tile.touches_inner_edge((101, 50, 150, 100), margin=3)  # left edge is inside
    assert tile.touches_inner_edge((250, 50, 299, 100), margin=3)  # so is the right one
    assert not tile.touches_inner_edge((150, 0, 200, 60), margin=3)  # top edge is the image's


@pytest.mark.parametrize("face_side", [80.0, 400.0])  # sampled directly; box-averaged first
def test_upright_face_undoes_roll_and_maps_points_back(face_side):
    image = Image.new("RGB", (1200, 1200), (90, 90, 90))
    centre = (600.0, 600.0)
    box = (600 - face_side / 2, 600 - face_side / 2, 600 + face_side / 2, 600 + face_side / 2)
    angle = math.radians(30)
    eye_gap = face_side / 4
    right_eye = (600 - eye_gap * math.cos(angle), 580 - eye_gap * math.sin(angle))
    left_eye = (600 + eye_gap * math.cos(angle), 580 + eye_gap * math.sin(angle))
    # A bright dot on the left eye, a few pixels wide so it survives shrinking.
    dot = round(face_side / 40) + 1
    x, y = round(left_eye[0]), round(left_eye[1])
    image.paste((255, 0, 0), (x - dot, y - dot, x + dot + 1, y + dot + 1))
    face = align.upright_face(image, box, right_eye, left_eye)
    side = face.pixels.shape[0]
    assert face.to_image(side / 2, side / 2) == pytest.approx(centre)
    # The dot lands on the region's horizontal through the eyes, right of centre...
    redness = np.clip(face.pixels[:, :, 0].astype(float) - face.pixels[:, :, 1], 0, None)
    rows, columns = np.indices(redness.shape) + 0.5  # pixel centres
    row = (rows * redness).sum() / redness.sum()
    column = (columns * redness).sum() / redness.sum()
    scale = 2 * face_side / side  # image pixels per region pixel
    # The eye line passes 20 px above the centre, so 20 cos(30°) from it.
    expected_row = side / 2 - 20 * math.cos(angle) / scale
    assert column > side / 2 and row == pytest.approx(expected_row, abs=0.5)
    # ...and maps back to where it was drawn.
    assert math.dist(face.to_image(column, row), (x + 0.5, y + 0.5)) <= 0.5 * scale
    left, top, right, bottom = face.face_box
    assert right - left == pytest.approx(side / 2, abs=1) and (left + right) / 2 == pytest.approx(
        side / 2, abs=1
    )


def test_face_ids_are_pure_and_faces_numbered_left_to_right():
    keypoints = ((0.0, 0.0),) * 6
    faces = face_entries(
        "ab" * 32,
        "detector",
        [
            blazeface.Detection((50, 0, 60, 10), keypoints, 0.9),
            blazeface.Detection((10, 0, 20, 10), keypoints, 0.8),
        ],
    )
    assert [face["box"]["left"] for face in faces] == [10, 50]
    assert faces[1]["face_id"] == face_id("ab" * 32, "detector", 1)
    assert len({face_id("ab" * 32, "detector", 0), faces[1]["face_id"]}) == 2
    # Other detector settings number faces differently, so they get other ids.
    assert face_id("ab" * 32, "other", 1) != faces[1]["face_id"]
    assert len(face_id("ab" * 32, "detector", 0)) == 32


def _gallery():
    return match.Gallery.from_faces(_gallery_faces())


def _gallery_faces():
    return [("bob", np.full(128, 0.1)), ("ann", np.zeros(128)), ("bob", np.full(128, 0.2))]


def _matched(gallery, faces, threshold, count):
    return match.match_faces(gallery, faces, [f"f{i}" for i in range(len(faces))], threshold, count)


def _ranked(found):
    return [(c["person"], c["distance"]) for c in found["candidates"]]


def test_nearest_person_within_threshold():
    gallery = _gallery()
    assert gallery.people == ("ann", "bob")
    near, far = _matched(gallery, np.stack([np.full(128, 0.19), np.full(128, 5.0)]), 0.5, 1)
    assert near["person"] == "bob"
    assert near["distance"] == pytest.approx(np.sqrt(128) * 0.01, rel=1e-4)
    assert far["person"] is None and far["distance"] > 0.5
    for found in _matched(match.Gallery.empty(), np.zeros((2, 128), np.float32), 0.5, 1):
        assert (found["person"], found["distance"], found["candidates"]) == (None, None, [])


def test_candidates_rank_every_person_by_their_nearest_photo_whatever_the_threshold():
    gallery = match.Gallery.from_faces(
        [*_gallery_faces(), ("cyd", np.full(128, 0.15)), ("dee", np.full(128, 3.0))]
    )
    faces = np.stack([np.full(128, 0.19), np.full(128, 5.0)]).astype(np.float32)
    ranked = [_ranked(found) for found in _matched(gallery, faces, 0.5, 3)]
    assert [name for name, _ in ranked[0]] == ["bob", "cyd", "ann"]  # bob's nearer photo
    assert ranked[0][0][1] == pytest.approx(np.sqrt(128) * 0.01, rel=1e-4)
    assert [name for name, _ in ranked[1]] == ["dee", "bob", "cyd"]  # far from all: still ranked
    for row in ranked:
        assert [d for _, d in row] == sorted(d for _, d in row)
    assert _ranked(_matched(gallery, faces, 0.5, 10)[0])[-1][0] == "dee"  # at most every person


def test_clusters_link_close_faces_and_are_named_by_their_smallest_id():
    rng = np.random.default_rng(1)
    person_a, person_b = rng.normal(size=128), rng.normal(size=128)
    embeddings = np.stack(
        [person_a, person_a + 0.01, person_b, person_b + 0.01, person_b - 0.01]
    ).astype(np.float32)
    clusters = match.cluster_faces(["f3", "f1", "f9", "f2", "f5"], embeddings, 0.5)
    assert clusters == {"f3": "f1", "f1": "f1", "f9": "f2", "f2": "f2", "f5": "f2"}


def test_gallery_lists_person_folders_only(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "1.jpg").write_bytes(b"x")
    (tmp_path / "ann" / "notes.txt").write_bytes(b"x")
    (tmp_path / "ann" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "loose.jpg").write_bytes(b"x")
    assert match.list_gallery(str(tmp_path)) == [("ann", str(tmp_path / "ann" / "1.jpg"))]


def test_face_rows_join_every_face_step():
    entry = ManifestEntry("p/a.jpg", "p", "a.jpg", "v1", "/c/a.jpg", "ab" * 32, 10)
    face = {
        "face_index": 0,
        "face_id": "id0",
        "box": {"left": 1.0, "top": 2.0, "right": 3.0, "bottom": 4.0},
        "keypoints": [],
        "score": 0.9,
    }
    record = ImageRecord(
        entry=entry,
        results={
            "facedetection": {"model": "det", "faces": [face]},
            "facecrop": {"crops": [{"face_index": 0, "uri": "/c/x.jpg", "landmarks": []}]},
            "faceprint": {
                "model": "emb",
                "embeddings": [{"face_index": 0, "embedding": [0.5] * 128}],
            },
            "facematch": {"matches": [{"face_index": 0, "person": None, "distance": 0.7}]},
        },
    )
    (row,) = face_rows(record, {"id0": "cluster-x"})
    assert (row["crop_uri"], row["embedding_model"], row["cluster_id"]) == (
        "/c/x.jpg",
        "emb",
        "cluster-x",
    )
    assert row["person"] is None and row["distance"] == 0.7 and row["source_path"] == "p/a.jpg"
    assert face_rows(ImageRecord(entry=entry), {}) == []


def test_the_text_detector_limit_grows_with_the_image_within_bounds():
    assert ocr.detector_limit(600, 386) == ocr.DETECTOR_SIDE  # and 600 is never magnified
    assert ocr.detector_limit(1200, 800) == math.ceil(1200 * ocr.MIN_DETECTOR_SCALE)
    assert ocr.detector_limit(4000, 3000) == ocr.LARGEST_SIDE


def test_each_tile_shows_the_part_of_the_image_it_stands_for():
    image = Image.new("RGB", (1600, 900), (60, 60, 60))
    image.paste((255, 255, 255), (1200, 500, 1240, 540))  # a 40 px white square
    search = blazeface.face_search(image, 0.03)
    assert len({tile.side for tile in search.tiles}) > 1
    holding = 0
    for tile, pixels in zip(search.tiles, search.pixels, strict=True):
        scale = blazeface.INPUT_SIZE / tile.side

        def at(x, y, tile=tile, pixels=pixels, scale=scale):
            column, row = round((x - tile.left) * scale), round((y - tile.top) * scale)
            inside = 0 <= column < blazeface.INPUT_SIZE and 0 <= row < blazeface.INPUT_SIZE
            return pixels[row, column] if inside else None

        if (centre := at(1220, 520)) is not None:
            holding += 1
            assert centre.min() > 200, tile
            for outside in (at(1170, 520), at(1290, 520), at(1220, 470), at(1220, 590)):
                assert outside is None or outside.max() < 100, tile
        if tile.top < 0:  # the letterbox above the whole image is black
            assert pixels[round(-tile.top * scale) - 2].max() == 0
    assert holding >= 2


@pytest.mark.parametrize("seed", range(5))
def test_the_tiles_of_every_level_reach_the_image_edges(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        width, height = (int(side) for side in rng.integers(400, 6001, size=2))
        fraction = float(rng.choice([0.01, 0.02, 0.03, 0.05]))
        grid = blazeface.tiles(width, height, blazeface.smallest_face(width, height, fraction))
        for side in {tile.side for tile in grid}:
            level = [tile for tile in grid if tile.side == side]
            assert min(tile.left for tile in level) <= 0 and min(t.top for t in level) <= 0
            assert max(tile.left + side for tile in level) >= width, (width, height, side)
            assert max(tile.top + side for tile in level) >= height, (width, height, side)
            assert not any(
                tile.touches_inner_edge((width - 5, height - 5, width, height), margin=1)
                for tile in level
                if tile.left + side >= width and tile.top + side >= height
            )


def test_ocr_engine_is_checked_before_the_run(monkeypatch):
    with pytest.raises(ValueError, match="--ocr-engine must be one of"):
        ocr.OcrSettings(engine="tesseract")
    monkeypatch.setattr(ocr, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'imaginem-beam\[openvino\]'"):
        ocr.OcrSettings(engine="openvino")
