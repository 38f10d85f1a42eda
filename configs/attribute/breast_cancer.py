"""Attributions for every test example of the breast-cancer MLP (the embedded default; CPU, no downloads).

Run (from the repository root; trains the explain_tabular MLP into <workdir>/model first if it is missing):

  python -m experiments.attribute --config=configs/attribute/breast_cancer.py --workdir=runs/attribute

Default method ``shapley`` (xattr.shapley.estimate: odd_kernel_shap at the configured 512 coalitions per example;
``--config.shapley.num_samples=None`` runs kernel_shap until converged). The smoke variant uses kernel_shap.
Other methods: ``--config.method=permutation`` (banzhaf_msr, leave_one_out, gradient_x_input, integrated_gradients,
smoothgrad with ``--config.target=predicted``), or a trained FastSHAP explainer with ``--config.method=explainer
--config.explainer_path=PATH``. Reuse an explain_tabular run's model with
``--config.model.workdir=runs/explain_tabular``.
Kill it at any time and rerun the same command: finished chunks are kept. Tiny version for tests (seconds):

  python -m experiments.attribute --config=configs/attribute/breast_cancer.py:smoke --workdir=/tmp/attribute_smoke
"""

import ml_collections

from configs.attribute.base import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config; ``arg='smoke'`` shrinks every budget (smoke MLP, 12 examples in chunks of 4)."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = base_config()
  if arg == "smoke":
    config.model.config = "configs/explain_tabular/breast_cancer.py:smoke"
    config.background_size = 8
    config.chunk_size = 4
    config.data.max_examples = 12
    # The job tests compare 4 devices with 1 at 1e-6: kernel_shap's programs agree to that across layouts, the
    # Walsh fit behind the default (odd_kernel_shap) to ~6e-6 (tests/multidevice_check.py). A test runs the
    # default method on its own (tests/test_attribute_driver.py).
    config.method = "kernel_shap"
    config.shapley.update(num_samples=256, batch_size=128)
    config.kernel_shap.update(num_samples=256, batch_size=128)
    config.permutation.update(num_permutations=2, batch_size=64)
    config.banzhaf_msr.update(num_samples=64, batch_size=32)
    config.integrated_gradients.num_steps = 4
    config.smoothgrad.num_samples = 4
    config.report.curve_steps = 6
    config.report.max_points = 12
    config.progress = False
  return config
