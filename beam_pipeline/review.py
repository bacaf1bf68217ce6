"""`imaginem review`: record a reviewer's decisions about faces.

`confirm` and `reject` take face ids (the report shows them with each face, ready to
copy), `name` a cluster of the version; `list` prints what was decided. Decisions
apply to the report at once and to matches from the next run of `facematch`
(`imaginem run --steps facematch`), which runs no model.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Sequence

import pyarrow.dataset as pads

from transforms import paths
from transforms.io.storage import absolute_root
from transforms.tables import delta, schemas
from transforms.tasks.faces.decisions import (
    CONFIRM,
    REJECT,
    Decision,
    check_person,
    read_decisions,
    read_reviewed,
    record,
)

_FACE_COLUMNS = ("face_id", "corpus_version", "source_path", "cluster_id", "embedding")


class ReviewError(ValueError):
    """A decision that cannot be recorded; the message says why."""


def _faces(corpus_root: str, where: pads.Expression) -> list[dict]:
    table = delta.location(corpus_root, schemas.FACES)
    if not delta.exists(table):
        raise ReviewError(f"{corpus_root} has no faces table yet: run the face steps first")
    return delta.read(table, columns=_FACE_COLUMNS, filter=where).to_pylist()


def faces_by_id(corpus_root: str, face_ids: Sequence[str], version: str | None) -> list[dict]:
    """One `faces` row per id, with its embedding: from `version` if given, else any.

    Raises:
        ReviewError: an id that is in no version, or whose face has no embedding.
    """
    face_ids = list(dict.fromkeys(face_ids))  # a face named twice is decided once
    wanted = pads.field("face_id").isin(face_ids)
    if version:
        wanted &= delta.version_filter(version)
    found: dict[str, dict] = {}
    for row in sorted(_faces(corpus_root, wanted), key=lambda row: row["corpus_version"]):
        if row["embedding"] is not None:
            found.setdefault(row["face_id"], row)
    if missing := [face for face in face_ids if face not in found]:
        where = f"version {version}" if version else "any version"
        raise ReviewError(
            f"no embedded face with id {', '.join(missing)} in {where} of the faces table "
            "(ids are in the report and the faces table's face_id column; a face needs the "
            "faceprint step)"
        )
    return [found[face] for face in face_ids]


def cluster_faces(corpus_root: str, version: str, cluster_id: str) -> list[dict]:
    """The faces of one cluster of a version.

    Raises:
        ReviewError: no such cluster (clusters change when the faces or gallery do).
    """
    where = delta.version_filter(version) & (pads.field("cluster_id") == cluster_id)
    # An image at two paths shows its faces twice: one decision each.
    unique = {row["face_id"]: row for row in _faces(corpus_root, where)}
    faces = [row for row in unique.values() if row["embedding"] is not None]
    if not faces:
        raise ReviewError(
            f"version {version} has no cluster {cluster_id}: clusters change when faces or "
            "the gallery change, so take the id from a report of the version's latest run"
        )
    return sorted(faces, key=lambda row: (row["source_path"], row["face_id"]))


def _decisions(rows: list[dict], person: str, verdict: str, reviewer: str, cluster: str | None):
    return [
        Decision(
            face_id=row["face_id"],
            person=person,
            verdict=verdict,
            reviewer=reviewer,
            embedding=row["embedding"],
            corpus_version=row["corpus_version"],
            source_path=row["source_path"],
            cluster_id=cluster,
        )
        for row in rows
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imaginem review",
        description="Record what a reviewer decided about faces. Decisions hold for a face "
        "in every version, show in the next report, and change matches from the next run "
        "of facematch (imaginem run --steps facematch), which runs no model.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help, description=help)
        sub.add_argument("--corpus", required=True, help="corpus root: a folder or a Beam URI")
        return sub

    for name, help in (
        (CONFIRM, "these faces are PERSON: they join the gallery as photos of them"),
        (REJECT, "these faces are not PERSON: never shown as a match or lead for them again"),
    ):
        sub = action(name, help)
        sub.add_argument("face_ids", nargs="+", metavar="FACE_ID")
        sub.add_argument("--person", required=True)
        sub.add_argument("--version", help="look the faces up in this version only")
        sub.add_argument("--reviewer", default=None, help="who decides (default: your login)")
    sub = action("name", "every face of this cluster is PERSON (a confirmation per face)")
    sub.add_argument("cluster_id", metavar="CLUSTER_ID")
    sub.add_argument("--version", required=True, help="the version whose clusters are meant")
    sub.add_argument("--person", required=True)
    sub.add_argument("--reviewer", default=None, help="who decides (default: your login)")
    action("list", "print every decision, newest first")
    return parser


def review(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        root = absolute_root(args.corpus)
        if getattr(args, "version", None):
            paths.check_version(args.version)
        if args.action == "list":
            _print_decisions(root)
            return 0
        check_person(args.person)
        reviewer = args.reviewer or getpass.getuser()
        skipped = 0
        if args.action == "name":
            faces = cluster_faces(root, args.version, args.cluster_id)
            # The cluster is as the last run left it: a face decided since keeps its decision.
            decided = read_reviewed(root)
            undecided = [
                face
                for face in faces
                if face["face_id"] not in decided.confirmed
                and face["face_id"] not in decided.rejected
            ]
            skipped = len(faces) - len(undecided)
            decisions = _decisions(undecided, args.person, CONFIRM, reviewer, args.cluster_id)
        else:
            faces = faces_by_id(root, args.face_ids, args.version)
            decisions = _decisions(faces, args.person, args.action, reviewer, None)
    except ValueError as error:
        parser.error(str(error))
    count = record(root, decisions, args.action) if decisions else 0
    verb = {CONFIRM: "is", REJECT: "is not"}.get(args.action, "is")
    print(f"Recorded {count} decision(s) by {reviewer}: {count} face(s) {verb} {args.person}.")
    if skipped:
        print(f"{skipped} face(s) of the cluster already had a decision and keep it.")
    print(
        "The report shows them now; matches change at the next run of facematch "
        "(imaginem run ... --steps facematch, which runs no model)."
    )
    return 0


def _print_decisions(root: str) -> None:
    rows = read_decisions(root)
    for row in rows:
        when = row["decided_at"].strftime("%Y-%m-%d %H:%M")
        via = f" (cluster {row['cluster_id']})" if row["cluster_id"] else ""
        print(
            f"{when}  {row['reviewer']:<12} {row['verdict']:<7} {row['person']:<20} "
            f"{row['face_id']}  {row['corpus_version']}:{row['source_path']}{via}"
        )
    print(f"{len(rows)} decision(s)")
