#!/usr/bin/env bash
# The README's test command: install sgtlab with its test extras and the test oracles, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[test]"
# Oracles for the tests (torchattacks without its torchvision dependency, which has no CPU wheel here).
pip install -q --no-deps torchattacks==3.5.1
exec python -m pytest -n 2 -q "$@"
