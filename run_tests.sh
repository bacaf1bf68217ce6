#!/usr/bin/env bash
# Sets up a virtual environment with the test tools and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt -r requirements-export.txt \
  -r requirements-test.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
# The Azure Storage emulator (npm, pinned by its lock file) for the Azure tests.
if [ ! -x tools/azurite/node_modules/.bin/azurite ]; then
  npm ci --prefix tools/azurite --no-audit --no-fund --loglevel=error
fi
# Debian's headless Chromium and its driver, for the report's page tests.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver >/dev/null
  else
    echo "run_tests.sh: the report's page tests need Debian's chromium and chromium-driver:" \
      "run as root, or apt-get install chromium chromium-driver first" >&2
    exit 1
  fi
fi

# The runtime requirements alone must resolve without torch or CUDA packages.
"$VENV/bin/python" tools/check_runtime_requirements.py requirements.txt

"$VENV/bin/ruff" check beam_pipeline transforms tests bench
"$VENV/bin/python" -m pytest -q "$@"
