"""The valuation study's stages: settings checks, seeded samples saved per stage, metrics and scores."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs.valuation import breast_cancer
from xattr.valuation import study as study_lib


def test_budgets_must_lie_in_the_samples():
  config = breast_cancer.get_config("smoke")
  config.sampling.budgets = (4, 16)
  with pytest.raises(ValueError, match=r"sampling.budgets must lie in \[1, samples_per_point=8\], got \(4, 16\)"):
    study_lib.Study.create(config, "/nonexistent")


def test_samples_are_seeded_saved_and_reloaded(tmp_path):
  config = breast_cancer.get_config("smoke")
  study = study_lib.Study.create(config, str(tmp_path))
  samples = study_lib.main_samples(study, progress=False)
  n, s = config.max_pool, config.sampling.samples_per_point
  assert samples.deltas.shape == samples.sizes.shape == (n, s) and samples.count == n * s
  assert samples.sizes.min() >= config.sampling.k_min and samples.sizes.max() < config.sampling.k_max
  assert len(os.listdir(tmp_path / "samples" / "main")) == -(-n * s // config.sampling.block_size)
  truth = study_lib.ground_truth(study, progress=False)
  assert len(truth.points) == config.truth.num_points and np.all(np.diff(truth.points) > 0)
  again = study_lib.Study.create(config, str(tmp_path))
  np.testing.assert_array_equal(study_lib.main_samples(again, progress=False).deltas, samples.deltas)
  assert study.fingerprint(1) == again.fingerprint(1) != study.fingerprint(2)


def test_accuracy_metrics_auroc_and_scores():
  truth = np.array([0.0, 1.0, 2.0, 3.0])
  m = study_lib.accuracy_metrics(truth + 0.1, truth)
  assert m["pearson"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)
  assert m["nrmse"] == pytest.approx(0.1 / truth.std())
  flipped = np.array([True, False, False, False])
  assert study_lib.auroc(truth, flipped) == 1.0 and np.isnan(study_lib.auroc(truth, np.zeros(4, bool)))
  t = study_lib.Samples(np.array([0, 2]), np.ones((2, 3)), np.array([[0.0, 0.1, -0.1], [1.0, 1.1, 0.9]]), 0.0)
  estimates = {4: {m: np.array([0.0, 0.5, 1.0, 1.5]) for m in study_lib.METHODS}}
  scores = study_lib.score(estimates, t, flipped)
  assert scores.accuracy["mc"][4]["nrmse"] == pytest.approx(0.0, abs=1e-12) and scores.auroc["mle"][4] == 1.0
  assert scores.noise_floor == pytest.approx(np.sqrt(0.01 / 3) / 0.5)


def test_timings_keep_the_stage_order():
  clock = study_lib.Timings()
  assert clock.time("a", lambda x: x + 1, 1) == 2
  clock.time("b", lambda: None)
  assert list(clock.total()) == ["a", "b", "total"]


def test_fingerprints_cover_the_code_the_results_depend_on():
  # The saved stages hash the source of study.DEPENDS_ON: it must cover every xattr module the stages import.
  code = ("import sys; from xattr.valuation import study, addition; "
          "print(' '.join(m for m in sys.modules if m.startswith('xattr')))")
  loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=pathlib.Path(__file__).resolve().parents[1]).stdout.split()
  packages = {"xattr", "xattr.data", "xattr.valuation"}     # __init__ re-exports (xattr: its version is hashed)
  missing = [m for m in loaded if m not in packages
             and not any(m == d or m.startswith(d + ".") for d in study_lib.DEPENDS_ON)]
  assert not missing, f"add these to xattr.valuation.study.DEPENDS_ON: {missing}"
