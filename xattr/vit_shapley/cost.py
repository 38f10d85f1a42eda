"""When does the ViT Shapley explainer pay for its training? Total compute to explain N images, both ways.

KernelSHAP on the surrogate game pays ``evaluations_to_match`` surrogate forward passes per image for the
explainer's error (measured by the evaluation stage). The explainer pays its training once, then one explainer
forward pass and the grand value (one surrogate pass) per image (the null value, the CLS token alone, is shared).
Training costs, per step and image, ``num_samples`` masked surrogate passes (the game values of the FastSHAP
loss) plus the grand value, and one explainer forward and backward pass (counted as 3 forward passes). The
surrogate itself is needed by both routes (it is the removal), so its training is not charged to either.

Costs are given in surrogate-forward equivalents ("evaluations") and in matmul FLOPs
(:func:`xattr.models.vit.flops_per_example`; the explainer is the backbone with its extra blocks). Break-even:

  N* = training cost / (KernelSHAP cost per image - explainer cost per image).

Example:
  >>> from xattr.models import vit
  >>> cfg = vit.config("mu/8", image_size=32, num_channels=1, num_classes=10)
  >>> c = amortization_cost(cfg, num_steps=4000, batch_size=16, num_samples=32, extra_blocks=1,
  ...                       evaluations_to_match=455.0, sizes=(1_000, 100_000))
  >>> round(c["break_even_images"]), [round(r["speedup"], 2) for r in c["rows"]]
  (5296, [0.19, 17.2])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from xattr import _checks
from xattr.amortization import costs
from xattr.models import vit

__all__ = ["amortization_cost"]



def amortization_cost(model: vit.ViTConfig, *, num_steps: int, batch_size: int, num_samples: int,
                      extra_blocks: int, evaluations_to_match: float | None,
                      sizes: Sequence[int] = (1_000, 10_000, 100_000, 1_000_000)) -> dict[str, Any]:
  """Training and per-image costs of the explainer vs KernelSHAP at the explainer's error, and the break-even N.

  Args:
    model: the surrogate's ViT config (the explainer adds ``extra_blocks`` blocks to it).
    num_steps, batch_size, num_samples: the explainer stage's steps, images per step and masks per image.
    extra_blocks: blocks the explainer adds on top of the surrogate's backbone.
    evaluations_to_match: KernelSHAP's evaluations per image for the explainer's error (None: KernelSHAP beats
      the explainer at its smallest budget; inf: it never reaches it in the measured budgets).
    sizes: numbers of images N to tabulate.

  Returns:
    dict with ``train_evaluations``, ``train_flops``, per-image ``explainer_evaluations`` /
    ``explainer_flops`` and ``kernel_shap_evaluations`` / ``kernel_shap_flops``, ``break_even_images`` (inf if
    the explainer never pays off, None if KernelSHAP is already as accurate at its smallest budget) and
    ``rows``: per N the two totals in FLOPs and ``speedup`` = KernelSHAP total / explainer total.
  """
  for name, value in (("num_steps", num_steps), ("batch_size", batch_size), ("num_samples", num_samples)):
    _checks.positive_int(name, value)
  _checks.positive_int("extra_blocks", extra_blocks, minimum=0)
  surrogate = float(vit.flops_per_example(model))
  explainer = float(vit.flops_per_example(dataclasses.replace(model, depth=model.depth + extra_blocks)))
  ratio = explainer / surrogate
  per_step_image = (num_samples + 1) + costs.TRAIN_PASSES * ratio          # in surrogate-forward equivalents
  train = float(num_steps * batch_size * per_step_image)
  per_image = ratio + 1.0                                                  # explainer forward + grand value
  out = dict(train_evaluations=train, train_flops=train * surrogate, explainer_evaluations=per_image,
             explainer_flops=per_image * surrogate, surrogate_flops=surrogate,
             kernel_shap_evaluations=evaluations_to_match, rows=[])
  if evaluations_to_match is None:
    out.update(kernel_shap_flops=None, break_even_images=None)
    return out
  ks = float(evaluations_to_match)
  out["kernel_shap_flops"] = ks * surrogate
  out["break_even_images"] = train / (ks - per_image) if ks > per_image else float("inf")
  for n in sizes:
    amortized, per_example = (train + n * per_image) * surrogate, n * ks * surrogate
    out["rows"].append(dict(images=int(n), explainer_flops=amortized, kernel_shap_flops=per_example,
                            speedup=per_example / amortized if np.isfinite(per_example) else float("inf")))
  return out
