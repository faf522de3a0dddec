#!/usr/bin/env bash
# Set up rlzoo in ./.venv: a virtual environment, PyTorch, and rlzoo with its test tools.
# Idempotent: a second run with an unchanged pyproject.toml does nothing.
#
# PyTorch: if the venv has no torch yet, this installs $RLZOO_TORCH (default torch==2.13.0, the
# CPU build). A GPU user brings their own first:
#     python3 -m venv .venv && .venv/bin/pip install torch --index-url <your CUDA wheel index>
# and this script keeps it (rlzoo accepts any torch >= 2.4).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${RLZOO_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "rlzoo setup: installing $TORCH_SPEC" >&2
  "${PIP[@]}" install "$TORCH_SPEC"
fi
stamp=.venv/.rlzoo-setup
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import rlzoo" 2>/dev/null; then
  echo "rlzoo setup: installing rlzoo and its dependencies" >&2
  "${PIP[@]}" install -e ".[dev]"
  echo "$want" > "$stamp"
fi
