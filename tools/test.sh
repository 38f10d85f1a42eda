#!/usr/bin/env bash
# Sets up .venv if needed and runs the whole test suite, the 4-fake-device process included.
# Extra arguments go to pytest, e.g. ./tools/test.sh -k shapley
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
# XLA's backend optimisations (LLVM) are most of the suite's time and buy nothing for test-sized programs: without
# them the suite runs ~2x faster (subprocesses inherit the flag; the 4-device checks append theirs to it).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
# --dist loadfile keeps a test file on one worker, so its module-scoped fixtures (a driver's smoke run) are
# built once rather than once per worker.
exec python -m pytest -q -n 2 --dist loadfile "$@"
