"""Individualized scaling laws: E[Delta(z, D) | |D| = k] ~ c(z) k^(-alpha(z)), fitted per point from noisy samples.

A point's expected marginal contribution shrinks with the dataset size k as a power law whose scale c and
exponent alpha depend on the point (Covert et al., 2024). Samples are very noisy — their spread at a given k
is often larger than their mean — so the estimators model the noise too:

  Delta | k ~ N(c k^-alpha, sigma^2 k^-beta).

* :func:`mle_fit` — maximum likelihood. For fixed (alpha, beta) the model is a weighted least-squares problem,
  so c and sigma have closed forms; the profile likelihood over (alpha, beta) is maximised on a grid, refined
  locally (and over beta's whole range, which trades off against alpha), then polished by damped Newton steps.
  Vectorised over points.
* :func:`loglog_fit` — the classic log-log regression: bin the samples by k, average, and fit a line to
  log |mean| against log k. Needs many samples per point (bins with the wrong sign are dropped); used to draw
  scaling curves and as a baseline.
* :func:`distributional_value` — the law's mean over k ~ U[k_min, k_max): the distributional data value
  implied by (c, alpha).

Fits work in scaled units (Delta / scale, k / k_ref) for float32 conditioning and report c, sigma in the
original ones: c k^-alpha = c_scaled * scale * (k / k_ref)^-alpha.

Example:
  >>> import numpy as np
  >>> from xattr.valuation import scaling
  >>> rng = np.random.default_rng(0)
  >>> k = rng.integers(100, 1000, size=(1, 4000)).astype(np.float32)
  >>> delta = 2.0 * k ** -1.2 + 0.5 * k ** -1.0 * rng.normal(size=k.shape)
  >>> fit = scaling.mle_fit(k, delta)
  >>> round(float(fit.alpha[0]), 1), round(float(fit.beta[0]), 1)
  (1.2, 2.0)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks

__all__ = ["ScalingFit", "law", "distributional_value", "mle_fit", "loglog_fit", "profile_nll", "gaussian_nll"]


class ScalingFit(NamedTuple):
  """Per-point scaling-law parameters (arrays [P]): E[Delta | k] = c k^-alpha, Var = sigma^2 k^-beta.

  ``nll`` is the fit's mean negative log-likelihood per sample (NaN for fits that have none, e.g. log-log).
  """

  c: np.ndarray
  alpha: np.ndarray
  sigma: np.ndarray
  beta: np.ndarray
  nll: np.ndarray


def law(c, alpha, k):
  """c k^-alpha (broadcasting).

  Example:
    >>> float(law(2.0, 1.0, 4.0))
    0.5
  """
  return c * np.power(np.asarray(k, np.float64), -np.asarray(alpha, np.float64))


def distributional_value(c, alpha, k_min: int, k_max: int) -> np.ndarray:
  """Mean of c k^-alpha over the integer sizes k in [k_min, k_max): the distributional value the law implies.

  Example:
    >>> float(distributional_value(1.0, 0.0, 100, 200))
    1.0
  """
  k = np.arange(k_min, k_max, dtype=np.float64)
  c, alpha = np.asarray(c, np.float64), np.asarray(alpha, np.float64)
  return c * np.mean(np.power(k, -alpha[..., None]), axis=-1)


def gaussian_nll(delta, mean, log_var):
  """Per-sample Gaussian negative log-likelihood up to the constant log(2 pi) / 2."""
  return 0.5 * (log_var + (delta - mean) ** 2 * jnp.exp(-log_var))


def _check_samples(sizes, deltas, mask):
  sizes = np.asarray(sizes, np.float32)
  deltas = np.asarray(deltas, np.float32)
  if sizes.ndim != 2 or sizes.shape != deltas.shape:
    raise ValueError(f"sizes and deltas must be float[num_points, num_samples] of one shape, got {sizes.shape} and "
                     f"{deltas.shape}.")
  if not np.all(sizes > 0):
    raise ValueError(f"sizes must be positive dataset sizes, got minimum {sizes.min()}.")
  _checks.finite("deltas", deltas)
  mask = np.ones(sizes.shape, np.float32) if mask is None else np.asarray(mask, np.float32)
  try:
    mask = np.broadcast_to(mask, sizes.shape)
  except ValueError:
    raise ValueError(f"mask must broadcast to the shape of sizes {sizes.shape}, got {mask.shape}.") from None
  return sizes, deltas, mask


def profile_nll(alpha, beta, log_k, delta, mask):
  """Mean NLL (up to a constant) with c and sigma at their closed-form optima, for one point.

  With f = k^-alpha, v = k^-beta and weights w = mask / v: c = sum w f Delta / sum w f^2,
  sigma^2 = sum w (Delta - c f)^2 / sum mask, and NLL = [n log sigma^2 + sum mask log v] / (2n).

  Returns:
    (nll, c, sigma^2), broadcasting over alpha and beta.
  """
  f = jnp.exp(-alpha[..., None] * log_k)
  log_v = -beta[..., None] * log_k
  w = mask * jnp.exp(-log_v)
  c = jnp.sum(w * f * delta, -1) / jnp.maximum(jnp.sum(w * f * f, -1), 1e-30)
  n = jnp.maximum(mask.sum(-1), 1.0)
  var = jnp.sum(w * (delta - c[..., None] * f) ** 2, -1) / n
  var = jnp.maximum(var, 1e-30)
  nll = 0.5 * (jnp.log(var) + jnp.sum(mask * log_v, -1) / n)
  return nll, c, var


def _grid_search(log_k, delta, mask, alphas, betas, levels):
  """Best (alpha, beta) of one point on a grid, then ``levels`` rounds of local refinement.

  alpha and beta trade off: a slightly wrong alpha leaves residuals that shrink with k, which a larger beta
  explains. So each round first re-searches beta over its whole range at the current alpha, then refines both
  on a local grid of +-2 cells that shrinks 4x per round.
  """
  da, db = alphas[1] - alphas[0], betas[1] - betas[0]
  lo_a, hi_a, lo_b, hi_b = alphas[0], alphas[-1], betas[0], betas[-1]
  betas_fine = jnp.linspace(lo_b, hi_b, 4 * betas.shape[0])

  def best(a_grid, b_grid):
    nll, _, _ = profile_nll(a_grid[:, None], b_grid[None, :], log_k, delta, mask)
    i = jnp.argmin(nll)
    return a_grid[i // b_grid.shape[0]], b_grid[i % b_grid.shape[0]]

  a, b = best(alphas, betas)
  steps = jnp.linspace(-2.0, 2.0, 17)
  for _ in range(levels):
    a, b = best(a[None], betas_fine)
    a, b = best(jnp.clip(a + da * steps, lo_a, hi_a), jnp.clip(b + db * steps, lo_b, hi_b))
    da, db = da / 4, db / 4
  a, b = _polish(a, b, log_k, delta, mask, (lo_a, hi_a, lo_b, hi_b))
  nll, c, var = profile_nll(a, b, log_k, delta, mask)
  return a, b, c, var, nll


def _polish(a, b, log_k, delta, mask, bounds, steps: int = 8):
  """Damped Newton steps on the profile NLL from the grid optimum (the likelihood's ridge between alpha and beta
  is narrow and curved, so a grid cell can miss its floor). Each step takes the best of a few step sizes,
  including 0, so the NLL never increases."""
  lo_a, hi_a, lo_b, hi_b = bounds
  f = lambda v: profile_nll(v[0], v[1], log_k, delta, mask)[0]
  t = jnp.array([1.0, 0.5, 0.25, 0.1, 0.0])

  def step(v, _):
    g, h = jax.grad(f)(v), jax.hessian(f)(v)
    det = h[0, 0] * h[1, 1] - h[0, 1] ** 2
    newton = jnp.array([h[1, 1] * g[0] - h[0, 1] * g[1], h[0, 0] * g[1] - h[0, 1] * g[0]]) / det
    # Not convex here (or singular): fall back to a gradient step scaled by the diagonal curvature.
    direction = jnp.where((det > 0) & (h[0, 0] > 0), newton, g / jnp.maximum(jnp.abs(jnp.diag(h)), 1e-6))
    direction = jnp.where(jnp.isfinite(direction), direction, 0.0)    # e.g. noise-free data: sigma -> 0
    cand = v[None] - t[:, None] * direction[None]
    cand = jnp.stack([jnp.clip(cand[:, 0], lo_a, hi_a), jnp.clip(cand[:, 1], lo_b, hi_b)], 1)
    vals = jax.vmap(f)(cand)
    vals = jnp.where(jnp.isfinite(vals), vals, jnp.inf)
    return cand[jnp.argmin(vals)], None

  v, _ = jax.lax.scan(step, jnp.stack([a, b]), None, length=steps)
  return v[0], v[1]


@functools.partial(jax.jit, static_argnames=("levels", "batch_size"))
def _solve(log_k, delta, mask, alphas, betas, levels, batch_size):
  """Grid search + polish for every point (module-level jit: calls with the same shapes compile once)."""
  return jax.lax.map(lambda args: _grid_search(*args, alphas, betas, levels), (log_k, delta, mask),
                     batch_size=batch_size)


def mle_fit(sizes, deltas, mask=None, *, alpha_range: tuple[float, float] = (0.0, 3.0),
            beta_range: tuple[float, float] = (0.0, 6.0), grid: tuple[int, int] = (61, 61), levels: int = 2,
            k_ref: float | None = None, batch_size: int = 64) -> ScalingFit:
  """Maximum-likelihood (c, alpha, sigma, beta) per point under Delta | k ~ N(c k^-alpha, sigma^2 k^-beta).

  Args:
    sizes: float[P, m] dataset sizes k of each sample (P points, m samples each; pad ragged counts and mask).
    deltas: float[P, m] marginal contributions.
    mask: optional 0/1 float[P, m] (or broadcastable to it); 0 marks padding.
    alpha_range, beta_range: search ranges (the grid's ends; estimates are clipped to them).
    grid: coarse grid sizes over alpha and beta.
    levels: refinement rounds, each a full-range search over beta (4x finer grid) at the current alpha and a
      17 x 17 local grid over +-2 cells of the previous round (cells shrink 4x per round).
    k_ref: size the fit is centred at (default: geometric mean of all sizes); affects conditioning only.
    batch_size: points per vectorised step (memory: batch_size x grid x m floats).

  Returns:
    :class:`ScalingFit` of numpy arrays [P].

  Example:
    >>> fit = mle_fit(np.array([[100.0, 200.0, 400.0]]), np.array([[1e-2, 5e-3, 2.5e-3]]))
    >>> round(float(fit.alpha[0]), 2), round(float(fit.c[0]), 2)
    (1.0, 1.0)
  """
  sizes, deltas, mask = _check_samples(sizes, deltas, mask)
  k_ref = float(np.exp(np.sum(np.log(sizes) * mask) / max(mask.sum(), 1))) if k_ref is None else float(k_ref)
  scale = float(np.sqrt(np.sum(deltas ** 2 * mask) / max(mask.sum(), 1))) or 1.0
  alphas = jnp.linspace(*alpha_range, grid[0])
  betas = jnp.linspace(*beta_range, grid[1])
  log_k = jnp.log(jnp.asarray(sizes) / k_ref)
  a, b, c, var, nll = (np.asarray(v, np.float64) for v in _solve(log_k, jnp.asarray(deltas) / scale,
                                                                    jnp.asarray(mask), alphas, betas, levels,
                                                                    batch_size))
  # Back to original units: c k^-a = c_s scale (k / k_ref)^-a, sigma^2 k^-b = var_s scale^2 (k / k_ref)^-b.
  c_orig = c * scale * k_ref ** a
  sigma = np.sqrt(var) * scale * k_ref ** (b / 2)
  nll = nll + np.log(scale) + 0.5 * np.log(2 * np.pi) + 0.5
  return ScalingFit(c_orig, a, sigma, b, nll)


def loglog_fit(sizes, deltas, mask=None, *, num_bins: int = 8, k_range: tuple[float, float] | None = None,
               min_count: int = 2) -> ScalingFit:
  """Log-log regression per point: bin samples by log k, fit log|bin mean| = log|c| - alpha log k.

  Only bins whose mean has the sign of the point's overall mean (and ``min_count`` samples) enter the fit,
  weighted by their sample counts; c takes the overall sign. Points with fewer than two usable bins get NaN.
  sigma and beta are not estimated (NaN).

  Example:
    >>> k = np.tile(np.geomspace(100, 1000, 16), 2)[None]
    >>> fit = loglog_fit(k, 3.0 * k ** -1.5, num_bins=16)       # one size per bin: the fit is exact
    >>> round(float(fit.alpha[0]), 3), round(float(fit.c[0]), 3)
    (1.5, 3.0)
  """
  sizes, deltas, mask = _check_samples(sizes, deltas, mask)
  logk = np.log(sizes.astype(np.float64))
  lo, hi = (logk[mask > 0].min(), logk[mask > 0].max()) if k_range is None else np.log(k_range)
  edges = np.linspace(lo, hi + 1e-9, num_bins + 1)
  bins = np.clip(np.searchsorted(edges, logk, side="right") - 1, 0, num_bins - 1)
  p = sizes.shape[0]
  onehot = (bins[..., None] == np.arange(num_bins)) * mask[..., None]               # [P, m, B]
  count = onehot.sum(1)
  mean = np.einsum("pmb,pm->pb", onehot, deltas.astype(np.float64)) / np.maximum(count, 1)
  centre = np.einsum("pmb,pm->pb", onehot, logk) / np.maximum(count, 1)
  sign = np.sign(np.sum(deltas * mask, 1))
  sign = np.where(sign == 0, 1.0, sign)
  use = (count >= min_count) & (mean * sign[:, None] > 0)
  w = np.where(use, count, 0.0)
  y = np.log(np.where(use, mean * sign[:, None], 1.0))
  sw = w.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    xm = (w * centre).sum(1) / sw
    ym = (w * y).sum(1) / sw
    slope = (w * (centre - xm[:, None]) * (y - ym[:, None])).sum(1) / (w * (centre - xm[:, None]) ** 2).sum(1)
  ok = use.sum(1) >= 2
  alpha = np.where(ok, -slope, np.nan)
  c = np.where(ok, sign * np.exp(ym - slope * xm), np.nan)
  nan = np.full(p, np.nan)
  return ScalingFit(c, alpha, nan, nan.copy(), nan.copy())
