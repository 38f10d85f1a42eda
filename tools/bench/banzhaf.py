"""Sample efficiency of Banzhaf estimators: xattr against every shapiq approximator of Banzhaf values, at matched
game rows (the Banzhaf twin of ``tools.bench.estimators``).

Games: the same three scikit-learn models, inputs and tables as ``tools.bench.estimators`` (a random forest on
diabetes, d = 10; logistic regression on wine, d = 13; an MLP on the first 16 breast-cancer features; baseline
removal). The exact Banzhaf values come from the 2^d-row float64 tables, in numpy and independently of xattr:
beta_i = mean over the coalitions S without i of v(S u {i}) - v(S). Budgets are matched by counting the rows each
tool evaluates: shapiq's approximators are given the budget and their calls are counted; xattr's ``num_samples``
is the largest whose ``num_evals`` fits the budget (``banzhaf.msr``: num_evals = num_samples;
``banzhaf.kernel_banzhaf``: num_samples, or 2^d when num_samples >= 2^d and it enumerates), run jit + vmapped
over the seeds.

Peers (shapiq 1.8.0; every approximator that accepts index "BV", run at max_order=1 where it takes one):
  SVARM, SVARMIQ, SHAPIQ (Monte Carlo), RegressionFBII (Kernel Banzhaf: FBII at order 1, see below),
  ProxySHAP (the Banzhaf values of a proxy model fitted to the sampled rows; its default, adjustment=False),
  RegressionMSR (the same proxy plus an MSR correction on its residuals: ProxySHAP's adjustment=True), ProxySPEX
  (a proxy model read out as a sparse Fourier expansion).
  Each with both settings of its ``pairing_trick`` (complementary coalitions), "(paired)" / "(unpaired)" naming
  the one that is not the class's default. SHAPIQ and SVARMIQ also with index "FBII" at order 1: the same
  samplers with another weighting, a different estimate of the same values. (SVARMIQ with "BV" at order 1
  reproduces SVARM bit for bit; both are listed.)
  Equivalence checks (run once against the exact values from the tables): at a budget of 2^d (d = 10 forest) every
  one of these except ProxySPEX returns the exact Banzhaf values (normalized MSE ~1e-30); below it (3 seeds) the
  error falls towards 0 with the budget (wine at 2^(d-2) / 2^(d-1) rows, MLP at 2^14 / 2^15: RegressionFBII
  1.6e-3 / 6.1e-4, 1.0e-4 / 8.4e-5; SHAPIQ "FBII" 4.3e-2 / 1.7e-2, 1.1e-3 / 6.2e-4; SVARMIQ "FBII" 7.6e-3 /
  3.0e-3, 9.7e-4 / 5.4e-4), so FBII at order 1 is the Banzhaf value (as it must be: the first-order coefficients
  of the uniform least-squares fit). ProxySPEX reports the Banzhaf values of its fitted proxy: its error levels
  off (wine 1.9e-2, MLP 5.3e-3, 1.2e-2 on the d = 10 forest even with all 2^d rows), a biased estimator of the
  same values, kept because it is one of shapiq's Banzhaf approximators. Neither xgboost nor lightgbm is
  installed in ``.venv-bench``, so ProxySHAP, RegressionMSR and ProxySPEX use shapiq's fallback proxy (a
  scikit-learn decision tree), as in ``tools.bench.estimators``.
Excluded: SPEX and ShaplEIG accept "BV" but do not instantiate in shapiq 1.8.0 (abstract ``approximate``): they
  stay in the roster and are printed as skipped, with the error, until a release implements them. Index "BII" at
  order 1 (SHAPIQ, SVARMIQ) gives bit-identical estimates to "BV". The Shapley-only approximators (KernelSHAP,
  LeverageSHAP, permutation, stratified and Owen sampling, kADD-SHAP, PolySHAP, OddSHAP, UnbiasedKernelSHAP,
  RegressionFSII) and the SII / STII ones (KernelSHAPIQ, InconsistentKernelSHAPIQ, PermutationSamplingSII / STII)
  estimate other values; shap has no Banzhaf estimator.

Prints, per budget, the normalized MSE (sum of squared errors over sum of squared true values, averaged over
inputs and seeds) of every method, for xattr's estimators the std calibration ratio (root mean reported variance
over RMSE; 1 is calibrated) and each method's wall time, kernel_banzhaf's and the best peer's error per game
(the mean is the hardest games', as normalized errors of games with small values dominate it), then
``banzhaf_mse_ratio_vs_best_peer=<x>`` (xattr's ``kernel_banzhaf`` over the best peer) and ``msr`` over the best
peer for reference.

Run (shapiq >= 1.5 needs Python >= 3.12: the benchmark has its own environment, see ``tools.bench.estimators``):
  .venv-bench/bin/python -m tools.bench.banzhaf                     # budgets 128,512,2048, 10 seeds, 3 inputs
  .venv-bench/bin/python -m tools.bench.banzhaf --seeds=2 --inputs=1  # quicker
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tools.bench.estimators import (base_parser, coalitions, fit_budget, make_games, print_methods, record,
                                   run_shapiq, run_xattr, start, xattr_runner)

jax.config.update("jax_enable_x64", True)      # the tables and xattr's solves in float64, like the peers


def exact_banzhaf(table: np.ndarray, d: int) -> np.ndarray:
  """Exact Banzhaf values of a tabulated game (numpy, float64): mean marginal contribution over all 2^(d-1)
  coalitions without i."""
  masks = coalitions(d)
  beta = np.zeros(d)
  for i in range(d):
    idx = np.nonzero(~masks[:, i])[0]
    beta[i] = np.mean(table[idx | (1 << i)] - table[idx])
  return beta


# ---------------------------------------------------------------------------------------------------------------
# xattr
# ---------------------------------------------------------------------------------------------------------------

def _banzhaf():
  import xattr.banzhaf
  return xattr.banzhaf


XATTR: dict[str, Callable] = {
    "xattr kernel_banzhaf": lambda game, d, k, n: _banzhaf().kernel_banzhaf(game, d, k, num_samples=n,
                                                                            batch_size=n),
    "xattr msr": lambda game, d, k, n: _banzhaf().msr(game, d, k, num_samples=n, batch_size=n),
}


def fit_xattr(method: str, d: int, budget: int, table: np.ndarray) -> int:
  """num_samples for ``method`` at ``budget`` rows: the budget itself (rounded down to even) when its num_evals fits,
  as it does for both estimators here, else the bisection of ``tools.bench.estimators.fit_budget`` (one compilation
  instead of about ten)."""
  n = budget - budget % 2
  one_key = jax.random.split(jax.random.key(0), 1)
  if int(np.max(xattr_runner(method, d, n, XATTR)(jnp.asarray(table), one_key).num_evals)) <= budget:
    return n
  return fit_budget(method, d, budget, table, XATTR)


# ---------------------------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------------------------

# (class name, index): every shapiq approximator of Banzhaf values (see the module docstring).
PEERS = [("SVARM", "BV"), ("SVARMIQ", "BV"), ("SVARMIQ", "FBII"), ("SHAPIQ", "BV"), ("SHAPIQ", "FBII"),
         ("RegressionFBII", "FBII"), ("RegressionMSR", "BV"), ("ProxySHAP", "BV"), ("ProxySPEX", "BV"),
         ("SPEX", "BV"), ("ShaplEIG", "BV")]


def shapiq_approximators() -> dict[str, Callable[[int, int], object]]:
  """name -> make(d, seed): a shapiq approximator of order-1 Banzhaf values, each pairing setting."""
  import inspect

  import shapiq.approximator as A
  out = {}
  for cls_name, index in PEERS:
    cls = getattr(A, cls_name)
    params = inspect.signature(cls.__init__).parameters
    pairing = params["pairing_trick"].default if "pairing_trick" in params else None
    for paired in ([pairing, not pairing] if pairing is not None else [None]):
      name = f"shapiq {cls_name}" + (f" {index}" if index == "FBII" and cls_name != "RegressionFBII" else "")
      if paired is not None and paired != pairing:
        name += " (paired)" if paired else " (unpaired)"
      out[name] = (lambda c, i, p: lambda d, s: c(**_bv_kwargs(c, d, s, i, p)))(cls, index, paired)
  return out


def _bv_kwargs(cls: type, d: int, seed: int, index: str, paired: bool | None) -> dict:
  """Constructor arguments for an order-1 Banzhaf run of a shapiq approximator (some take the index, some not)."""
  import inspect
  params = inspect.signature(cls.__init__).parameters
  kwargs = {"n": d, "random_state": seed, "index": index, "max_order": 1, "pairing_trick": paired}
  return {k: v for k, v in kwargs.items() if k in params and v is not None}


# ---------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
  args = base_parser(__doc__).parse_args(argv)
  t0 = time.perf_counter()
  games = [dict(g, truth=exact_banzhaf(g["table"], g["d"])) for g in make_games(args.inputs)]
  import shapiq
  budgets, peers = start(args, games, shapiq_approximators(), f", shapiq {shapiq.__version__}")
  results, skipped, cache = {}, {}, {}
  for budget in budgets:
    cell = results.setdefault(budget, {})
    for game in games:
      for method in XATTR:
        t = time.perf_counter()
        if (method, game["d"], budget) not in cache:
          cache[method, game["d"], budget] = fit_xattr(method, game["d"], budget, game["table"])
        values, std, rows = run_xattr(method, game, budget, args.seeds, cache, XATTR)
        record(cell, method, values, game["truth"], rows, std)["s"] += time.perf_counter() - t
      for name, make in peers.items():
        t = time.perf_counter()
        values, rows, why = run_shapiq(make, game, budget, args.seeds)
        if values is None:
          skipped[name] = why
          continue
        record(cell, name, values, game["truth"], rows)["s"] += time.perf_counter() - t
    _print_budget(budget, cell, games)
  for name, why in skipped.items():
    print(f"skipped {name}: {why}")
  print(f"total {time.perf_counter() - t0:.0f} s")
  return results


def _print_budget(budget: int, cell: dict, games: list[dict]) -> None:
  print(f"\nbudget {budget} game rows (normalized MSE, mean over games, inputs and seeds; rows = mean rows used; "
        f"s = wall seconds, all games and seeds, xattr's including compilation and the budget fit)")
  best = print_methods(cell, seconds=True)
  if best is None:
    return
  ratio = lambda m: np.mean(cell[m]["nmse"]) / np.mean(cell[best]["nmse"])
  print(f"  per game, xattr kernel_banzhaf / {best}, by input:")
  pairs = list(zip(games, cell["xattr kernel_banzhaf"]["nmse"], cell[best]["nmse"]))
  for name in dict.fromkeys(g["name"] for g in games):
    print(f"    {name:<16} " + ", ".join(f"{a:.1e} / {b:.1e}" for g, a, b in pairs if g["name"] == name))
  print(f"banzhaf_mse_ratio_vs_best_peer={ratio('xattr kernel_banzhaf'):.2f} (budget {budget}; xattr kernel_banzhaf "
        f"/ best peer: {best}; msr: {ratio('xattr msr'):.2f})", flush=True)


if __name__ == "__main__":
  main()
