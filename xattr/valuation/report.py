"""Outputs of a data-valuation study: figures, the per-point table, metrics.json and report.md.

Built on :mod:`xattr.reports` (figures without a display, atomic saving, the markdown builder and its verdict
lines). :func:`write_outputs` draws the figures and writes ``points.csv``; :func:`summarize` collects the
numbers for ``metrics.json``; :func:`write_report` writes ``report.md``. The plotting functions take plain
arrays and dicts, so another study can reuse them.

Example:
  >>> win = {"mean": 0.03, "se": 0.01}
  >>> addition_verdict({"law vs other end": {"100": win, "300": win}}, (100, 300)).splitlines()[-1][:79]
  '**Verdict: yes** — law vs other end: the size-matched ranking wins at both ends'
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from xattr import plots, reports
from xattr.valuation import law_report, scaling
from xattr.valuation.addition import Addition, other_end
from xattr.valuation.pool import Pool
from xattr.valuation.recovery import Laws
from xattr.valuation.study import METHODS, Samples, Scores, Study

__all__ = ["FIGURES", "OUTPUTS", "DPI", "plot_accuracy", "plot_mislabeled", "plot_addition", "plot_scaling_curves",
           "plot_params", "binned_means", "scaling_examples", "write_points_csv", "addition_verdict", "summarize",
           "write_outputs", "write_report"]

FIGURES = ("accuracy.png", "mislabeled.png", "addition.png", "selection.png", "crossings.png", "scaling_curves.png",
           "params.png")
OUTPUTS = ("report.md", "points.csv", "metrics.json") + FIGURES
DPI = 110


def _budget_axes(ax: Any, ylabel: str) -> None:
  ax.set_xscale("log", base=2)
  ax.set_xlabel("samples per point (budget)")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)


def plot_accuracy(path: str, budgets: Sequence[int], acc: dict[str, dict[int, dict[str, float]]]) -> str:
  """RMSE / std(truth) and Spearman correlation per method against the budget."""
  fig, (a1, a2) = reports.figure(2)
  styles = plots.method_styles(list(METHODS.values()))
  for m, label in METHODS.items():
    a1.plot(budgets, [acc[m][b]["nrmse"] for b in budgets], label=label, **styles[label])
    a2.plot(budgets, [acc[m][b]["spearman"] for b in budgets], label=label, **styles[label])
  for ax, yl in ((a1, "RMSE / std(true values)"), (a2, "Spearman correlation with truth")):
    _budget_axes(ax, yl)
  a1.set_yscale("log")
  a1.legend(fontsize=8)
  a1.set_title("valuation error vs ground truth")
  a2.set_title("ranking agreement")
  return reports.save_figure(fig, path, dpi=DPI)


def plot_mislabeled(path: str, budgets: Sequence[int], aurocs: dict[str, dict[int, float]],
                    baselines: dict[str, tuple[float, str]]) -> str:
  """Detection AUROC per method against the budget, the baselines as horizontal lines."""
  fig, ax = reports.figure(1, size=(6.5, 4.2))
  styles = plots.method_styles(list(METHODS.values()))
  for m, label in METHODS.items():
    ax.plot(budgets, [aurocs[m][b] for b in budgets], label=label, **styles[label])
  styles = iter(["--", ":", "-.", (0, (5, 1))])
  for name, (value, cost) in baselines.items():       # named in the legend: labels on the lines were hidden by it
    ax.axhline(value, ls=next(styles, "--"), color="gray", lw=1, label=f"{name} ({cost})")
  _budget_axes(ax, "AUROC (flipped labels flagged by low value)")
  ax.set_title("mislabeled-point detection")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)   # outside: hides nothing
  return reports.save_figure(fig, path, dpi=DPI, bbox="tight")


def plot_addition(path: str, result: dict[int, dict[str, dict[str, float]]], sizes: Sequence[int]) -> str:
  """Bars of each rule's mean gain (with standard errors) at each base size."""
  fig, ax = reports.figure(1, size=(6.5, 4.2))
  rules = list(result[sizes[0]].keys())
  width = 0.8 / len(rules)
  for j, rule in enumerate(rules):
    means = [result[k][rule]["mean"] for k in sizes]
    ses = [result[k][rule]["se"] for k in sizes]
    ax.bar(np.arange(len(sizes)) + (j - (len(rules) - 1) / 2) * width, means, width, yerr=ses, label=rule,
           capsize=3)
  ax.set_xticks(np.arange(len(sizes)), [f"base size k = {k}" for k in sizes])
  ax.set_ylabel("utility gain U(D u S) - U(D)")
  ax.set_title("point addition at a small and a large base size")
  ax.axhline(0, color="k", lw=0.5)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)   # inside, it hid bar tops
  return reports.save_figure(fig, path, dpi=DPI, bbox="tight")


def plot_scaling_curves(path: str, examples: Sequence[dict[str, Any]], k_range: tuple[int, int]) -> str:
  """Per example point (see :func:`scaling_examples`): binned means of its samples and the two fitted laws."""
  cols = min(3, len(examples))
  rows = -(-len(examples) // cols)
  fig, axes = reports.figure(cols, rows, size=(4.2, 3.4))
  axes = np.atleast_1d(axes).ravel()
  grid = np.geomspace(*k_range, 50)
  for ax, ex in zip(axes, examples):
    sign = ex["sign"]
    good = ex["bin_mean"] * sign > 0
    ax.errorbar(ex["bin_k"][good], sign * ex["bin_mean"][good], yerr=ex["bin_se"][good], fmt="o", ms=4,
                label="binned mean (ground-truth samples)")
    for name, (c, a), style in (("MLE on ground-truth samples", ex["truth_law"], "-"),
                                ("amortized (max budget)", ex["amortized_law"], "--")):
      if np.isfinite(c) and c * sign > 0:
        ax.plot(grid, sign * scaling.law(c, a, grid), style, label=f"{name}: alpha={a:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    flag = " (flipped label)" if ex["flipped"] else ""
    ax.set_title(f"point {ex['point']}{flag}{'' if sign > 0 else ', -Delta shown'}", fontsize=9)
    ax.set_xlabel("dataset size k")
    ax.set_ylabel("E[Delta | k]" if sign > 0 else "-E[Delta | k]")
    ax.legend(fontsize=6)
  for ax in axes[len(examples):]:
    ax.set_visible(False)
  return reports.save_figure(fig, path, dpi=DPI)


def plot_params(path: str, fit: scaling.ScalingFit, flipped: np.ndarray, title: str) -> str:
  """Per-point (sign(c) log10 |c|, alpha), clean and flipped labels in two colours."""
  fig, ax = reports.figure(1, size=(5.5, 4.2))
  for mask, label, color in ((~flipped, "clean label", "tab:blue"), (flipped, "flipped label", "tab:red")):
    ax.scatter(np.sign(fit.c[mask]) * np.log10(np.abs(fit.c[mask]) + 1e-30), fit.alpha[mask], s=8, alpha=0.6,
               label=label, color=color)
  ax.set_xlabel("sign(c) log10 |c|")
  ax.set_ylabel("alpha")
  ax.set_title(title)
  ax.legend(fontsize=8)
  return reports.save_figure(fig, path, dpi=DPI)


def binned_means(sizes: np.ndarray, deltas: np.ndarray, num_bins: int = 8
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Geometric bin centres, means and standard errors of ``deltas`` in ``num_bins`` log-spaced bins of ``sizes``.

  Example:
    >>> k, mean, se = binned_means(np.array([1.0, 1.0, 4.0, 4.0]), np.array([1.0, 3.0, 0.0, 2.0]), num_bins=2)
    >>> k.tolist(), mean.tolist()
    ([1.0, 4.0], [2.0, 1.0])
  """
  edges = np.geomspace(sizes.min(), sizes.max() + 1, num_bins + 1)
  idx = np.clip(np.searchsorted(edges, sizes, side="right") - 1, 0, num_bins - 1)
  k = np.array([np.exp(np.log(sizes[idx == b]).mean()) for b in range(num_bins)])
  mean = np.array([deltas[idx == b].mean() for b in range(num_bins)])
  se = np.array([deltas[idx == b].std(ddof=1) / np.sqrt((idx == b).sum()) for b in range(num_bins)])
  return k, mean, se


def _example_rows(truth: Samples, flipped: np.ndarray, num: int) -> np.ndarray:
  # The clearest values (|psi| / se) among clean-label and among flipped-label ground-truth points, half each.
  clarity = np.abs(truth.values / np.maximum(truth.standard_errors, 1e-30))
  flipped_truth = flipped[truth.points]
  idx = np.concatenate([np.flatnonzero(~flipped_truth)[np.argsort(-clarity[~flipped_truth])][:num // 2],
                        np.flatnonzero(flipped_truth)[np.argsort(-clarity[flipped_truth])]])
  idx = np.concatenate([idx, np.argsort(-clarity)])
  return idx[np.sort(np.unique(idx, return_index=True)[1])][:num]


def scaling_examples(truth: Samples, truth_fit: scaling.ScalingFit, flipped: np.ndarray,
                     best: dict[str, np.ndarray], num: int) -> list[dict[str, Any]]:
  """The ``num`` ground-truth points with the clearest values (half with clean, half with flipped labels where
  possible): their binned samples, the law fitted to them (``truth_fit``) and the amortized law of ``best``."""
  examples = []
  for i in _example_rows(truth, flipped, num):
    k_b, m_b, se_b = binned_means(truth.sizes[i], truth.deltas[i])
    z = int(truth.points[i])
    examples.append(dict(point=z, flipped=bool(flipped[z]), sign=1.0 if truth.values[i] >= 0 else -1.0,
                         bin_k=k_b, bin_mean=m_b, bin_se=se_b, truth_law=(truth_fit.c[i], truth_fit.alpha[i]),
                         amortized_law=(best["amortized_c"][z], best["amortized_alpha"][z])))
  return examples


POINT_COLUMNS = ["point", "label", "clean_label", "flipped", "mc_mean", "mle_c", "mle_alpha", "mle_sigma", "mle_beta",
                 "amortized_c", "amortized_alpha", "amortized_sigma", "amortized_beta", "psi_mle", "psi_amortized",
                 "psi_value_net", "tmc_shapley", "tmc_net", "banzhaf", "loo", "psi_true", "psi_true_se"]
_ESTIMATE_COLUMNS = ("mc", "mle_c", "mle_alpha", "mle_sigma", "mle_beta", "amortized_c", "amortized_alpha",
                     "amortized_sigma", "amortized_beta", "mle", "amortized", "value_net")


def _cell(v: Any) -> Any:
  return "" if v is None else (f"{float(v):.6g}" if isinstance(v, (float, np.floating)) else v)


def write_points_csv(path: str, pool: Pool, best: dict[str, np.ndarray], pool_values: dict[str, np.ndarray],
                     truth: Samples, budget: int) -> str:
  """One row per pool point: labels, every estimate at ``budget``, the baselines and the ground truth (if any)."""
  truth_of = dict(zip(truth.points.tolist(), zip(truth.values.tolist(), truth.standard_errors.tolist())))
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([f"# budget {budget} samples per point; psi = distributional value; empty psi_true: no ground truth"])
    w.writerow(POINT_COLUMNS)
    for i in range(len(pool.y)):
      t = truth_of.get(i, (None, None))
      row = [i, int(pool.y[i]), int(pool.y_clean[i]), int(pool.flipped[i]), *(best[c][i] for c in _ESTIMATE_COLUMNS),
             *(pool_values[c][i] if c in pool_values else None for c in ("tmc", "tmc_net", "banzhaf")),
             pool_values["loo"][i], t[0], t[1]]
      w.writerow([_cell(v) for v in row])
  return path


def write_outputs(study: Study, truth: Samples, estimates: dict[int, dict[str, np.ndarray]],
                  pool_values: dict[str, np.ndarray], scores: Scores, baselines: dict[str, tuple[float, str]],
                  added: Addition, laws: Laws) -> dict[str, str]:
  """Draws the figures of :data:`FIGURES` and writes ``points.csv`` into ``study.workdir``; returns the paths of
  every output of :data:`OUTPUTS` (``report.md`` and ``metrics.json`` are written by the caller)."""
  config, pool = study.config, study.pool
  paths = {name: study.path(name) for name in OUTPUTS}
  budgets = list(estimates)
  best = estimates[budgets[-1]]
  truth_fit, k_range = laws.truth_fit, (config.sampling.k_min, config.sampling.k_max)
  examples = scaling_examples(truth, truth_fit, pool.flipped, best, config.num_example_points)
  plot_accuracy(paths["accuracy.png"], budgets, scores.accuracy)
  if pool.flipped.any():                  # no flipped labels: nothing to detect, no figure
    plot_mislabeled(paths["mislabeled.png"], budgets, scores.auroc, baselines)
  plot_addition(paths["addition.png"], added.gains, added.sizes)
  law_report.plot_selection(paths["selection.png"], added)
  labels = [pool.group_names[g] for g in pool.groups] if pool.groups is not None else None
  law_report.plot_crossings(paths["crossings.png"], truth, truth_fit, best, laws.crossings["examples"], k_range,
                            labels)
  plot_scaling_curves(paths["scaling_curves.png"], examples, (config.sampling.k_min, config.sampling.k_max))
  law = config.addition.law
  fit = scaling.ScalingFit(best[f"{law}_c"], best[f"{law}_alpha"], best[f"{law}_sigma"], best[f"{law}_beta"],
                           np.full(len(pool.y), np.nan))
  plot_params(paths["params.png"], fit, pool.flipped, f"per-point scaling laws ({law}, budget {budgets[-1]})")
  write_points_csv(paths["points.csv"], pool, best, pool_values, truth, budgets[-1])
  return paths


def summarize(study: Study, samples: Samples, truth: Samples, solver_check: dict[str, float] | None,
              scores: Scores, baselines: dict[str, tuple[float, str]], added: Addition,
              timings: dict[str, float], laws: Laws) -> dict[str, Any]:
  """The numbers of ``metrics.json`` (budgets and sizes as string keys)."""
  pool = study.pool
  contributions = samples.count + truth.count
  sampling_time = samples.seconds + truth.seconds          # compute time of the blocks, compilation included
  return dict(
      pool=len(pool.y), flipped=int(pool.flipped.sum()), features=int(pool.x.shape[1]), classes=pool.num_classes,
      solver_check=solver_check, validation=len(pool.y_val), devices=int(study.mesh.size),
      contributions=int(contributions), truth_points=int(len(truth.points)),
      contributions_per_second=float(contributions / sampling_time) if sampling_time > 0 else None,
      sampling_seconds=float(sampling_time),
      accuracy={m: {str(b): v for b, v in scores.accuracy[m].items()} for m in METHODS},
      truth_noise_floor=scores.noise_floor,
      auroc={m: {str(b): v for b, v in scores.auroc[m].items()} for m in METHODS},
      baselines={k: v[0] for k, v in baselines.items()},
      addition_sizes=list(added.sizes), addition={str(k): v for k, v in added.gains.items()},
      addition_matched_minus_other={r: {str(k): v for k, v in d.items()} for r, d in added.paired.items()},
      addition_rank_correlation=added.rank_correlation, addition_truth_rank_correlation=added.truth_rank_correlation,
      addition_overlap=added.overlap, crossings=laws.crossings,
      recovery={**laws.recovery, "methods": {m: {str(b): v for b, v in rows.items()}
                                             for m, rows in laws.recovery["methods"].items()}},
      groups=laws.groups, timings=timings)


def addition_verdict(matched_minus_other: dict[str, dict[str, dict[str, float]]], sizes: Sequence[int]) -> str:
  """The claim and one verdict line per comparison: does the ranking made for the target size beat the compared
  rule there, at both ends of the sizes?

  The claim "the best points to add depend on the dataset size" holds when the size-matched law ranking gains
  more than the other end's ranking at both the smallest and the largest size (paired difference above two
  standard errors; 'law vs other end'); the other comparisons say whether it also beats size-free values.
  """
  ends = (sizes[0], sizes[-1])
  lines = ["**Verdict.** Do the best points to add depend on the dataset size? The size-matched ranking must gain "
           f"more than the ranking made at the other end of the sizes at both ends, k={ends[0]} and k={ends[1]} "
           "(paired difference above two standard errors)."]
  for name, paired in matched_minus_other.items():
    wins = [paired[str(k)]["mean"] > 2 * paired[str(k)]["se"] for k in ends]
    losses = [paired[str(k)]["mean"] < -2 * paired[str(k)]["se"] for k in ends]
    if all(wins):
      lines.append(reports.verdict(True, f"{name}: the size-matched ranking wins at both ends"
                                   + (", so the best points to add depend on the dataset size"
                                      if name.endswith("other end") else "")))
    else:
      detail = ", ".join(f"k={k}: {'wins' if w else 'loses' if l else 'ties'}" for k, w, l in zip(ends, wins, losses))
      lines.append(reports.verdict(False, f"{name}: the size-matched ranking does not win at both ends ({detail})"
                                   + ("; on this data this rule does not show that the best points depend on the "
                                      "size" if name.endswith("other end") else "")))
  return "\n\n".join(lines)


def _overview(config: Any, pool: Pool, summary: dict[str, Any]) -> list[str]:
  s, tr, m = config.sampling, config.truth, config.model
  rate, check = summary["contributions_per_second"], summary["solver_check"]
  # Under a second of sampling the rate mostly measures compilation: say so rather than hide the figure.
  short = " (a run under 1 s: compilation dominates this rate)" if summary.get("sampling_seconds", 2.0) < 1.0 else ""
  dist = "U" if s.size_distribution == "uniform" else "log-U"
  model = (f"regression (L2 = {m.l2}, sklearn's C = {1 / m.l2:g}; Newton steps in lax.scan)" if m.kind == "logistic"
           else f"MLP {tuple(m.hidden_sizes)}, {m.num_steps} full-batch Adam steps")
  return [
      f"Pool: {summary['pool']} training points, {summary['features']} features, {summary['classes']} classes; "
      f"**{summary['flipped']} labels flipped** (label_noise={config.label_noise}). Validation: "
      f"{summary['validation']} rows.",
      f"Utility U(D): validation {config.metric} of {m.kind} {model}, trained with vmap over subsets given as 0/1 "
      "weights on the pool.",
      f"Distributional samples: Delta = U(D u {{z}}) - U(D), |D| = k ~ {dist}[{s.k_min}, {s.k_max}), D stratified by "
      f"class ({s.balance}) and without z; {s.samples_per_point} per point. Ground truth: {tr.samples_per_point} "
      f"samples (sizes spread evenly {'in log k ' if tr.spacing == 'geometric' else ''}over the range) for "
      f"{summary['truth_points']} random points; its own noise is "
      f"{summary['truth_noise_floor']:.3f} std(true values) (RMSE floor).",
      *([f"Solver check: on {check['samples']} samples the contributions differ from a 40-Newton-step solve by at "
         f"most {check['max_delta_error']:.2g} ({100 * check['relative_to_delta_std']:.3f}% of std(Delta))."]
        if check else []),
      f"{summary['contributions']} marginal contributions on {summary['devices']} device(s)"
      + (f", **{rate:.0f} contributions/s** (two trainings each){short}." if rate else "."),
      "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in summary["timings"].items()),
  ]


def _budget_rows(values: dict[str, dict[int, Any]], budgets: Sequence[int], suffix: str = "",
                 field: str | None = None) -> list[list[str]]:
  return [[f"{label}{suffix}", *(f"{(values[m][b] if field is None else values[m][b][field]):.3f}" for b in budgets)]
          for m, label in METHODS.items()]


def _addition_section(report: reports.Report, config: Any, summary: dict[str, Any], added: Addition,
                      budget: int, num_truth_points: int) -> None:
  ad, sizes = config.addition, added.sizes
  small, large = sizes[0], sizes[-1]
  report.heading("Size-aware selection: point addition at each target size").text(
      f"Add the {ad.num_added} points with the highest predicted contribution c k^-alpha at the target size k* "
      f"({ad.law} fit, budget {budget}) to {ad.repeats} random class-stratified base datasets of size k* (drawn "
      "outside every candidate set; the same bases for every rule), for k* in "
      f"{', '.join(map(str, sizes))}; compared with the rankings made at other sizes, with size-free values (the "
      "law's distributional value, TMC Data Shapley, Data Banzhaf where computed) and with random points. The law's "
      f"rankings at k={small} and k={large} have Spearman correlation {summary['addition_rank_correlation']:.3f}; "
      f"their top-{ad.num_added} sets share {summary['addition_overlap']} points.")
  rows = [[rule, *(f"{added.gains[k][rule]['mean']:.5f} +- {added.gains[k][rule]['se']:.5f}" for k in sizes)]
          for rule in added.chosen]
  paired = summary["addition_matched_minus_other"]
  rows += [[f"**{name}** (size-matched minus {'k=' + ', k='.join(str(other_end(sizes, k)) for k in sizes)} "
            "ranking)" if name.endswith("other end") else f"**{name}** (size-matched minus it)",
            *(f"**{p[str(k)]['mean']:+.5f} +- {p[str(k)]['se']:.5f}**" for k in sizes)]
           for name, p in paired.items()]
  report.table(["rule", *(f"gain at k={k} (mean +- se)" for k in sizes)], rows)
  report.text(addition_verdict(paired, sizes))
  report.text(f"Among the {num_truth_points} ground-truth points, the mean contribution near k={small} and near "
              f"k={large} (samples within 25% of the size) have Spearman correlation "
              f"{summary['addition_truth_rank_correlation']:.3f}; the 'ground truth' rules choose "
              f"{min(ad.num_added, num_truth_points // 2)} of those points by it.")


def write_report(path: str, config: Any, pool: Pool, summary: dict[str, Any], scores: Scores,
                 baselines: dict[str, tuple[float, str]], added: Addition, budgets: Sequence[int],
                 num_truth_points: int) -> str:
  """Writes ``report.md`` (figures of :data:`FIGURES` linked from the same folder) and returns its path."""
  base = os.path.dirname(os.path.abspath(path))
  budgets = list(budgets)
  headers = ["method", *(f"b={b}" for b in budgets)]
  r = reports.Report(f"Data valuation with individualized scaling laws: {pool.name}")
  r.bullets(_overview(config, pool, summary))
  r.heading("Valuation accuracy vs ground truth").text(
      "Distributional value psi(z) = E_k E_D Delta, estimated from each point's first b samples. RMSE is divided by "
      "the spread of the true values; the amortized models are trained on all points' samples at that budget.")
  r.table(headers, _budget_rows(scores.accuracy, budgets, " (RMSE/std)", "nrmse")
          + _budget_rows(scores.accuracy, budgets, " (Spearman)", "spearman"))
  r.figure(os.path.join(base, "accuracy.png"), "accuracy")
  r.heading("Mislabeled-point detection")
  if summary["flipped"]:
    r.text("AUROC of flagging the flipped labels by low estimated value (all pool points).")
    r.table(headers, _budget_rows(scores.auroc, budgets))
    r.table(["baseline", "AUROC", "cost"], [[k, f"{v:.3f}", c] for k, (v, c) in baselines.items()])
    r.figure(os.path.join(base, "mislabeled.png"), "mislabeled")
  else:
    r.text(f"No labels flipped (label_noise={config.label_noise}): detection not measured.")
  law_report.laws_section(r, (config.sampling.k_min, config.sampling.k_max), budgets, summary)
  r.figure(os.path.join(base, "crossings.png"), "crossing pairs")
  _addition_section(r, config, summary, added, budgets[-1], num_truth_points)
  r.figure(os.path.join(base, "selection.png"), "selection gain vs target size")
  r.figure(os.path.join(base, "addition.png"), "addition")
  r.heading("Scaling curves and per-point laws").text(
      "Binned means of ground-truth samples with the MLE law fitted to them and the amortized law "
      f"(budget {budgets[-1]}); points with the clearest values among the ground-truth points.")
  r.figure(os.path.join(base, "scaling_curves.png"), "scaling curves")
  r.figure(os.path.join(base, "params.png"), "params")
  r.text("Per-point table: [points.csv](points.csv) (c, alpha, sigma, beta from MLE and the amortized network, "
         "values from every estimator, TMC Data Shapley, Data Banzhaf, leave-one-out, and ground truth where "
         "computed). All numbers: [metrics.json](metrics.json).")
  return r.write(path)
