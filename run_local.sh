#!/usr/bin/env bash
# Sets up a virtual environment, builds the sample drop, ingests it, runs the
# pipeline on the local runner and writes the report to review. Safe to run again:
# nothing is copied or computed twice.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
DROP=local/sample-drop
GALLERY=local/sample-gallery
CORPUS=local/corpus
VERSION=v1
REPORT=local/report

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
"$VENV/bin/imaginem" report --corpus "$CORPUS" --version "$VERSION" --gallery "$GALLERY" \
  --out "$REPORT"

cat <<MSG

Outputs under $CORPUS/:
  original/    the ingested images, by set path and corpus version
  transform/   thumbnails and face chips, by transform version
  metadata/    Delta Lake tables: manifest, image_sets, images, faces, candidates, clusters,
               duplicates, errors, decisions, transforms, results
Query them, e.g.:
  $VENV/bin/python -c "from transforms.tables import delta; print(delta.read(delta.location('$CORPUS', 'images'), ['source_path', 'width', 'height']).to_pylist())"
The report to review (it holds face chips: keep it private): $REPORT/index.html
MSG
