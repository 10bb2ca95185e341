#!/usr/bin/env bash
# Create .venv (once) with the CPU build of PyTorch first, then trm and its test tools.
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
if ! .venv/bin/python -c "import trm, pytest, hypothesis, ruff" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.trm-installed ]; then
  quiet_pip -e ".[dev]"
  touch .venv/.trm-installed
fi
