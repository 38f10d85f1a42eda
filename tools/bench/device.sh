#!/usr/bin/env bash
# The accelerator benchmark suite (tools/bench/device.py) in one command; `--small` runs tiny shapes on CPU.
#   tools/bench/device.sh            # on a GPU/TPU machine: prints one table (a few minutes)
#   tools/bench/device.sh --small    # anywhere: checks the script (the test suite runs this)
source "$(dirname "$0")/../_env.sh"
exec python -m tools.bench.device "$@"
