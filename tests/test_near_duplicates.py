"""The `phash` step and the `duplicates` table: which images group, on generated sets
and through runs of several versions."""

import io
import json
import os

import pytest
from PIL import Image

from beam_pipeline.cli import main
from bench.near_duplicates import COPIES, copies, hashed, same_scene_pairs, sample_photos
from tests.corpus_files import table_rows
from transforms.tables import delta, schemas
from transforms.tables.duplicates import HashedFile, group_rows
from transforms.tasks.phash import DEFAULT_MAX_DISTANCE, perceptual_hashes

ONES = (1 << 64) - 1


def _file(version, path, content, value, mirrored=0):
    return HashedFile(version, path, content, value, mirrored)


def test_a_file_kept_from_version_to_version_is_no_duplicate_of_itself():
    files = [_file("v1", "a.jpg", "A", 0), _file("v2", "a.jpg", "A", 0)]
    assert group_rows(files, 10, False) == []


def test_the_same_bytes_under_two_paths_of_a_version_are_duplicates():
    files = [_file("v1", "b/a.jpg", "A", 0), _file("v1", "a/a.jpg", "A", 0)]
    rows = group_rows(files, 10, False)
    assert [(row["source_path"], row["distance"], row["group_id"]) for row in rows] == [
        ("a/a.jpg", 0, "A"),
        ("b/a.jpg", 0, "A"),
    ]


def test_a_chain_of_close_copies_is_one_group_measured_from_its_first_image():
    # a-b and b-c are 8 bits apart, a-c 16: single linkage joins all three.
    files = [
        _file("v2", "c.jpg", "C", 0xFFFF),
        _file("v1", "a.jpg", "A", 0),
        _file("v1", "b.jpg", "B", 0xFF),
        _file("v1", "far.jpg", "F", ONES),
    ]
    rows = group_rows(files, 10, False)
    assert {row["group_id"] for row in rows} == {"A"}  # v1/a.jpg sorts first
    assert {(row["corpus_version"], row["source_path"]): row["distance"] for row in rows} == {
        ("v1", "a.jpg"): 0,
        ("v1", "b.jpg"): 8,
        ("v2", "c.jpg"): 16,
    }


def test_a_mirrored_copy_groups_only_when_asked():
    files = [_file("v1", "a.jpg", "A", 0, mirrored=ONES), _file("v1", "m.jpg", "M", ONES, 0)]
    assert group_rows(files, 10, False) == []
    assert {row["distance"] for row in group_rows(files, 10, True)} == {0}


def test_the_hash_of_the_mirror_is_the_mirrored_hash():
    image = sample_photos()["chelsea.png"]
    digest, mirrored = perceptual_hashes(image)
    assert perceptual_hashes(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))[0] == mirrored
    assert digest != mirrored


@pytest.fixture(scope="module")
def photos():
    everything = sample_photos()
    return {name: everything[name] for name in ("astronaut.png", "coffee.png", "china.jpg")}


def test_copies_group_with_their_photo_and_different_photos_do_not(photos):
    """Resized, re-encoded, cropped 2-4 % and EXIF-rotated copies (decoded as a run
    decodes them) group with their original; nothing joins two photos."""
    files = [hashed(photo) for name, image in photos.items() for photo in copies(name, image)]
    files = [
        file
        for file in files
        if "#" not in file.source_path or file.source_path.split("#")[1] in COPIES
    ]
    group_of = {
        row["source_path"]: row["group_id"]
        for row in group_rows(files, DEFAULT_MAX_DISTANCE, False)
    }
    for name in photos:
        assert {group_of[f"{name}#{kind}"] for kind in COPIES} == {group_of[name]}, name
    assert len({group_of[name] for name in photos}) == len(photos)


def test_the_same_scene_reframed_is_not_a_duplicate(photos):
    pans = [pair for pair in same_scene_pairs(photos) if "stereo" not in pair[0].name]
    for left, right in pans:
        assert group_rows([hashed(left), hashed(right)], DEFAULT_MAX_DISTANCE, False) == [], left


def _jpeg(image, **params):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **params)
    return buffer.getvalue()


def _drop(folder, files):
    for path, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
        with open(os.path.join(folder, path), "wb") as handle:
            handle.write(data)
    return folder


def _run(root, version, summary, *extra):
    argv = ["run", "--corpus", root, "--version", version, "--steps", "phash"]
    assert main([*argv, "--summary-json", summary, *extra]) == 0
    with open(summary, encoding="utf-8") as handle:
        return json.load(handle)


def test_runs_group_near_duplicates_across_sets_and_versions(photos, tmp_path):
    astronaut, coffee = photos["astronaut.png"], photos["coffee.png"]
    root, summary = str(tmp_path / "corpus"), str(tmp_path / "summary.json")
    first = _drop(
        str(tmp_path / "drop1"),
        {"people/astronaut.jpg": _jpeg(astronaut, quality=95), "food/coffee.jpg": _jpeg(coffee)},
    )
    assert main(["ingest", first, "--corpus", root, "--version", "v1"]) == 0
    assert _run(root, "v1", summary)["duplicate_groups"] == 0

    cropped = astronaut.crop((10, 10, astronaut.width - 10, astronaut.height - 10))
    small = cropped.resize((cropped.width // 3, cropped.height // 3))
    second = _drop(str(tmp_path / "drop2"), {"scans/astronaut-small.jpg": _jpeg(small, quality=40)})
    assert main(["ingest", second, "--corpus", root, "--version", "v2"]) == 0
    record = _run(root, "v2", summary)
    assert record["duplicate_groups"] == 1
    assert record["tables"][schemas.DUPLICATES] == 2
    rows = table_rows(root, schemas.DUPLICATES)
    assert {(row["corpus_version"], row["source_path"]) for row in rows} == {
        ("v1", "people/astronaut.jpg"),
        ("v2", "scans/astronaut-small.jpg"),
    }
    first_image, copy = sorted(rows, key=lambda row: row["corpus_version"])
    assert {row["group_id"] for row in rows} == {first_image["image_sha256"]}
    assert first_image["distance"] == 0 < copy["distance"] <= DEFAULT_MAX_DISTANCE

    # Grouping again finds the same groups: no commit, hashes reused.
    where = delta.location(root, schemas.DUPLICATES)
    commits = len(delta.history(where))
    record = _run(root, "v2", summary)
    assert record["steps"]["phash"]["reused"] == 1
    assert len(delta.history(where)) == commits

    # The report of v2 shows the group, with the copy in v1 and both pictures.
    out = str(tmp_path / "report")
    assert main(["report", "--corpus", root, "--version", "v2", "--out", out]) == 0
    with open(os.path.join(out, "duplicates.html"), encoding="utf-8") as handle:
        page = handle.read()
    assert "1 group of near-duplicates" in page
    assert "people/astronaut.jpg <span class=note>(version v1)</span>" in page
    assert f"{copy['distance']} bits from the first" in page
    for row in rows:
        assert os.path.exists(os.path.join(out, "media", "images", f"{row['image_sha256']}.jpg"))

    # A stricter threshold splits the group, in one commit.
    stricter = str(copy["distance"] - 1)
    assert _run(root, "v2", summary, "--phash-max-distance", stricter)["duplicate_groups"] == 0
    assert table_rows(root, schemas.DUPLICATES) == []
    assert len(delta.history(where)) == commits + 1


def test_a_run_without_phash_drops_the_group_of_a_file_that_left(photos, tmp_path):
    """Its rows leave `images`, so the table is grouped again, as it last was."""
    coffee = photos["coffee.png"]
    root, summary = str(tmp_path / "corpus"), str(tmp_path / "summary.json")
    drop = _drop(
        str(tmp_path / "drop"),
        {"a/coffee.jpg": _jpeg(coffee), "b/coffee-small.jpg": _jpeg(coffee.resize((300, 200)))},
    )
    assert main(["ingest", drop, "--corpus", root, "--version", "v1"]) == 0
    assert _run(root, "v1", summary, "--phash-max-distance", "6")["duplicate_groups"] == 1
    manifest = delta.location(root, schemas.MANIFEST)
    delta.delete(manifest, "source_path = 'b/coffee-small.jpg'")  # the file left v1
    argv = ["run", "--corpus", root, "--version", "v1", "--steps", "thumbnail"]
    assert main(argv) == 0
    assert table_rows(root, schemas.DUPLICATES) == []
    (latest, *_) = delta.history(delta.location(root, schemas.DUPLICATES))
    assert latest[f"{delta.COMMIT_KEY}.grouping.max_distance"] == "6"


def test_a_bad_threshold_fails_before_the_pipeline_starts(tmp_path, capsys):
    argv = ["run", "--corpus", str(tmp_path), "--version", "v1", "--steps", "phash"]
    assert main([*argv, "--phash-max-distance", "40"]) == 2
    assert "--phash-max-distance must be 0-16" in capsys.readouterr().err
