"""Each API's answer for one image -> the neutral form the steps' results are made from.

Neutral forms are plain JSON, in pixels of the original (EXIF-oriented) image, and
are what the result store keeps, so a step's own options (top-k, minimum score) can
change without calling the API again:

* labels: `[{"label", "score"}]`, best first;
* text: `[{"text", "score", "box": [[x, y] x 4]}]`, in reading order;
* faces: `[{"box": [left, top, right, bottom], "keypoints": {name: [x, y]}, "score"}]`,
  keypoints named as BlazeFace's (`right_eye` is the subject's right eye).

`scale` is original pixels per pixel of the image that was sent.
"""

from __future__ import annotations

from typing import Any


def _point(vertex: dict[str, Any], scale: float) -> list[float]:
    # Google leaves out coordinates that are 0.
    return [float(vertex.get("x", 0)) * scale, float(vertex.get("y", 0)) * scale]


def _polygon(vertices: list[dict[str, Any]], scale: float) -> list[list[float]]:
    return [_point(vertex, scale) for vertex in vertices]


def _box_of(polygon: list[list[float]]) -> list[float]:
    xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
    return [min(xs), min(ys), max(xs), max(ys)]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def labels_from_azure(answer: dict[str, Any], scale: float = 1.0) -> list[dict[str, Any]]:
    values = answer.get("tagsResult", {}).get("values", [])
    tags = [{"label": tag["name"], "score": float(tag["confidence"])} for tag in values]
    return sorted(tags, key=lambda tag: -tag["score"])


def labels_from_google(answer: dict[str, Any], scale: float = 1.0) -> list[dict[str, Any]]:
    labels = [
        {"label": label["description"], "score": float(label.get("score", 0.0))}
        for label in answer.get("labelAnnotations", [])
    ]
    return sorted(labels, key=lambda label: -label["score"])


def text_from_azure(answer: dict[str, Any], scale: float) -> list[dict[str, Any]]:
    """Lines of the Read result; a line's score is the mean of its words'."""
    return [
        {
            "text": line["text"],
            "score": _mean([float(word["confidence"]) for word in line.get("words", [])]),
            "box": _polygon(line["boundingPolygon"], scale),
        }
        for block in answer.get("readResult", {}).get("blocks", [])
        for line in block.get("lines", [])
    ]


def _paragraph_text(paragraph: dict[str, Any]) -> str:
    return " ".join(
        "".join(symbol.get("text", "") for symbol in word.get("symbols", []))
        for word in paragraph.get("words", [])
    )


def text_from_google(answer: dict[str, Any], scale: float) -> list[dict[str, Any]]:
    """Paragraphs of the full text annotation, or else the single words found."""
    full = answer.get("fullTextAnnotation")
    if full:
        return [
            {
                "text": _paragraph_text(paragraph),
                "score": paragraph.get("confidence"),
                "box": _polygon(paragraph["boundingBox"]["vertices"], scale),
            }
            for page in full.get("pages", [])
            for block in page.get("blocks", [])
            for paragraph in block.get("paragraphs", [])
        ]
    return [
        {
            "text": word["description"],
            "score": None,
            "box": _polygon(word["boundingPoly"]["vertices"], scale),
        }
        for word in answer.get("textAnnotations", [])[1:]  # the first is all the text
    ]


def _name_pairs(keypoints: dict[str, list[float]], first: str, second: str) -> None:
    """Names two points `right_*`/`left_*` by where they are: an upright subject's
    right eye is on the image's left. APIs differ on whose left they mean."""
    if first in keypoints and second in keypoints:
        on_left, on_right = sorted([keypoints.pop(first), keypoints.pop(second)])
        part = first.split("_", 1)[1]
        keypoints[f"right_{part}"], keypoints[f"left_{part}"] = on_left, on_right


_AZURE_LANDMARKS = {"pupilLeft": "a_eye", "pupilRight": "b_eye", "noseTip": "nose_tip"}


def faces_from_azure(answer: list[dict[str, Any]], scale: float) -> list[dict[str, Any]]:
    faces = []
    for face in answer:
        rectangle = face["faceRectangle"]
        left, top = rectangle["left"] * scale, rectangle["top"] * scale
        box = [left, top, left + rectangle["width"] * scale, top + rectangle["height"] * scale]
        marks = face.get("faceLandmarks", {})
        keypoints = {
            ours: _point(marks[theirs], scale)
            for theirs, ours in _AZURE_LANDMARKS.items()
            if theirs in marks
        }
        if "mouthLeft" in marks and "mouthRight" in marks:
            (x1, y1), (x2, y2) = (
                _point(marks[side], scale) for side in ("mouthLeft", "mouthRight")
            )
            keypoints["mouth"] = [(x1 + x2) / 2, (y1 + y2) / 2]
        _name_pairs(keypoints, "a_eye", "b_eye")
        faces.append({"box": box, "keypoints": keypoints, "score": None})
    return faces


_GOOGLE_LANDMARKS = {
    "LEFT_EYE": "a_eye",
    "RIGHT_EYE": "b_eye",
    "NOSE_TIP": "nose_tip",
    "MOUTH_CENTER": "mouth",
    "LEFT_EAR_TRAGION": "a_ear",
    "RIGHT_EAR_TRAGION": "b_ear",
}


def faces_from_google(answer: dict[str, Any], scale: float) -> list[dict[str, Any]]:
    faces = []
    for face in answer.get("faceAnnotations", []):
        poly = face.get("fdBoundingPoly") or face["boundingPoly"]
        keypoints = {
            _GOOGLE_LANDMARKS[mark["type"]]: _point(mark["position"], scale)
            for mark in face.get("landmarks", [])
            if mark.get("type") in _GOOGLE_LANDMARKS
        }
        _name_pairs(keypoints, "a_eye", "b_eye")
        _name_pairs(keypoints, "a_ear", "b_ear")
        score = face.get("detectionConfidence")
        faces.append(
            {
                "box": _box_of(_polygon(poly["vertices"], scale)),
                "keypoints": keypoints,
                "score": None if score is None else float(score),
            }
        )
    return faces
