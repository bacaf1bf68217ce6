"""Reviewing a run: ranked candidates and clusters in their tables, the report, and
decisions that change matches at the next run without any model running again.

The drop: edited copies of the sample astronaut (in the gallery as eileen-collins)
and of the cameraman (in no gallery): his faces form a cluster whose nearest lead
is eileen-collins, well beyond the threshold."""

import os

import pytest
from PIL import Image

from beam_pipeline.cli import main
from beam_pipeline.run import run
from beam_pipeline.summary import step_counters
from tests import browser
from tests.corpus_files import table_rows
from transforms.corpus.sample import build_sample_corpus
from transforms.tables import schemas

MODEL_STEPS = ("facedetection", "facecrop", "faceprint")
STEPS = "thumbnail,facedetection,facecrop,faceprint,facematch"


def _faces(root, version="v1"):
    return {row["source_path"]: row for row in table_rows(root, schemas.FACES, version)}


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    base = tmp_path_factory.mktemp("review")
    sample, drop, gallery = base / "sample", base / "drop", base / "gallery"
    build_sample_corpus(str(sample))
    astronaut = Image.open(sample / "people/astronaut/astronaut.png").convert("RGB")
    camera = Image.open(sample / "people/photographer/camera.png").convert("RGB")
    (gallery / "eileen-collins").mkdir(parents=True)
    astronaut.save(gallery / "eileen-collins" / "original.png")
    for name, image in {
        "astronaut/flipped.png": astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "astronaut/half.png": astronaut.resize((256, 256)),
        "cameraman/original.png": camera,
        "cameraman/flipped.png": camera.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    }.items():
        (drop / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(drop / name)
    root = str(base / "corpus")
    assert main(["ingest", str(drop), "--corpus", root, "--version", "v1"]) == 0
    flags = ["--corpus", root, "--version", "v1", "--steps", STEPS, "--gallery", str(gallery)]
    assert run(flags).state == "DONE"
    return {"base": base, "root": root, "gallery": str(gallery), "flags": flags, "camera": camera}


def test_candidates_and_clusters_tables(traced):
    root = traced["root"]
    faces = _faces(root)
    candidates = table_rows(root, schemas.CANDIDATES, "v1")
    # One lead per face: the gallery has one person.
    assert sorted((row["source_path"], row["rank"]) for row in candidates) == [
        (path, 1) for path in sorted(faces)
    ]
    for row in candidates:
        face = faces[row["source_path"]]
        assert row["person"] == "eileen-collins" and row["face_id"] == face["face_id"]
        assert row["matched"] == (face["person"] == "eileen-collins")
        assert row["distance"] == pytest.approx(face["distance"])
    (cluster,) = table_rows(root, schemas.CLUSTERS, "v1")
    cameraman = [faces[f"cameraman/{name}.png"] for name in ("original", "flipped")]
    assert {face["cluster_id"] for face in cameraman} == {cluster["cluster_id"]}
    assert cluster["size"] == 2 and cluster["nearest_person"] == "eileen-collins"
    assert cluster["distance"] == pytest.approx(min(face["distance"] for face in cameraman))
    assert cluster["distance"] > 0.5


def _report(traced, name, *flags):
    out = str(traced["base"] / name)
    argv = ["report", "--corpus", traced["root"], "--version", "v1", "--out", out]
    assert main([*argv, "--gallery", traced["gallery"], *flags]) == 0
    return out


def _read(out, page):
    with open(os.path.join(out, page), encoding="utf-8") as file:
        return file.read()


@pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
def test_the_report_shows_near_misses_and_clusters_and_every_picture_loads(traced):
    faces = _faces(traced["root"])
    cluster_id = faces["cameraman/original.png"]["cluster_id"]
    out = _report(traced, "report-wide", "--review-margin", "0.5")
    candidates = _read(out, "candidates.html")
    for path in ("cameraman/original.png", "cameraman/flipped.png"):
        assert faces[path]["face_id"] in candidates
    assert cluster_id in _read(out, "clusters.html")
    assert "imaginem review name" in _read(out, "clusters.html")
    # A narrow margin leaves far leads out.
    narrow = _report(traced, "report-narrow", "--review-margin", "0.01")
    assert faces["cameraman/original.png"]["face_id"] not in _read(narrow, "candidates.html")
    with browser.chromium() as chromium:
        for page in ("candidates.html", "clusters.html", "people.html", "person-1.html"):
            loaded = browser.open_page(chromium, out, page)
            assert loaded["total"] >= 2 and loaded["broken"] == [], (page, loaded)


def test_a_report_never_overwrites_a_folder_of_other_files(traced, capsys):
    other = traced["base"] / "not-a-report"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    argv = ["report", "--corpus", traced["root"], "--version", "v1", "--out", str(other)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "not empty and holds no report" in capsys.readouterr().err
    assert os.listdir(other) == ["notes.txt"]


def test_review_refuses_unknown_faces_clusters_and_names(traced, capsys):
    root = traced["root"]
    for argv, message in (
        (["confirm", "--person", "x", "feedface"], "no embedded face with id feedface"),
        (["name", "--version", "v1", "--person", "x", "nocluster"], "has no cluster nocluster"),
        (["confirm", "--person", "a/b", "feedface"], "a person's name"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["review", argv[0], "--corpus", root, *argv[1:]])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    assert table_rows(root, schemas.DECISIONS) == []


def test_decisions_change_matches_at_the_next_run_without_any_model(traced, capsys):
    root, flags = traced["root"], traced["flags"]
    faces = _faces(root)
    cluster_id = faces["cameraman/original.png"]["cluster_id"]
    flipped_astronaut = faces["astronaut/flipped.png"]
    review = ["review", "name", "--corpus", root, "--version", "v1", "--reviewer", "ana"]
    assert main([*review, "--person", "photographer", cluster_id]) == 0
    reject = ["review", "reject", "--corpus", root, "--reviewer", "ana"]
    assert main([*reject, "--person", "eileen-collins", flipped_astronaut["face_id"]]) == 0
    decisions = table_rows(root, schemas.DECISIONS)
    assert sorted((d["verdict"], d["person"], d["reviewer"]) for d in decisions) == [
        ("confirm", "photographer", "ana"),
        ("confirm", "photographer", "ana"),
        ("reject", "eileen-collins", "ana"),
    ]
    assert all(d["decided_at"] is not None and len(d["embedding"]) == 128 for d in decisions)
    # Naming it again changes nothing: its faces are decided; a face named twice is one row.
    capsys.readouterr()
    assert main([*review, "--person", "someone-else", cluster_id]) == 0
    assert "2 face(s) of the cluster already had a decision" in capsys.readouterr().out
    again = flipped_astronaut["face_id"]
    assert main([*reject, "--person", "eileen-collins", again, again]) == 0
    assert len(table_rows(root, schemas.DECISIONS)) == 3

    # The report shows the decisions at once.
    out = _report(traced, "report-decided")
    people = _read(out, "people.html")
    assert "photographer" in people and "named by a reviewer" in people
    assert cluster_id not in _read(out, "clusters.html")
    assert flipped_astronaut["face_id"] not in _read(out, "person-1.html")  # eileen-collins

    # The next run of facematch applies them, and runs no model.
    result = run([*flags, "--steps", "facematch"])
    counters = step_counters(result)
    for step in MODEL_STEPS:
        assert counters[step].get("processed", 0) == 0, step
    faces = _faces(root)
    for name in ("original", "flipped"):
        face = faces[f"cameraman/{name}.png"]
        assert (face["person"], face["decision"], face["cluster_id"]) == (
            "photographer",
            "confirmed",
            None,
        )
        # The other cameraman face, now in the gallery, is the evidence.
        assert face["distance"] < 0.5
    astronaut = faces["astronaut/flipped.png"]
    assert astronaut["person"] is None and astronaut["decision"] is None
    assert "eileen-collins" not in [c["person"] for c in astronaut["candidates"]]
    assert faces["astronaut/half.png"]["person"] == "eileen-collins"
    assert table_rows(root, schemas.CLUSTERS, "v1") == [
        {
            "corpus_version": "v1",
            "cluster_id": astronaut["face_id"],
            "size": 1,
            "nearest_person": "photographer",
            "distance": pytest.approx(astronaut["candidates"][0]["distance"]),
        }
    ]

    # They survive re-clustering (another threshold) and hold in a new version, where
    # a new photo of the named man matches him through the faces a reviewer confirmed.
    drop = traced["base"] / "drop-v2"
    (drop / "cameraman").mkdir(parents=True)
    traced["camera"].resize((300, 300)).save(drop / "cameraman" / "smaller.png")
    traced["camera"].save(drop / "cameraman" / "original.png")
    assert main(["ingest", str(drop), "--corpus", root, "--version", "v2"]) == 0
    v2 = [*flags[:2], "--version", "v2", *flags[4:], "--match-threshold", "0.45"]
    assert run(v2).state == "DONE"
    faces = _faces(root, "v2")
    assert faces["cameraman/original.png"]["decision"] == "confirmed"
    smaller = faces["cameraman/smaller.png"]
    assert (smaller["person"], smaller["decision"]) == ("photographer", None)
    capsys.readouterr()
    assert main(["review", "list", "--corpus", root]) == 0
    listed = capsys.readouterr().out
    assert "3 decision(s)" in listed and f"(cluster {cluster_id})" in listed
