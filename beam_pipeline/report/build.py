"""`imaginem report`: a static HTML site of what a version's run found, to review.

The folder holds everything it shows (pages, face chips, thumbnails, gallery
photos) and loads nothing from anywhere else. It is created readable by its owner
only: face chips and photos are personal data.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import sys

from tqdm import tqdm

from beam_pipeline.report import assets, media, pages
from beam_pipeline.report.data import ReportData, load
from transforms import paths
from transforms.io.storage import absolute_root
from transforms.tasks.faces.match import GalleryError

DEFAULT_MARGIN = 0.1
MARKER = ".imaginem-report"  # a folder with it is a report, which a new one replaces


class ReportError(ValueError):
    """A report that cannot be written; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Written:
    pages: int
    pictures: int
    missing_pictures: int


def prepare_folder(out: str) -> None:
    """Creates the report folder, private to its owner, or clears an earlier report's
    pages from it (pictures stay: their names are their content's).

    Raises:
        ReportError: the folder holds other files.
    """
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, MARKER)):
        raise ReportError(f"{out} is not empty and holds no report: choose a new or empty folder")
    os.makedirs(out, exist_ok=True)
    os.chmod(out, 0o700)  # also when the folder was there: no one else may enter it
    open(os.path.join(out, MARKER), "w").close()
    folder = glob.escape(out)
    for old in glob.glob(os.path.join(folder, "*.html")) + glob.glob(f"{folder}/data/*.js"):
        os.remove(old)


def _pictures(data: ReportData) -> list[media.Picture]:
    wanted = [
        _image_picture(image.image_sha256, image.uri, image.thumbnail_uri)
        for image in data.images.values()
    ]
    # Copies in other versions: the version's own thumbnail of the same bytes first.
    shown = {image.image_sha256 for image in data.images.values()}
    for group in data.duplicates:
        for copy in group.copies:
            if copy.uri and copy.image_sha256 not in shown:
                shown.add(copy.image_sha256)
                wanted.append(_image_picture(copy.image_sha256, copy.uri, copy.thumbnail_uri))
    for face in data.faces:
        path = pages.chip_path(face)
        if face.crop_uri:
            wanted.append(media.Picture(path, face.crop_uri, copy=True))
        else:
            box = tuple(face.box[side] for side in ("left", "top", "right", "bottom"))
            uri = data.images[face.source_path].uri
            wanted.append(media.Picture(path, uri, copy=False, box=box, side=media.CHIP_SIDE))
    for photos in data.gallery.values():
        wanted.append(media.Picture(pages.gallery_path(photos[0]), photos[0], copy=False))
    return wanted


def _image_picture(image_sha256: str, uri: str, thumbnail_uri: str | None) -> media.Picture:
    """The run's thumbnail of an image, or one made from the image."""
    path = pages.image_picture_path(image_sha256)
    if thumbnail_uri:
        return media.Picture(path, thumbnail_uri, copy=True)
    return media.Picture(path, uri, copy=False)


def _references(data: ReportData, have: set[str]) -> dict[str, str]:
    """The picture that shows who each person is: a gallery photo, or else one of
    the faces a reviewer confirmed (or matched) as them."""
    references = {}
    for face in sorted(data.faces, key=lambda face: not face.confirmed):
        if face.person and pages.chip_path(face) in have:
            references.setdefault(face.person, pages.chip_path(face))
    for person, photos in data.gallery.items():
        if pages.gallery_path(photos[0]) in have:
            references[person] = pages.gallery_path(photos[0])
    return references


def write_report(data: ReportData, out: str, margin: float = DEFAULT_MARGIN) -> Written:
    prepare_folder(out)
    numbers = {person: number for number, person in enumerate(data.people(), start=1)}
    wanted = _pictures(data)
    unique = len({picture.path for picture in wanted})
    bar = tqdm(total=unique, unit="picture", desc="report", disable=None, file=sys.stderr)
    with bar:
        have = media.write_pictures(out, wanted, lambda: bar.update(1))
    site = pages.Site(data, frozenset(have), _references(data, have), numbers)
    written = 0
    for name, content in [
        *pages.all_pages(site, margin),
        ("style.css", assets.STYLE),
        ("images.js", assets.IMAGES_SCRIPT),
    ]:
        target = os.path.join(out, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as file:
            file.write(content)
        written += name.endswith(".html")
    return Written(written, len(have), unique - len(have))


def report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imaginem report",
        description="Write a static HTML report of a version to review: overview and "
        "errors, people with their matched faces, near-miss candidates, clusters of "
        "unknown faces, and images to filter by set, tag, label and text. It opens from "
        "the folder, loads nothing from elsewhere, and holds face chips and photos: keep "
        "it private.",
    )
    parser.add_argument("--corpus", required=True, help="corpus root: a folder or a Beam URI")
    parser.add_argument("--version", required=True, help="the version to report on")
    parser.add_argument("--out", required=True, help="local folder to write the report to")
    parser.add_argument(
        "--gallery",
        metavar="DIR",
        help="the gallery the run matched against, to show each person's photo",
    )
    parser.add_argument(
        "--review-margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="faces matched to no one but within this distance beyond the threshold of a "
        "gallery person are shown as candidates (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        root = absolute_root(args.corpus)
        paths.check_version(args.version)
        if not 0 <= args.review_margin < 2:
            raise ReportError(f"--review-margin must be 0-2, got {args.review_margin}")
        data = load(root, args.version, args.gallery and absolute_root(args.gallery))
        if not data.images:
            raise ReportError(
                f"version {args.version} of {root} has no images in its tables: run "
                "`imaginem run` on it first"
            )
        written = write_report(data, args.out, args.review_margin)
    except (ValueError, GalleryError) as error:
        parser.error(str(error))
    print(
        f"Wrote a report of {len(data.images)} images and {len(data.faces)} faces to "
        f"{args.out}: {written.pages} pages, {written.pictures} pictures"
        + (f" ({written.missing_pictures} could not be read)" if written.missing_pictures else "")
    )
    print(f"Open {os.path.join(os.path.abspath(args.out), 'index.html')} in a browser.")
    print("It holds face chips and photos: keep the folder private (README: Reviewing).")
    return 0
