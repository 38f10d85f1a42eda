#!/usr/bin/env bash
# Sets up .venv if needed and runs the main job on the embedded default data (no network).
# Extra arguments are passed to the driver, e.g. ./tools/run.sh --config.explain.num_samples=4096
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
workdir="${XATTR_WORKDIR:-runs/explain_tabular}"
exec python -m experiments.explain_tabular \
  --config=configs/explain_tabular/breast_cancer.py --workdir="$workdir" "$@"
