#!/usr/bin/env bash
# The README's test command: install sgtlab with its test extras and optional engines (Ray,
# pyautoattack, h5py for PCAM), the test oracles, then run pytest on 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[test,ray,autoattack,pcam,tensorboard]"
# Oracles: torchattacks without its torchvision dependency (no CPU wheel here); quantus 0.6.0
# without its heavy optional stack (its Complexity/Sparseness need only these two).
pip install -q --no-deps torchattacks==3.5.1 quantus==0.6.0
pip install -q scikit-image opencv-python-headless
exec python -m pytest -n 2 --dist loadfile -q "$@"
