#!/usr/bin/env bash
# Sets up a virtual environment, builds the sample drop, ingests it and runs the
# pipeline on the local runner. Safe to run again: nothing is copied or written twice.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
DROP=local/sample-drop
GALLERY=local/sample-gallery
CORPUS=local/corpus
VERSION=v1

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt -r requirements-export.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -e .

# Once: the classification model's ONNX export (torch is needed for this alone).
"$VENV/bin/imaginem" models export
"$VENV/bin/imaginem" sample-corpus "$DROP" --gallery "$GALLERY"
"$VENV/bin/imaginem" ingest "$DROP" --corpus "$CORPUS" --version "$VERSION"
"$VENV/bin/imaginem" run --corpus "$CORPUS" --version "$VERSION" --gallery "$GALLERY" "$@"

cat <<MSG

Outputs under $CORPUS/:
  original/    the ingested images, by set path and corpus version
  transform/   thumbnails and face chips, by transform version
  metadata/    Delta Lake tables: manifest, image_sets, images, faces, errors, transforms, results
Query them, e.g.:
  $VENV/bin/python -c "from transforms.tables import delta; print(delta.read(delta.location('$CORPUS', 'images'), ['source_path', 'width', 'height']).to_pylist())"
MSG
