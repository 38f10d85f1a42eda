#!/usr/bin/env bash
# Sets up .venv if needed and runs the whole test suite, the 4-fake-device process included.
# Extra arguments go to pytest, e.g. ./tools/test.sh -k shapley
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
# --dist loadfile keeps a test file on one worker, so its module-scoped fixtures (a driver's smoke run) are
# built once rather than once per worker.
exec python -m pytest -q -n 2 --dist loadfile "$@"
