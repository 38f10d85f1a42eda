#!/usr/bin/env bash
# Sets up .venv if needed and runs the whole test suite, the 4-fake-device process included.
# Extra arguments go to pytest, e.g. ./tools/test.sh -k shapley
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec python -m pytest -q -n 2 "$@"
