"""The report's HTML pages: plain files that link each other and the pictures beside
them, so the folder works opened from disk or served by any static host.

Long lists are split into numbered pages; the images page filters in the browser
over a data file loaded by a script tag (browsers refuse `fetch` on disk files).
The content security policy lets a page load nothing but files of its own folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
import shlex
from collections import Counter
from collections.abc import Iterator, Sequence

from beam_pipeline.report.data import STEP_ORDER, Copy, Face, ReportData

FACES_PER_PAGE = 100
CLUSTERS_PER_PAGE = 40
CHIPS_PER_CLUSTER = 24
GROUPS_PER_PAGE = 40
CHIPS_PER_PERSON = 8  # on the people page; every face is on the person's own pages
ERRORS_PER_PAGE = 200
IMAGES_DATA = "data/images.js"

NAV = (
    ("index.html", "Overview"),
    ("people.html", "People"),
    ("candidates.html", "Candidates"),
    ("clusters.html", "Clusters"),
    ("duplicates.html", "Duplicates"),
    ("images.html", "Images"),
    ("errors.html", "Errors"),
)
_POLICY = (
    "default-src 'none'; img-src 'self' file:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' file:"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def chip_path(face: Face) -> str:
    return f"media/faces/{face.face_id}.jpg"


def image_picture_path(image_sha256: str) -> str:
    return f"media/images/{image_sha256}.jpg"


def gallery_path(photo_uri: str) -> str:
    """Named by the photo, not the person's place in a list that changes between reports."""
    return f"media/gallery/{hashlib.sha256(photo_uri.encode()).hexdigest()[:32]}.jpg"


def page_name(base: str, number: int) -> str:
    """`base.html` for the first page, `base-N.html` for page N."""
    return f"{base}.html" if number == 1 else f"{base}-{number}.html"


@dataclasses.dataclass(frozen=True)
class Site:
    """What every page needs besides its own content."""

    data: ReportData
    pictures: frozenset[str]  # media paths that exist
    reference: dict[str, str]  # person -> the picture that shows who they are
    numbers: dict[str, int]  # person -> the number of their pages

    def img(self, path: str | None, alt: str, css: str = "", lazy: bool = True) -> str:
        if path is None or path not in self.pictures:
            return f'<span class="missing {css}" title="no picture">?</span>'
        loading = ' loading="lazy"' if lazy else ""
        return f'<img class="{css}" src="{_e(path)}" alt="{_e(alt)}"{loading}>'

    def person_page(self, person: str) -> str:
        return page_name(f"person-{self.numbers[person]}", 1)

    def command(self, action: str, person: str, target: str) -> str:
        """The `imaginem review` command that records a decision about a face or a cluster."""
        root = shlex.quote(self.data.corpus_root)
        version = f" --version {self.data.version}" if action == "name" else ""
        return (
            f"imaginem review {action} --corpus {root}{version} --person "
            f"{shlex.quote(person)} {target}"
        )


def _page(site: Site, title: str, active: str, body: str, scripts: Sequence[str] = ()) -> str:
    nav = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{label}</a>'
        for href, label in NAV
    )
    script_tags = "".join(f'<script src="{_e(src)}"></script>' for src in scripts)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="robots" content="noindex, nofollow">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · {_e(site.data.version)}</title>"
        '<link rel="stylesheet" href="style.css"></head><body>'
        f'<header><span class="brand">Imaginem · {_e(site.data.version)}</span>'
        f"<nav>{nav}</nav></header><main><h1>{_e(title)}</h1>{body}</main>"
        f"{script_tags}</body></html>\n"
    )


def _paged(base: str, items: Sequence, per_page: int) -> Iterator[tuple[str, Sequence, str]]:
    """(file name, items, pager links) of each page; one page even when empty."""
    pages = max(1, math.ceil(len(items) / per_page))
    for number in range(1, pages + 1):
        links = "".join(
            f'<a href="{page_name(base, n)}"{" class=active" if n == number else ""}>{n}</a>'
            for n in range(1, pages + 1)
        )
        pager = f'<nav class="pager">Page {links}</nav>' if pages > 1 else ""
        chunk = items[(number - 1) * per_page : number * per_page]
        yield page_name(base, number), chunk, pager


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _distance(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _source(site: Site, face: Face) -> str:
    """The face's image as a thumbnail, its box drawn over it."""
    image = site.data.images[face.source_path]
    box = face.box
    style = (
        f"left:{100 * box['left'] / image.width:.2f}%;top:{100 * box['top'] / image.height:.2f}%;"
        f"width:{100 * (box['right'] - box['left']) / image.width:.2f}%;"
        f"height:{100 * (box['bottom'] - box['top']) / image.height:.2f}%"
    )
    picture = site.img(image_picture_path(image.image_sha256), face.source_path, "thumb")
    return f'<span class="source">{picture}<span class="box" style="{style}"></span></span>'


def _face_card(site: Site, face: Face, person: str | None, note: str) -> str:
    """A face chip beside a picture of `person`, the source image, and what to decide."""
    reference = site.img(site.reference.get(person or ""), person or "", "chip")
    commands = ""
    if person:
        commands = (
            "<details><summary>Decide</summary>"
            f"<code>{_e(site.command('confirm', person, face.face_id))}</code>"
            f"<code>{_e(site.command('reject', person, face.face_id))}</code></details>"
        )
    return (
        f'<figure class="face" id="face-{face.face_id}">'
        f'<div class="pair">{site.img(chip_path(face), "face", "chip")}{reference}</div>'
        f"{_source(site, face)}"
        f"<figcaption>{note}<br><span class=path>{_e(face.source_path)}</span>"
        f" · face {face.face_index}<br><code class=id>{face.face_id}</code>{commands}"
        "</figcaption></figure>"
    )


def _match_note(face: Face, threshold: float | None) -> str:
    if face.confirmed:
        return f"<b>confirmed</b> by a reviewer · distance {_distance(face.distance)}"
    limit = f" (threshold {threshold:g})" if threshold is not None else ""
    return f"distance {_distance(face.distance)}{limit}"


def overview(site: Site) -> str:
    data = site.data
    images = len(data.images)
    steps = "".join(
        f"<tr><td>{step}</td><td>{data.step_counts.get(step, 0)} of {images}</td>"
        f"<td>{data.computed.get(step, 0) if step != 'facematch' else 'runs every time'}</td>"
        f"<td>{by_step.get(step, 0)}</td></tr>"
        for by_step in [Counter(error["step"] for error in data.errors)]
        for step in STEP_ORDER
    )
    matched = sum(1 for face in data.faces if face.person)
    confirmed = sum(1 for face in data.faces if face.confirmed)
    run = data.last_run
    ran = (
        f"<p>Latest run: {_e(run['time'])}, steps {_e(run['steps'])}.</p>"
        if run
        else "<p>No run of this version yet.</p>"
    )
    errors = "".join(
        f"<tr><td>{_e(error['step'])}</td><td class=path>{_e(error['path'])}</td>"
        f"<td>{_e(error['error_type'])}</td><td>{_e(error['message'])}</td></tr>"
        for error in data.errors[:20]
    )
    more = f'<p><a href="errors.html">All {len(data.errors)} errors</a></p>' if data.errors else ""
    body = (
        f"<p>Corpus <code>{_e(data.corpus_root)}</code>, version <b>{_e(data.version)}</b>: "
        f"{images} images, {len(data.faces)} faces ({matched} matched to a person, "
        f"{confirmed} of them confirmed by a reviewer), {len(data.clusters)} clusters of "
        f"unknown faces, {len(data.duplicates)} groups of near-duplicates, "
        f"{len(data.errors)} errors, {len(data.decisions)} decisions.</p>"
        f"{ran}<table><tr><th>step</th><th>images with a result</th>"
        "<th>computed for this version</th><th>errors</th></tr>"
        f"{steps}</table><h2>Errors</h2>"
        + (
            f"<table><tr><th>step</th><th>file</th><th>type</th><th>reason</th></tr>{errors}"
            f"</table>{more}"
            if errors
            else "<p>None.</p>"
        )
    )
    return _page(site, "Overview", "index.html", body)


def error_pages(site: Site) -> Iterator[tuple[str, str]]:
    for name, chunk, pager in _paged("errors", site.data.errors, ERRORS_PER_PAGE):
        rows = "".join(
            f"<tr><td>{_e(error['step'])}</td><td class=path>{_e(error['path'])}</td>"
            f"<td>{_e(error['error_type'])}</td><td>{_e(error['message'])}</td></tr>"
            for error in chunk
        )
        body = (
            f"<p>{len(site.data.errors)} files failed a step. A failed result is never "
            "stored: the next run tries again.</p>"
            f"{pager}<table><tr><th>step</th><th>file</th><th>type</th><th>reason</th></tr>"
            f"{rows}</table>{pager}"
        )
        yield name, _page(site, "Errors", "errors.html", body)


def people_pages(site: Site) -> Iterator[tuple[str, str]]:
    data = site.data
    by_person: dict[str, list[Face]] = {person: [] for person in site.numbers}
    for face in data.faces:
        if face.person:
            by_person[face.person].append(face)
    sections = []
    for person, faces in by_person.items():
        faces.sort(key=lambda face: (not face.confirmed, face.distance or 0, face.source_path))
        chips = "".join(
            f'<a href="{site.person_page(person)}#face-{face.face_id}">'
            f"{site.img(chip_path(face), 'face', 'chip')}</a>"
            for face in faces[:CHIPS_PER_PERSON]
        )
        source = "gallery" if person in data.gallery else "named by a reviewer"
        sections.append(
            f'<section class="person"><a href="{site.person_page(person)}">'
            f"{site.img(site.reference.get(person), person, 'chip')}</a>"
            f'<div><h2><a href="{site.person_page(person)}">{_e(person)}</a></h2>'
            f"<p>{_count(len(faces), 'face')} · {source}</p><div class=chips>{chips}</div></div>"
            "</section>"
        )
        title = f"{person}: {_count(len(faces), 'face')}"
        for name, chunk, pager in _paged(f"person-{site.numbers[person]}", faces, FACES_PER_PAGE):
            cards = "".join(
                _face_card(site, face, person, _match_note(face, data.threshold)) for face in chunk
            )
            body = f"{pager}<div class=faces>{cards or '<p>No face matched.</p>'}</div>{pager}"
            yield name, _page(site, title, "people.html", body)
    intro = (
        "<p>Each known person with the faces matched to them. A match is a lead to check: "
        "open a person to see every face beside their photo, with its distance and source.</p>"
    )
    body = intro + ("".join(sections) or "<p>No gallery and no named person yet.</p>")
    yield "people.html", _page(site, "People", "people.html", body)


def candidate_faces(data: ReportData, margin: float) -> list[Face]:
    """Faces matched to no one whose nearest lead is within `margin` of the threshold,
    nearest first: the near misses a reviewer must see."""
    if data.threshold is None:
        return []
    near = [
        face
        for face in data.faces
        if face.person is None
        and face.candidates
        and face.candidates[0][1] <= data.threshold + margin
    ]
    return sorted(near, key=lambda face: (face.candidates[0][1], face.source_path))


def candidate_pages(site: Site, margin: float) -> Iterator[tuple[str, str]]:
    data = site.data
    faces = candidate_faces(data, margin)
    if data.threshold is None:
        intro = "<p>facematch has not run on this version: no candidates yet.</p>"
    else:
        intro = (
            f"<p>{len(faces)} faces matched no one (threshold {data.threshold:g}) but have a "
            f"gallery person within the review margin ({margin:g}): each is shown beside that "
            "person. Confirm or reject it with the command under the face.</p>"
        )
    for name, chunk, pager in _paged("candidates", faces, FACES_PER_PAGE):
        cards = "".join(
            _face_card(site, face, lead, f"nearest: <b>{_e(lead)}</b> at {_distance(distance)}")
            for face in chunk
            for lead, distance in face.candidates[:1]
        )
        body = f"{intro}{pager}<div class=faces>{cards}</div>{pager}"
        yield name, _page(site, "Candidates", "candidates.html", body)


def cluster_pages(site: Site) -> Iterator[tuple[str, str]]:
    data = site.data
    intro = (
        f"<p>{len(data.clusters)} groups of faces that matched no one, largest first. Name "
        "one with <code>imaginem review name</code>: its faces then join the gallery.</p>"
    )
    for name, chunk, pager in _paged("clusters", data.clusters, CLUSTERS_PER_PAGE):
        sections = []
        for cluster in chunk:
            chips = "".join(
                site.img(chip_path(face), face.source_path, "chip")
                for face in cluster.faces[:CHIPS_PER_CLUSTER]
            )
            more = len(cluster.faces) - CHIPS_PER_CLUSTER
            nearest = (
                f"nearest gallery person: {_e(cluster.nearest_person)} at "
                f"{_distance(cluster.distance)}"
                if cluster.nearest_person
                else "no gallery person to compare"
            )
            command = site.command("name", "NAME", cluster.cluster_id)
            sections.append(
                f'<section class="cluster" id="cluster-{cluster.cluster_id}">'
                f"<h2>{_count(len(cluster.faces), 'face')}</h2><p>{nearest} · "
                f"<code class=id>{cluster.cluster_id}</code></p><div class=chips>{chips}"
                f"{f'<span class=more>and {more} more</span>' if more > 0 else ''}</div>"
                f"<details><summary>Name</summary><code>{_e(command)}</code></details></section>"
            )
        body = f"{intro}{pager}{''.join(sections)}{pager}"
        yield name, _page(site, "Clusters", "clusters.html", body)


def _copy_card(site: Site, copy: Copy, first: bool) -> str:
    where = _e(copy.source_path)
    if copy.corpus_version != site.data.version:
        where += f" <span class=note>(version {_e(copy.corpus_version)})</span>"
    note = "first image" if first else f"{copy.distance} bits from the first"
    picture = site.img(image_picture_path(copy.image_sha256), copy.source_path)
    return (
        f'<figure class="image">{picture}<figcaption><p class=path>{where}</p>'
        f"<p>{note}</p></figcaption></figure>"
    )


def duplicate_pages(site: Site) -> Iterator[tuple[str, str]]:
    groups = site.data.duplicates
    intro = (
        f"<p>{_count(len(groups), 'group')} of near-duplicates (resized, re-encoded, slightly "
        "cropped or rotated copies of one photo) holding an image of this version, largest "
        "first; copies in other versions are shown too. Distances are in bits of the 64-bit "
        "perceptual hash (the phash step); the duplicates table lists every group of the "
        "corpus.</p>"
        if groups
        else "<p>No near-duplicates among this version's images.</p>"
        if site.data.step_counts.get("phash")
        else "<p>No image of this version has a perceptual hash yet: run the phash step.</p>"
    )
    for name, chunk, pager in _paged("duplicates", groups, GROUPS_PER_PAGE):
        sections = "".join(
            f'<section class="cluster" id="group-{group.group_id}">'
            f"<h2>{_count(len(group.copies), 'image')}</h2><div class=images>"
            + "".join(_copy_card(site, copy, index == 0) for index, copy in enumerate(group.copies))
            + "</div></section>"
            for group in chunk
        )
        yield name, _page(site, "Duplicates", "duplicates.html", f"{intro}{pager}{sections}{pager}")


def images_data(site: Site) -> str:
    """The images page's data file: a script that sets one global."""
    rows = [
        {
            "p": image.source_path,
            "s": image.set_path,
            "t": image.tags,
            "l": image.labels,
            "o": image.ocr_text,
            "f": image.faces,
            "m": picture
            if (picture := image_picture_path(image.image_sha256)) in site.pictures
            else None,
        }
        for image in site.data.images.values()
    ]
    return "window.IMAGINEM_IMAGES = " + json.dumps(rows, separators=(",", ":")) + ";\n"


def images_page(site: Site) -> str:
    sets = sorted({image.set_path for image in site.data.images.values()})
    tags = sorted({tag for image in site.data.images.values() for tag in image.tags})

    def options(values: list[str]) -> str:
        return '<option value="">any</option>' + "".join(
            f'<option value="{_e(v)}">{_e(v or "(root set)")}</option>' for v in values
        )

    body = (
        '<form id="filters" class="filters" autocomplete="off">'
        f'<label>Set <select id="set">{options(sets)}</select></label>'
        f'<label>Tag <select id="tag">{options(tags)}</select></label>'
        '<label>Label <input id="label" type="search" placeholder="e.g. cup"></label>'
        '<label>Text (OCR) <input id="text" type="search" placeholder="words in the image">'
        "</label>"
        '<label><input id="faces" type="checkbox"> with faces</label></form>'
        '<p id="count"></p><div id="results" class="images"></div>'
        '<button id="more" type="button" hidden>Show more</button>'
    )
    return _page(site, "Images", "images.html", body, scripts=(IMAGES_DATA, "images.js"))


def all_pages(site: Site, margin: float) -> Iterator[tuple[str, str]]:
    """(file name, content) of every page."""
    yield "index.html", overview(site)
    yield from people_pages(site)
    yield from candidate_pages(site, margin)
    yield from cluster_pages(site)
    yield from duplicate_pages(site)
    yield from error_pages(site)
    yield "images.html", images_page(site)
    yield IMAGES_DATA, images_data(site)
