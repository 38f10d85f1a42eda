"""xattr.vit_shapley.cost: the explainer's training and per-image costs against KernelSHAP's, in closed form."""

import math

import pytest

from xattr.models import vit
from xattr.vit_shapley import cost

CFG = vit.config("mu/8", image_size=32, num_channels=1, num_classes=10)


def test_costs_in_closed_form_and_break_even_where_the_totals_meet():
  c = cost.amortization_cost(CFG, num_steps=100, batch_size=8, num_samples=16, extra_blocks=0,
                             evaluations_to_match=200.0, sizes=(10, 10_000))
  # No extra block: the explainer costs one surrogate pass, so a training step costs per image 16 masked passes,
  # the grand value and a forward + backward pass (3 passes); per explained image 1 + 1 (the grand value).
  assert c["train_evaluations"] == 100 * 8 * (16 + 1 + 3)
  assert c["explainer_evaluations"] == 2.0
  assert c["train_flops"] == c["train_evaluations"] * vit.flops_per_example(CFG)
  n = c["break_even_images"]
  assert n == pytest.approx(100 * 8 * 20 / (200 - 2))
  assert (n * 200) == pytest.approx(c["train_evaluations"] + n * 2)         # both routes cost the same at N*
  slow, fast = c["rows"]
  assert slow["speedup"] < 1 < fast["speedup"] and slow["images"] < n < fast["images"]
  deeper = cost.amortization_cost(CFG, num_steps=100, batch_size=8, num_samples=16, extra_blocks=2,
                                  evaluations_to_match=200.0)
  assert deeper["explainer_evaluations"] > 2.0 and deeper["break_even_images"] > n     # extra blocks cost more


def test_no_break_even_when_kernel_shap_is_as_cheap():
  never = cost.amortization_cost(CFG, num_steps=1, batch_size=1, num_samples=2, extra_blocks=0,
                                 evaluations_to_match=1.5)
  assert math.isinf(never["break_even_images"])
  beaten = cost.amortization_cost(CFG, num_steps=1, batch_size=1, num_samples=2, extra_blocks=0,
                                  evaluations_to_match=None)
  assert beaten["break_even_images"] is None and beaten["rows"] == []
  with pytest.raises(ValueError, match="num_steps"):
    cost.amortization_cost(CFG, num_steps=0, batch_size=1, num_samples=2, extra_blocks=0, evaluations_to_match=5.0)
