"""The amortization study: how many model evaluations per explained input amortized explainers (stochastic
amortization onto noisy labels, FastSHAP) need to reach the held-out error of per-example estimators.

Modules: :mod:`~xattr.amortization.tabular` (data, model, surrogate, game), :mod:`~xattr.amortization.labels`
(noisy labels and ground truth through :mod:`xattr.methods`), :mod:`~xattr.amortization.explainers` (training),
:mod:`~xattr.amortization.costs` (errors, cost to reach an error, speedups), :mod:`~xattr.amortization.report`
(``report.md`` and plots), :mod:`~xattr.amortization.scale` (total compute to explain N inputs) and
:mod:`~xattr.amortization.study` (the stages, :func:`run`). The drivers
``experiments/amortize.py`` and ``experiments/fastshap.py`` call :func:`run`.

Example:
  >>> from xattr import amortization
  >>> amortization.cost_to_reach([32, 128, 512], [0.1, 0.05, 0.02], 0.01)
  (512.0, '>')
  >>> amortization.bound_text(">"), amortization.REFERENCE["banzhaf"]
  ('>=', 'banzhaf_msr')
"""

from xattr.amortization import costs, explainers, labels, report, scale, study, tabular
from xattr.amortization.costs import BOUND, REFERENCE, best_row, bound_text, cost_to_reach, errors, speedup
from xattr.amortization.labels import Labels, ground_truth, parse_setting, study_methods
from xattr.amortization.report import headline_line, write_report
from xattr.amortization.study import run, run_dataset
from xattr.amortization.tabular import Game, build_game, load_tabular, num_outputs, output_names

__all__ = ["BOUND", "Game", "Labels", "REFERENCE", "best_row", "bound_text", "build_game", "cost_to_reach", "costs",
           "errors", "explainers", "ground_truth", "headline_line", "labels", "load_tabular", "num_outputs",
           "output_names", "parse_setting", "report", "run", "run_dataset", "scale", "speedup", "study", "study_methods",
           "tabular", "write_report"]
