"""What a reader of the drivers' figures would trip over: lines of two methods that look alike, axis labels naming
the wrong players, bar charts that drop features silently. Figures are caught at ``savefig`` and inspected."""

import os

import numpy as np
import pytest
from matplotlib.figure import Figure

from configs.attribute.base import base_config
from xattr import data, jobs, outputs, plots
from xattr.selection import plots as selection_plots
from xattr.vit_shapley import evaluate as vit_evaluate


@pytest.fixture
def saved(monkeypatch):
  """The figures saved during the test, in order."""
  figures = []
  original = Figure.savefig

  def record(self, *args, **kwargs):
    figures.append(self)
    return original(self, *args, **kwargs)

  monkeypatch.setattr(Figure, "savefig", record)
  return figures


def _line_styles(fig):
  return [(line.get_label(), line.get_color(), line.get_marker(), line.get_linestyle())
          for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")]


def _assert_distinct(styles):
  looks = [s[1:] for s in styles]
  twins = [(a[0], b[0]) for i, a in enumerate(styles) for b in styles[i + 1:] if a[1:] == b[1:]]
  assert len(set(looks)) == len(looks), f"lines that look alike: {twins}"


def test_method_styles_are_distinct_and_stable():
  names = [f"m{i}" for i in range(40)]
  styles = plots.method_styles(names)
  assert len({tuple(s.values()) for s in styles.values()}) == 40
  assert len({styles[n]["color"] for n in names[:16]}) == 16             # distinct colours up to the palette size
  assert plots.method_styles(names[:5]) == {n: styles[n] for n in names[:5]}


def test_vit_shapley_curves_give_every_method_its_own_look(saved, tmp_path):
  shown = ("ground_truth", "explainer", *vit_evaluate.BASELINES)       # 16 methods, as the report draws them
  curves = {m: {"insertion": np.random.default_rng(i).random((2, 5)), "deletion": np.zeros((2, 5))}
            for i, m in enumerate(shown)}
  plots.curves_plot(np.linspace(0, 1, 5), curves, tmp_path / "curves.png")
  fig = saved[-1]
  per_axis = _line_styles(fig)[:len(shown)]
  assert len(per_axis) == len(shown)
  _assert_distinct(per_axis)                 # ground truth and KernelSHAP were both blue (colour cycle of 10)
  fig.canvas.draw()                          # and the legend of 16 methods hides no curve
  (legend,) = fig.legends
  assert not any(legend.get_window_extent().overlaps(ax.get_window_extent()) for ax in fig.axes)
  assert len(legend.get_texts()) == len(shown)
  maps = {m: np.random.default_rng(0).normal(size=(2, 2, 2)) for m in shown}
  plots.heatmap_grid(np.zeros((2, 8, 8, 1)), maps, tmp_path / "heatmaps.png")
  assert saved[-1].get_size_inches()[0] <= 9 * 1.6 + 1e-6      # wrapped, not a 17-panel strip
  assert len(saved[-1].axes) == 2 * (1 + len(shown))


def test_dfs_cost_plot_tells_the_stopping_rules_apart(saved, tmp_path):
  x = np.arange(4.0)
  curves = {name: (x, x * (i + 1) / 10, np.zeros(4)) for i, name in enumerate(
      ["gdfs (penalized)", "gdfs (confidence)", "dime (penalized)", "dime (confidence)", "static", "random"])}
  selection_plots.curves_plot(curves, tmp_path / "metric_vs_cost.png", xlabel="cost", ylabel="accuracy")
  _assert_distinct(_line_styles(saved[-1]))


def test_bar_and_beeswarm_say_when_features_are_left_out(saved, tmp_path):
  rng = np.random.default_rng(0)
  values, x, names = rng.normal(size=(8, 30)), rng.normal(size=(8, 30)), [f"f{j}" for j in range(30)]
  plots.bar_plot(values, names, tmp_path / "bar.png", title="wine: kernel_shap")
  plots.summary_plot(values, x, names, tmp_path / "summary.png", max_display=10)
  assert "top 20 of 30 features" in saved[0].axes[0].get_title() and "wine" in saved[0].axes[0].get_title()
  assert "top 10 of 30 features" in saved[1].axes[0].get_title()
  plots.bar_plot(values[:, :5], names[:5], tmp_path / "all.png", title="all five")
  assert saved[2].axes[0].get_title() == "all five"


def test_tabular_job_curves_count_features_not_patches(saved, tmp_path):
  n, d, k = 4, 3, 2
  specs = {"values": outputs.ArraySpec((d,), "float32"), "probs": outputs.ArraySpec((k,), "float32"),
           "prediction": outputs.ArraySpec((), "int32"), "label": outputs.ArraySpec((), "int32"),
           "target": outputs.ArraySpec((), "int32"), "insertion": outputs.ArraySpec((d + 1,), "float32"),
           "deletion": outputs.ArraySpec((d + 1,), "float32")}
  meta = {"method": "leave_one_out", "split": "test", "model": "toy", "seed": 0, "versions": {}, "grid": None,
          "feature_names": ["a", "b", "c"]}
  store = outputs.create(str(tmp_path / "s"), specs, num_examples=n, chunk_size=n, fingerprint="f", metadata=meta)
  rng = np.random.default_rng(0)
  store.write_chunk(0, {name: rng.random((n, *s.shape)).astype(s.dtype) if s.dtype == "float32"
                        else np.zeros(n, s.dtype) for name, s in specs.items()})
  config = base_config()
  config.target = "predicted"
  source = data.from_arrays("toy", rng.normal(size=(n, d)), np.zeros(n, int), feature_names=["a", "b", "c"])
  _, paths = jobs.write_report(config, str(tmp_path), outputs.open(tmp_path / "s"), source,
                               {"attributions_per_s": 1.0, "attribute_s": 1.0})
  curves = [f for f in saved if any("inserted" in ax.get_xlabel() for ax in f.axes)]
  assert os.path.exists(paths["curves"]) and curves
  assert [ax.get_xlabel() for ax in curves[-1].axes] == ["fraction of features inserted",
                                                         "fraction of features deleted"]


def test_valuation_mislabeled_legend_hides_no_label(saved, tmp_path):
  from xattr.valuation import report as valuation_report
  from xattr.valuation.study import METHODS

  budgets = [8]                              # one budget, as in the smoke run: the lines' labels start mid-plot
  aurocs = {m: {b: 0.79 - 0.1 * i for b in budgets} for i, m in enumerate(METHODS)}
  baselines = {"leave-one-out": (0.81, "81 fits"), "TMC Data Shapley": (0.79, "162 fits"),
               "TMC + stochastic amortization": (0.43, "162 fits")}
  valuation_report.plot_mislabeled(str(tmp_path / "mislabeled.png"), budgets, aurocs, baselines)
  fig = saved[-1]
  fig.canvas.draw()
  ax = fig.axes[0]
  legend = ax.get_legend()
  legend_box = legend.get_window_extent()
  shown = [t.get_text() for t in legend.get_texts()] + [t.get_text() for t in ax.texts]
  for name in baselines:                     # every baseline is named somewhere a reader can see it ...
    assert any(name in text for text in shown), name
  for text in ax.texts:                      # ... and no label sits under the legend
    assert not text.get_window_extent().overlaps(legend_box), text.get_text()
  _assert_distinct(_line_styles(fig))


def test_valuation_addition_legend_covers_no_bar(saved, tmp_path):
  from xattr.valuation import report as valuation_report

  rules = ["top by law at k=20", "top by law at k=59", "top by ground truth at k=20", "top by distributional value",
           "top by TMC Data Shapley", "random"]
  result = {k: {rule: {"mean": 0.4 - 0.05 * i, "se": 0.02} for i, rule in enumerate(rules)} for k in (20, 59)}
  valuation_report.plot_addition(str(tmp_path / "addition.png"), result, (20, 59))
  fig = saved[-1]
  fig.canvas.draw()
  ax = fig.axes[0]
  legend_box = ax.get_legend().get_window_extent()
  assert not any(bar.get_window_extent().overlaps(legend_box) for bar in ax.patches)
