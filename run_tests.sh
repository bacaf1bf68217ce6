#!/usr/bin/env bash
# Sets up a virtual environment with the test tools and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt -r requirements-test.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -e .

"$VENV/bin/ruff" check beam_pipeline transforms tests bench
"$VENV/bin/python" -m pytest -q "$@"
