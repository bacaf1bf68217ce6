"""Ranked candidates, review margins, cluster rows and reviewers' decisions, unit by unit."""

import datetime

import apache_beam as beam
import numpy as np
import pytest

from beam_pipeline.report.data import Face, ReportData
from beam_pipeline.report.pages import candidate_faces
from transforms.tasks.faces import match
from transforms.tasks.faces.decisions import CONFIRM, REJECT, Decision, Reviewed, check_person
from transforms.tasks.faces.table import candidate_rows

ANN, BOB = np.zeros(128, np.float32), np.full(128, 0.1, np.float32)


def _row(face, person, verdict, minute, embedding=BOB):
    return {
        "face_id": face,
        "person": person,
        "verdict": verdict,
        "decided_at": datetime.datetime(2026, 1, 1, 12, minute, tzinfo=datetime.UTC),
        "embedding": list(embedding),
    }


def test_the_latest_confirmation_names_a_face_and_a_rejection_outranks_it():
    reviewed = Reviewed.from_rows(
        [
            _row("f1", "ann", CONFIRM, 1),
            _row("f1", "bob", CONFIRM, 2),  # a second thought: f1 is bob
            _row("f2", "ann", CONFIRM, 1),
            _row("f2", "ann", REJECT, 3),
            _row("f3", "cyd", REJECT, 1),
        ]
    )
    assert reviewed.confirmed == {"f1": "bob"}
    assert reviewed.rejected == {"f2": {"ann"}, "f3": {"cyd"}}
    assert [(person, face) for person, face, _ in reviewed.gallery_faces] == [("bob", "f1")]
    assert reviewed.person_of("f1", "ann") == "bob"
    assert reviewed.person_of("f3", "cyd") is None
    assert reviewed.person_of("f3", "dee") == "dee"
    assert reviewed.person_of("f9", None) is None


def test_a_decision_names_a_verdict_and_a_person_a_folder_could_have():
    with pytest.raises(ValueError, match="verdict"):
        Decision("f", "ann", "maybe", "me", [], "v1", "a.jpg")
    for bad in ("", " ann", "a/b", "..", "a\\b", "ann\n"):
        with pytest.raises(ValueError, match="name"):
            check_person(bad)
    check_person("Amina Yusuf")


def _gallery():
    return match.Gallery.from_faces([("ann", ANN), ("bob", BOB)])


def test_matches_follow_the_threshold_and_list_candidates_beyond_it():
    near_bob = np.full((1, 128), 0.13, np.float32)
    (found,) = match.match_faces(_gallery(), near_bob, ["f1"], 0.5, 5)
    assert found["person"] == "bob" and found["decision"] is None
    assert [c["person"] for c in found["candidates"]] == ["bob", "ann"]
    (far,) = match.match_faces(_gallery(), near_bob, ["f1"], 0.2, 5)
    assert far["person"] is None and far["distance"] == found["distance"]
    assert far["candidates"] == found["candidates"]  # leads whatever the threshold


def test_a_rejected_person_is_neither_the_match_nor_a_candidate():
    reviewed = Reviewed(rejected={"f1": frozenset({"bob"})})
    near_bob = np.full((1, 128), 0.13, np.float32)
    (found,) = match.match_faces(_gallery(), near_bob, ["f1"], 5.0, 5, reviewed)
    assert found["person"] == "ann"  # the next person within the (wide) threshold
    assert [c["person"] for c in found["candidates"]] == ["ann"]
    (other,) = match.match_faces(_gallery(), near_bob, ["f2"], 5.0, 5, reviewed)
    assert other["person"] == "bob"  # a decision is about one face only


def test_a_confirmed_face_joins_the_gallery_and_is_never_its_own_evidence():
    stranger = np.full(128, 2.0, np.float32)
    reviewed = Reviewed(confirmed={"f1": "cyd"}, gallery_faces=(("cyd", "f1", stranger),))
    gallery = _gallery().with_reviewed(reviewed)
    assert gallery.people == ("ann", "bob", "cyd")
    assert gallery.with_reviewed(reviewed).embeddings.shape == gallery.embeddings.shape
    faces = np.stack([stranger, stranger + 0.01])
    own, lookalike = match.match_faces(gallery, faces, ["f1", "f2"], 0.5, 5, reviewed)
    assert own["person"] == "cyd" and own["decision"] == match.CONFIRMED
    assert own["distance"] is None  # cyd has no other photo
    assert "cyd" not in [c["person"] for c in own["candidates"]]
    assert lookalike["person"] == "cyd" and lookalike["decision"] is None
    assert lookalike["distance"] == pytest.approx(0.01 * np.sqrt(128), rel=1e-3)


def test_candidate_rows_rank_from_one_and_mark_the_match():
    face = {
        "corpus_version": "v1",
        "source_path": "a.jpg",
        "face_index": 0,
        "face_id": "f1",
        "person": "bob",
        "candidates": [{"person": "bob", "distance": 0.3}, {"person": "ann", "distance": 0.7}],
    }
    rows = candidate_rows(face)
    assert [(r["rank"], r["person"], r["matched"]) for r in rows] == [
        (1, "bob", True),
        (2, "ann", False),
    ]
    assert candidate_rows({**face, "candidates": None}) == []


def test_cluster_rows_carry_size_and_the_nearest_gallery_person():
    unmatched = [
        ("f2", (np.full(128, 3.0), {"person": "ann", "distance": 0.9})),
        ("f1", (np.full(128, 3.01), {"person": "bob", "distance": 0.8})),
        ("f1", (np.full(128, 3.01), {"person": "bob", "distance": 0.8})),  # same bytes twice
        ("f7", (np.full(128, 9.0), None)),
    ]
    out = list(match._clusters(unmatched, 0.5))
    rows = [item.value for item in out if isinstance(item, beam.pvalue.TaggedOutput)]
    assert [item for item in out if isinstance(item, tuple)] == [
        ("f1", "f1"),
        ("f2", "f1"),
        ("f7", "f7"),
    ]
    assert rows == [
        {"cluster_id": "f1", "size": 2, "nearest_person": "bob", "distance": 0.8},
        {"cluster_id": "f7", "size": 1, "nearest_person": None, "distance": None},
    ]


def _face(face_id, person, lead_distance):
    return Face(
        face_id=face_id,
        image_sha256="ab",
        source_path=f"{face_id}.jpg",
        face_index=0,
        box={"left": 0, "top": 0, "right": 1, "bottom": 1},
        crop_uri=None,
        person=person,
        distance=lead_distance,
        confirmed=False,
        candidates=[("ann", lead_distance)],
        cluster_id=None if person else face_id,
    )


def test_candidates_are_unmatched_faces_within_the_margin_nearest_first():
    faces = [
        _face("matched", "ann", 0.3),
        _face("far", None, 0.7),
        _face("edge", None, 0.6),
        _face("near", None, 0.52),
    ]
    data = ReportData("root", "v1", {}, faces, [], [], [], 0.5, {}, {}, None, [], {})
    assert [face.face_id for face in candidate_faces(data, 0.1)] == ["near", "edge"]
    assert candidate_faces(data, 0.0) == []
    unmatched_run = ReportData("root", "v1", {}, faces, [], [], [], None, {}, {}, None, [], {})
    assert candidate_faces(unmatched_run, 0.1) == []
