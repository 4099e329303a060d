#!/usr/bin/env bash
# The device check on a GPU machine: one JSON file, under 5 minutes on one GPU.
#   bench/device_check.sh [--out device_check.json]   (from the repository root)
# See bench/device_check.py for what it measures; --quick is the CPU test's form.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "no nvidia-smi: the JSON's GPU utilisation will be null" >&2
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 600 "$python" bench/device_check.py "$@"
