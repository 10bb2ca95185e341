#!/usr/bin/env bash
# Create .venv (once) with the CPU build of PyTorch first, then trm and its test tools (--browser: also Chromium).
# Installing the torch pin first matters: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
# pip warns about every missing mirror folder this machine's pip.conf names; keep real messages only.
quiet_pip() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  quiet_pip "$TORCH_SPEC"
fi
if ! .venv/bin/python -c "import trm, pytest, hypothesis, ruff, fastapi, selenium" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.trm-installed ]; then
  quiet_pip -e ".[dev]"
  touch .venv/.trm-installed
fi
# --browser (scripts/test.sh): the browser test of `trm serve` drives Debian's Chromium through its chromedriver
# (nothing downloaded at run time); without root or apt the test skips and says why.
if [ "${1:-}" = --browser ] && { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; }; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
      || echo "setup: could not install chromium; the browser test will skip" >&2
  else
    echo "setup: chromium is missing and apt-get needs root here; the browser test will skip" >&2
  fi
fi
