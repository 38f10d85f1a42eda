"""Sample efficiency of Shapley estimators: xattr against every shapiq approximator and shap, at matched game rows.

Games: three scikit-learn models of different kinds (a random forest on diabetes, d = 10; logistic regression on
wine, d = 13; an MLP on the first 16 breast-cancer features), each explained at a few test inputs with baseline
removal (absent features take the training mean). Every game's 2^d values are tabulated once in float64, so each
tool is handed the same game and the exact Shapley values come from enumeration (computed here in numpy,
independently of xattr). Budgets are matched by counting the rows each tool evaluates: shapiq's approximators are
given the budget and their calls are counted; xattr's settings are the largest whose ``num_evals`` fits the
budget; shap's KernelExplainer gets ``nsamples = budget`` with the one-row baseline as background.

Prints, per budget, the normalized MSE (sum of squared errors over sum of squared true values, averaged over
inputs and seeds) of every method, ``mse_ratio_vs_best_peer=<x>`` (xattr's most accurate estimator, named on the
line, over the best peer; ``kernel_shap``'s own ratio beside it) and, for xattr's estimators, the std calibration
ratio (root mean reported variance over RMSE; 1 is calibrated).

Run (shapiq >= 1.5 needs Python >= 3.12: the benchmark has its own environment):
  /root/.pyenv/versions/3.12.1/bin/python -m venv .venv-bench
  .venv-bench/bin/pip install -e '.[dev]' 'shapiq>=1.5' 'shap>=0.46'
  .venv-bench/bin/python -m tools.bench.estimators                   # budgets 128,512,2048, 10 seeds
  .venv-bench/bin/python -m tools.bench.estimators --seeds=3 --inputs=2 # quicker
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)      # the tables and xattr's solves in float64, like the peers


def _datasets():
  from sklearn import datasets, ensemble, linear_model, neural_network, preprocessing
  diabetes, wine, cancer = datasets.load_diabetes(), datasets.load_wine(), datasets.load_breast_cancer()
  x_c = preprocessing.StandardScaler().fit_transform(cancer.data[:, :16])
  x_w = preprocessing.StandardScaler().fit_transform(wine.data)
  models = {
      "diabetes_forest": (ensemble.RandomForestRegressor(50, max_depth=6, random_state=0).fit(diabetes.data,
                                                                                              diabetes.target),
                          diabetes.data, lambda m, x: m.predict(x)),
      "wine_logistic": (linear_model.LogisticRegression(max_iter=2000).fit(x_w, wine.target), x_w,
                        lambda m, x: m.predict_proba(x)[:, 0]),
      "cancer_mlp": (neural_network.MLPClassifier((32,), max_iter=2000, random_state=0).fit(x_c, cancer.target),
                     x_c, lambda m, x: m.predict_proba(x)[:, 1]),
  }
  return models


def coalitions(d: int) -> np.ndarray:
  """bool[2^d, d]: row r is the coalition whose bit i is bit i of r."""
  return ((np.arange(2 ** d)[:, None] >> np.arange(d)) & 1).astype(bool)


def exact_shapley(table: np.ndarray, d: int) -> np.ndarray:
  """Exact Shapley values of a tabulated game (numpy, float64)."""
  from math import comb
  masks = coalitions(d)
  sizes = masks.sum(1)
  phi = np.zeros(d)
  for i in range(d):
    without = ~masks[:, i]
    s = sizes[without]
    w = 1.0 / (d * np.array([comb(d - 1, k) for k in s], float))
    idx = np.nonzero(without)[0]
    phi[i] = np.sum(w * (table[idx | (1 << i)] - table[idx]))
  return phi


def make_games(num_inputs: int) -> list[dict]:
  games = []
  for name, (model, x, f) in _datasets().items():
    d = x.shape[1]
    mean, masks = x.mean(0), coalitions(d)
    for j in range(num_inputs):
      xi = x[(37 * j + 11) % len(x)]
      rows = np.where(masks, xi, mean)
      table = np.asarray(f(model, rows), np.float64)
      games.append(dict(name=name, input=j, d=d, table=table, truth=exact_shapley(table, d), model=model, f=f,
                        x=xi, mean=mean))
  return games


def nmse(estimates: np.ndarray, truth: np.ndarray) -> np.ndarray:
  return np.sum((estimates - truth) ** 2, -1) / np.sum(truth ** 2)


# ---------------------------------------------------------------------------------------------------------------
# xattr
# ---------------------------------------------------------------------------------------------------------------

def lookup(table: jax.Array, d: int) -> Callable[[jax.Array], jax.Array]:
  """The tabulated game as a jax game: bool[n, d] -> table[row index of each coalition]."""
  bits = 2 ** jnp.arange(d)
  return lambda m: table[jnp.sum(m.astype(jnp.int32) * bits, -1)]


XATTR: dict[str, Callable] = {
    "xattr kernel_shap": lambda game, d, k, n: __import__("xattr").shapley.kernel_shap(game, d, k, num_samples=n),
    "xattr odd_kernel_shap": lambda game, d, k, n: __import__("xattr").shapley.odd_kernel_shap(
        game, d, k, num_samples=n),
    "xattr permutation": lambda game, d, k, n: __import__("xattr").shapley.permutation(
        game, d, k, num_permutations=max(2, 2 * (n // (2 * d)))),
}


def xattr_runner(method: str, d: int, n: int, methods: dict[str, Callable] = XATTR):
  """jit(vmap over PRNG keys) of methods[method](game, d, key, n) on a table: (table, keys) -> Estimate."""
  fn = methods[method]

  @jax.jit
  def run(table, keys):
    return jax.vmap(lambda k: fn(lookup(table, d), d, k, n))(keys)

  return run


def fit_budget(method: str, d: int, budget: int, table: np.ndarray, methods: dict[str, Callable] = XATTR) -> int:
  """The largest even setting n whose num_evals fits the budget (bisection: num_evals grows with n)."""
  evals = lambda n: int(np.max(xattr_runner(method, d, n, methods)(jnp.asarray(table),
                                                                  jax.random.split(jax.random.key(0), 1)).num_evals))
  lo, hi = 2 * d, budget                          # evals(lo) fits (checked below), hi is the upper end
  try:
    if evals(lo) > budget:
      return lo
  except ValueError:                               # below the method's minimum: search up from the budget end
    lo = budget // 4 * 2
  while hi - lo > 2:
    mid = (lo + hi) // 4 * 2
    lo, hi = (mid, hi) if evals(mid) <= budget else (lo, mid)
  return hi if evals(hi) <= budget else lo


def run_xattr(method: str, game: dict, budget: int, seeds: int, cache: dict,
              methods: dict[str, Callable] = XATTR) -> tuple[np.ndarray, np.ndarray, int]:
  d = game["d"]
  key = (method, d, budget)
  if key not in cache:
    cache[key] = fit_budget(method, d, budget, game["table"], methods)
  n = cache[key]
  keys = jax.random.split(jax.random.key(1000 + game["input"]), seeds)
  est = xattr_runner(method, d, n, methods)(jnp.asarray(game["table"]), keys)
  return np.asarray(est.values), np.asarray(est.std), int(np.max(est.num_evals))


# ---------------------------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------------------------

def shapiq_approximators() -> dict[str, Callable[[int, int], object]]:
  import shapiq.approximator as A
  out = {"shapiq KernelSHAP (paired)": lambda d, s: A.KernelSHAP(d, pairing_trick=True, random_state=s),
         "shapiq KernelSHAP": lambda d, s: A.KernelSHAP(d, pairing_trick=False, random_state=s)}
  for cls in A.SV_APPROXIMATORS:
    name = f"shapiq {cls.__name__}"
    if cls.__name__ == "KernelSHAP" or name in out:
      continue
    out[name] = (lambda c: lambda d, s: c(**_sv_kwargs(c, d, s)))(cls)
  return out


def _sv_kwargs(cls: type, d: int, seed: int) -> dict:
  """Constructor arguments for a Shapley-value run of a shapiq approximator (some take the index, some not)."""
  import inspect
  params = inspect.signature(cls.__init__).parameters
  kwargs = {"n": d, "random_state": seed}
  if "index" in params:
    kwargs["index"] = "SV"
  if "max_order" in params:
    kwargs["max_order"] = 1
  return {k: v for k, v in kwargs.items() if k in params or any(p.kind == p.VAR_KEYWORD for p in params.values())}


def run_shapiq(make: Callable, game: dict, budget: int, seeds: int) -> tuple[np.ndarray | None, int, str]:
  d, table = game["d"], game["table"]
  bits = 2 ** np.arange(d)
  rows = [0]

  def value(c: np.ndarray) -> np.ndarray:
    c = np.atleast_2d(np.asarray(c, bool))
    rows[0] += len(c)
    return table[c.astype(np.int64) @ bits]

  out = []
  try:
    for s in range(seeds):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        iv = make(d, s).approximate(budget, value)
      out.append([iv[(i,)] for i in range(d)])
  except Exception as err:                    # an approximator that needs an extra or rejects the setting
    return None, 0, f"{type(err).__name__}: {str(err)[:80]}"
  return np.asarray(out), rows[0] // seeds, ""


def run_shap(game: dict, budget: int, seeds: int) -> tuple[np.ndarray, int]:
  import shap
  rows = [0]

  def f(x):
    rows[0] += len(x)
    return game["f"](game["model"], x)

  out = []
  for s in range(seeds):
    np.random.seed(s)
    explainer = shap.KernelExplainer(f, game["mean"][None, :])
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      out.append(np.asarray(explainer.shap_values(game["x"][None], nsamples=budget, l1_reg=False,
                                                  silent=True)).reshape(-1))
  return np.asarray(out), rows[0] // seeds


# ---------------------------------------------------------------------------------------------------------------

def base_parser(doc: str) -> argparse.ArgumentParser:
  """The flags every sample-efficiency benchmark takes: budgets, seeds, inputs, a peer filter."""
  p = argparse.ArgumentParser(description=doc.split("\n")[0])
  p.add_argument("--budgets", default="128,512,2048")
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument("--inputs", type=int, default=3, help="inputs explained per model")
  p.add_argument("--peers", default="", help="comma-separated substrings: run only the shapiq approximators "
                 "whose name contains one (default: all)")
  return p


def start(args: argparse.Namespace, games: list[dict], peers: dict, extra: str = "") -> tuple[list[int], dict]:
  """(budgets, the peers the --peers filter keeps), after printing the run's header line."""
  budgets = [int(b) for b in args.budgets.split(",")]
  print(f"{len(games)} games ({', '.join(sorted({g['name'] for g in games}))}), budgets {budgets}, "
        f"{args.seeds} seeds; jax {jax.__version__}{extra}", flush=True)
  if args.peers:
    peers = {k: v for k, v in peers.items() if any(p in k for p in args.peers.split(","))}
  return budgets, peers


def record(cell: dict, method: str, values: np.ndarray, truth: np.ndarray, rows: int,
           std: np.ndarray | None = None) -> dict:
  """Adds one game's results of ``method`` to a budget's ``cell``: its normalized MSE and rows, and for an
  estimator that reports a std the mean reported variance and squared error (for the calibration ratio)."""
  r = cell.setdefault(method, dict(nmse=[], rows=[], s=0.0, **({} if std is None else dict(var=[], sq=[]))))
  r["nmse"].append(nmse(values, truth).mean())
  r["rows"].append(rows)
  if std is not None:
    r["var"].append(np.mean(std ** 2))
    r["sq"].append(np.mean((values - truth) ** 2))
  return r


def main(argv: list[str] | None = None) -> dict:
  p = base_parser(__doc__)
  p.add_argument("--shap", type=int, default=1, help="also shap.KernelExplainer (slow: a model call per input)")
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  games = make_games(args.inputs)
  budgets, peers = start(args, games, shapiq_approximators())
  results, skipped, cache = {}, {}, {}
  for budget in budgets:
    cell = results.setdefault(budget, {})
    for game in games:
      for method in XATTR:
        values, std, rows = run_xattr(method, game, budget, args.seeds, cache)
        record(cell, method, values, game["truth"], rows, std)
      for name, make in peers.items():
        values, rows, why = run_shapiq(make, game, budget, args.seeds)
        if values is None:
          skipped[name] = why
          continue
        record(cell, name, values, game["truth"], rows)
      if args.shap:
        values, rows = run_shap(game, budget, args.seeds)
        record(cell, "shap KernelExplainer", values, game["truth"], rows)
    _print_budget(budget, cell)
  for name, why in skipped.items():
    print(f"skipped {name}: {why}")
  print(f"total {time.perf_counter() - t0:.0f} s")
  return results


def print_methods(cell: dict, seconds: bool = False) -> str | None:
  """Prints one line per method of a budget's ``cell`` (best first: normalized MSE, rows, optionally wall seconds,
  std calibration for xattr's estimators); returns the best peer's name (None without peers)."""
  for m in sorted(cell, key=lambda m: np.mean(cell[m]["nmse"])):
    r = cell[m]
    calib = (f"  std calibration {np.sqrt(np.mean(r['var']) / np.mean(r['sq'])):.2f}" if "var" in r else "")
    secs = f"  s {r['s']:6.1f}" if seconds else ""
    print(f"  {m:<36} nmse {np.mean(r['nmse']):.3e}  rows {np.mean(r['rows']):7.0f}{secs}{calib}")
  peers = [m for m in cell if not m.startswith("xattr")]
  return min(peers, key=lambda m: np.mean(cell[m]["nmse"])) if peers else None


def _print_budget(budget: int, cell: dict) -> None:
  print(f"\nbudget {budget} game rows (normalized MSE, mean over games, inputs and seeds; rows = mean rows used)")
  best = print_methods(cell)
  if best is None:
    return
  mine = min((m for m in cell if m.startswith("xattr")), key=lambda m: np.mean(cell[m]["nmse"]))
  ratio = lambda m: np.mean(cell[m]["nmse"]) / np.mean(cell[best]["nmse"])
  print(f"mse_ratio_vs_best_peer={ratio(mine):.2f} (budget {budget}; {mine} / best peer: {best}; "
        f"kernel_shap alone: {ratio('xattr kernel_shap'):.2f})", flush=True)


if __name__ == "__main__":
  main()
