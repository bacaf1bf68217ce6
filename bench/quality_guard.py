"""What the source tree it runs from reads and finds: OCR accuracy on the text set
(`bench.ocr_set`) and recall on the labelled face set (`bench.face_set`), as JSON.

Run as a child process, like `bench.pipeline_once`, from the tree under test:

    python -m bench.quality_guard WORK_DIR
"""

from __future__ import annotations

import json
import sys

from bench import face_set, ocr_set

FACE_SET_IMAGES = 60


def main(work_dir: str) -> None:
    texts = ocr_set.text_examples(f"{work_dir}/text-sample")
    faces = face_set.labelled_faces(f"{work_dir}/face-sample", FACE_SET_IMAGES)
    report = {
        "ocr": ocr_set.score_reader(texts, ocr_set.local_reader()),
        "faces": face_set.score_detector(faces, face_set.local_detector()).summary(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
