#!/usr/bin/env bash
# Sets up .venv if needed and runs the main job on the embedded default data (no network): the ViT Shapley
# pipeline (classifier -> surrogate -> explainer -> evaluation) on scikit-learn's digits, ending with the report.
# Extra arguments are passed to the driver, e.g. ./tools/run.sh --config.explainer.num_steps=6000
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
workdir="${XATTR_WORKDIR:-runs/vit_shapley}"
exec python -m experiments.vit_shapley \
  --config=configs/vit_shapley/digits.py --workdir="$workdir" "$@"
