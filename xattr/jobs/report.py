"""The attribution job's report: statistics streamed over the store chunk by chunk, plots, ``report.md``.

:func:`summarize` reads an :mod:`xattr.outputs` store one chunk at a time (bounded memory whatever the dataset
size): mean |attribution| per player, accuracy, mean reported std and evaluations, insertion/deletion AUCs with
their standard errors and mean curves; it keeps the first rows' predicted-class values for the plots.
:func:`write_report` turns that into ``report.md`` (:class:`xattr.reports.Report`), ``summary.json`` and the
figures (overlays for images, beeswarm and bar plots for tabular data, mean curves).

Example:
  >>> import tempfile, numpy as np
  >>> from xattr import outputs
  >>> path = tempfile.mkdtemp() + "/store"
  >>> specs = {"values": outputs.ArraySpec((2,), "float32"), "target": outputs.ArraySpec((), "int32"),
  ...          "prediction": outputs.ArraySpec((), "int32"), "label": outputs.ArraySpec((), "int32")}
  >>> store = outputs.create(path, specs, num_examples=3, chunk_size=2, fingerprint="f")
  >>> for c in (0, 1):
  ...   n = len(range(*store.chunk_rows(c)))
  ...   store.write_chunk(c, {"values": np.ones((n, 2)), "target": np.zeros(n), "prediction": np.zeros(n),
  ...                         "label": np.zeros(n)})
  >>> summary, kept = summarize(outputs.open(path), keep=2)
  >>> summary["accuracy"], summary["mean_abs_per_player"], kept["values"].shape
  (1.0, [1.0, 1.0], (2, 2))
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from xattr import artifacts, outputs, plots, reports

__all__ = ["target_rows", "summarize", "throughput_line", "write_report"]


def target_rows(values: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Each row's target-class values: ``[n, d, k]`` -> ``[n, d]`` (``[n, d]`` passes through)."""
  if values.ndim == 2:
    return values
  return np.take_along_axis(values, target[:, None, None], axis=2)[:, :, 0]


def _curve_sums(reader: outputs.Reader, start: int, end: int, sums: dict[str, Any]) -> None:
  for kind, key in (("insertion", "ins"), ("deletion", "del")):
    c = reader[kind][start:end].astype(np.float64)
    aucs = np.trapezoid(c, np.linspace(0.0, 1.0, c.shape[1]), axis=1)
    sums[f"auc_{key}"][0] += aucs.sum()
    sums[f"auc_{key}"][1] += (aucs ** 2).sum()
    sums[f"curves_{key}"] = c.sum(0) if sums[f"curves_{key}"] is None else sums[f"curves_{key}"] + c.sum(0)


def _summary(sums: dict[str, Any], n: int, d: int, reader: outputs.Reader) -> dict[str, Any]:
  summary: dict[str, Any] = dict(num_examples=n, accuracy=sums["correct"] / n,
                                 mean_abs_per_player=(sums["abs"] / n).tolist(),
                                 mean_per_player=(sums["signed"] / n).tolist(),
                                 mean_abs=float(sums["abs"].sum() / (n * d)))
  if "std" in reader:
    summary.update(mean_std=sums["std"] / n, mean_num_evals=sums["evals"] / n)
  if "insertion" in reader:
    for key, name in (("ins", "insertion"), ("del", "deletion")):
      mean = sums[f"auc_{key}"][0] / n
      var = max(sums[f"auc_{key}"][1] / n - mean ** 2, 0.0)
      summary[f"{name}_auc"] = mean
      summary[f"{name}_auc_sem"] = float(np.sqrt(var / max(n - 1, 1)))
      summary[f"{name}_curve"] = (sums[f"curves_{key}"] / n).tolist()
  return summary


def summarize(reader: outputs.Reader, *, keep: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Streams over the store: summary statistics, plus the first ``keep`` rows' target-class values.

  Returns:
    ``(summary, kept)``: summary statistics (JSON-able) and ``kept`` = dict ``values`` (``[keep, d]``),
    ``target``, ``label`` of the first ``keep`` examples.
  """
  n, d = reader.num_examples, reader.specs["values"].shape[0]
  sums = dict(abs=np.zeros(d), signed=np.zeros(d), std=0.0, evals=0.0, correct=0, curves_ins=None, curves_del=None,
              auc_ins=[0.0, 0.0], auc_del=[0.0, 0.0])
  kept: dict[str, list[np.ndarray]] = {"values": [], "target": [], "label": []}
  for start, values in reader["values"].chunks():
    end = start + len(values)
    target = reader["target"][start:end]
    a = target_rows(values, target).astype(np.float64)
    sums["abs"] += np.abs(a).sum(0)
    sums["signed"] += a.sum(0)
    sums["correct"] += int((reader["prediction"][start:end] == reader["label"][start:end]).sum())
    if "std" in reader:
      sums["std"] += float(target_rows(reader["std"][start:end], target).mean(1).sum())
      sums["evals"] += float(reader["num_evals"][start:end].sum())
    if "insertion" in reader:
      _curve_sums(reader, start, end, sums)
    if sum(len(v) for v in kept["values"]) < keep:
      kept["values"].append(a)
      kept["target"].append(target)
      kept["label"].append(reader["label"][start:end])
  return _summary(sums, n, d, reader), {k: np.concatenate(v)[:keep] for k, v in kept.items()}


def _figures(workdir: str, reader: outputs.Reader, source: Any, summary: Mapping[str, Any],
             kept: Mapping[str, np.ndarray], names: list[str]) -> dict[str, str]:
  meta, method = reader.metadata, reader.metadata["method"]
  k = len(kept["values"])
  x, _ = source.read(0, k)
  paths: dict[str, str] = {}
  if source.is_image:
    gh, gw = meta["grid"]
    paths["overlays"] = plots.heatmap_grid(
        x, {method: kept["values"].reshape(k, gh, gw)}, os.path.join(workdir, "overlays.png"),
        row_titles=[f"label {source.class_names[kept['label'][i]]} / pred {source.class_names[kept['target'][i]]}"
                    for i in range(k)])
  else:
    title = f"{source.name}: {method}, predicted class"
    paths["beeswarm"] = plots.summary_plot(kept["values"], x, names, os.path.join(workdir, "beeswarm.png"),
                                           title=title, xlabel="attribution (impact on the predicted class)")
    paths["bar"] = plots.bar_plot(kept["values"], names, os.path.join(workdir, "bar.png"), title=title,
                                  xlabel="mean |attribution|")
  if "insertion_curve" in summary:
    ins = np.asarray(summary["insertion_curve"])
    paths["curves"] = plots.curves_plot(
        np.linspace(0.0, 1.0, len(ins)),
        {method: {"insertion": ins[None], "deletion": np.asarray(summary["deletion_curve"])[None]}},
        os.path.join(workdir, "curves.png"), ylabel="predicted-class probability",
        players="patches" if source.is_image else "features")
  return paths


def _statistics(summary: Mapping[str, Any]) -> list[list[Any]]:
  rows: list[list[Any]] = [["mean \\|attribution\\|", summary["mean_abs"]]]
  if "mean_std" in summary:
    rows += [["mean reported std", summary["mean_std"]],
             ["mean game evaluations per example", f"{summary['mean_num_evals']:.1f}"]]
  if "insertion_auc" in summary:
    rows += [["insertion AUC (higher is better)", f"{summary['insertion_auc']:.4f} ± {summary['insertion_auc_sem']:.4f}"],
             ["deletion AUC (lower is better)", f"{summary['deletion_auc']:.4f} ± {summary['deletion_auc_sem']:.4f}"]]
  return rows


def throughput_line(timings: Mapping[str, Any]) -> str:
  """The report's throughput sentence; a rerun with nothing left to compute quotes the run(s) that did the work.

  Example:
    >>> throughput_line({"attributions_per_s": 12.5, "attribute_s": 8.0})
    'Throughput of this run: 12.50 attributions/s (8.0 s for the chunks computed now)'
    >>> throughput_line({"attributions_per_s": 12.5, "attribute_s": 8.0, "nothing_left": True}).split("; ")[1]
    'throughput of the run(s) that computed it: 12.50 attributions/s (8.0 s)'
  """
  rate = float(timings.get("attributions_per_s", float("nan")))
  seconds = float(timings.get("attribute_s", 0.0))
  if not timings.get("nothing_left"):
    return f"Throughput of this run: {rate:.2f} attributions/s ({seconds:.1f} s for the chunks computed now)"
  head = "Nothing was left to compute in this run (every chunk was in the store)"
  if not np.isfinite(rate):
    return head + "; the store does not record the throughput of the run(s) that computed it."
  return head + f"; throughput of the run(s) that computed it: {rate:.2f} attributions/s ({seconds:.1f} s)"


def write_report(config: Any, workdir: str, reader: outputs.Reader, source: Any,
                 timings: Mapping[str, float]) -> tuple[dict[str, Any], dict[str, str]]:
  """Writes ``report.md``, ``summary.json`` and the plots from the store (read chunk by chunk).

  Args:
    config: the attribution config (``target`` and ``report`` settings).
    workdir: where the report and figures go.
    reader: the finished store.
    source: the examples (the first ones are plotted).
    timings: job timings (``attributions_per_s``, ``attribute_s``, ...).

  Returns:
    ``(summary, paths)``: the statistics and the written files (``report``, ``summary``, figures).
  """
  summary, kept = summarize(reader, keep=config.report.num_images if source.is_image else config.report.max_points)
  meta, method = reader.metadata, reader.metadata["method"]
  names = meta["feature_names"] or [f"patch {i}" for i in range(len(summary["mean_abs_per_player"]))]
  paths = {"report": os.path.join(workdir, "report.md"), "summary": os.path.join(workdir, "summary.json")}
  paths.update(_figures(workdir, reader, source, summary, kept, names))
  k = len(kept["values"])
  r = reports.Report(f"Attributions: {method} on {source.name} ({meta['split']} split)")
  r.bullets([f"Model: {meta['model']}",
             f"Examples: {summary['num_examples']} in {reader.num_chunks} chunks of {reader.chunk_size}; model "
             f"accuracy on them {summary['accuracy']:.4f}",
             f"Values: {tuple(reader.specs['values'].shape)} per example ("
             f"{'every class' if config.target == 'all' else 'the predicted class'}); statistics below are for the "
             "predicted class.",
             f"Store: `{reader.path}` (read with `xattr.outputs.open(path)`), fingerprint {reader.fingerprint}, "
             f"seed {meta['seed']}, versions {meta['versions']}",
             throughput_line(timings)])
  r.heading("Summary statistics").table(["statistic", "value"], _statistics(summary), digits=4)
  order = np.argsort(summary["mean_abs_per_player"])[::-1][:10]
  r.text("Top players by mean |attribution|:")
  r.table(["player", "mean \\|attribution\\|", "mean attribution"],
          [[names[j], summary["mean_abs_per_player"][j], summary["mean_per_player"][j]] for j in order], digits=4)
  if "curves" in paths:
    r.heading("Insertion / deletion curves").text(
        "Players added to the empty coalition (removed from the full one) in decreasing attribution order, through "
        "the job's removal; mean over all examples.").figure(paths["curves"], "insertion and deletion curves")
  if source.is_image:
    r.heading("Attribution overlays").text(f"The first {k} examples (red: positive, blue: negative).")
    r.figure(paths["overlays"], "attribution overlays")
  else:
    r.heading("Summary plot").text(f"Beeswarm of the first {k} examples (color: feature value).")
    r.figure(paths["beeswarm"], "beeswarm summary").figure(paths["bar"], "mean |attribution|")
  r.write(paths["report"])
  artifacts.save_json(paths["summary"], dict(summary, timings=dict(timings)))
  return summary, paths
