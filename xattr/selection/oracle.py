r"""A synthetic selection problem whose greedy CMI order is known in closed form (an oracle for GDFS and DIME).

Generator (all variables binary; features are given to models as +-1):

  * a "switch" s ~ Bernoulli(1/2) and a bit b ~ Bernoulli(1/2), independent; the label is y = 2 s + b (4 classes);
  * x_0 = s, observed without noise;
  * block A (``k`` features): if s = 0, x_i = b XOR Bernoulli(eps_i) (a binary symmetric channel, BSC, with flip
    probability eps_i < 1/2); if s = 1, x_i ~ Bernoulli(1/2), pure noise;
  * block B (``k`` features): the same with the roles of s = 0 and s = 1 swapped;
  * distractors: Bernoulli(1/2) noise.

Given (s, b) the features are independent, so everything below is a sum over the 4 states of y.

Derivation of the greedy CMI order (h = binary entropy, all in nats; I(y; x_i | x_S = v) is the CMI given the
observed values v, the quantity greedy selection maximizes per sample):

  1. First step. I(y; x_0) = H(s) = log 2. For a block-A feature, P(x_i = 1) = 1/2 and, given y, x_i is a
     BSC(eps_i) output of b when s = 0 and a fair coin when s = 1, so
     I(y; x_i) = H(x_i) - H(x_i | y) = log 2 - [h(eps_i) + log 2] / 2 = [log 2 - h(eps_i)] / 2 < log 2 / 2;
     block B is symmetric and distractors carry 0. So **every sample selects x_0 first**.
  2. After x_0 = s is observed (say s = 0; s = 1 swaps the blocks), y is determined by b. Block-B features and
     distractors are then independent of b and of every other feature: their CMI is 0 from here on. A block-A
     feature is a BSC(eps_i) observation of b, conditionally independent of the other observations given b, so
     with pi = P(b = 1 | x_S = v):  I(y; x_i | x_S = v) = h(pi (1 - eps_i) + (1 - pi) eps_i) - h(eps_i).
  3. This is strictly decreasing in eps_i for every pi in (0, 1): a BSC(eps') with eps < eps' < 1/2 is a BSC(eps)
     followed by an independent BSC((eps' - eps) / (1 - 2 eps)), so by the data-processing inequality it carries
     less information about b (strictly, since pi is never 0 or 1 when all eps_i > 0). Hence **the next k
     selections are the relevant block's features in increasing order of eps**, whatever their observed values:
     the order is dynamic (it depends on the value of x_0), and the first 1 + k selections are unique.

After that, every remaining feature has CMI 0 and the order is arbitrary. :func:`cmi` computes the exact CMI of
every feature for any selection and any observed values (posterior over the 4 states, then the expected entropy
drop), :func:`bayes_logits` the Bayes-optimal prediction, and :func:`closed_form_order` the first 1 + k greedy
selections from the derivation alone; the tests check them against each other and against brute-force
enumeration of the joint distribution.

Example:
  >>> import jax
  >>> from xattr.selection import oracle
  >>> spec = oracle.Spec()
  >>> x, y = oracle.sample(jax.random.key(0), spec, 4)
  >>> x.shape, oracle.closed_form_order(x, spec).shape
  ((4, 12), (4, 5))
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks

__all__ = ["Spec", "feature_table", "sample", "posterior", "bayes_logits", "cmi", "closed_form_order",
           "first_selection_agreement", "NUM_CLASSES"]

NUM_CLASSES = 4       # y = 2 s + b; state index = y


class Spec(NamedTuple):
  """Problem definition: flip probabilities of blocks A and B and the number of distractors.

  The features are ordered [x_0 = s, block A, block B, distractors]. Block B's flips are listed in its own
  feature order, so its best feature need not come first.
  """

  flips_a: tuple[float, ...] = (0.05, 0.15, 0.25, 0.35)
  flips_b: tuple[float, ...] = (0.25, 0.05, 0.35, 0.15)
  num_distractors: int = 3

  @property
  def num_features(self) -> int:
    return 1 + len(self.flips_a) + len(self.flips_b) + self.num_distractors


def _check_spec(spec: Spec) -> None:
  if len(spec.flips_a) != len(spec.flips_b) or not spec.flips_a:
    raise ValueError(f"spec.flips_a and spec.flips_b must be non-empty and of equal length, got "
                     f"{spec.flips_a!r} and {spec.flips_b!r}.")
  for name in ("flips_a", "flips_b"):
    flips = np.asarray(getattr(spec, name))
    if not (np.all(flips > 0) and np.all(flips < 0.5)) or len(set(flips.tolist())) != len(flips):
      raise ValueError(f"spec.{name} must hold distinct flip probabilities in (0, 1/2), got {flips.tolist()}.")
  _checks.positive_int("spec.num_distractors", spec.num_distractors, minimum=0)


def feature_table(spec: Spec) -> np.ndarray:
  """P(x_i = 1 | y) for every feature and state: float64[num_features, 4], state y = 2 s + b.

  Example:
    >>> feature_table(Spec((0.1,), (0.2,), 0)).round(2).tolist()
    [[0.0, 0.0, 1.0, 1.0], [0.1, 0.9, 0.5, 0.5], [0.5, 0.5, 0.2, 0.8]]
  """
  _check_spec(spec)
  s = np.array([0, 0, 1, 1])
  b = np.array([0, 1, 0, 1])
  bsc = lambda eps: eps + b * (1 - 2 * eps)                     # P(b XOR flip = 1)
  rows = [s.astype(np.float64)]
  rows += [np.where(s == 0, bsc(e), 0.5) for e in spec.flips_a]
  rows += [np.where(s == 1, bsc(e), 0.5) for e in spec.flips_b]
  rows += [np.full(4, 0.5)] * spec.num_distractors
  return np.stack(rows)


def sample(key: jax.Array, spec: Spec, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws ``num_samples`` rows: features float32[n, d] in {-1, +1} and labels int32[n] in {0..3}.

  Example:
    >>> x, y = sample(jax.random.key(1), Spec(), 1000)
    >>> bool(((x[:, 0] > 0) == (y >= 2)).all())                  # x_0 is the switch s
    True
  """
  n = _checks.positive_int("num_samples", num_samples)
  x, y = _sample(key, jnp.asarray(feature_table(spec), jnp.float32), n)
  return np.asarray(x, np.float32), np.asarray(y, np.int32)


@functools.partial(jax.jit, static_argnums=2)
def _sample(key: jax.Array, table: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
  state_key, feature_key = jax.random.split(key)
  y = jax.random.randint(state_key, (n,), 0, NUM_CLASSES)
  bits = jax.random.uniform(feature_key, (n, table.shape[0])) < table.T[y]
  return 2.0 * bits - 1.0, y


def _log_likelihoods(x: jax.Array, table: np.ndarray) -> jax.Array:
  """log P(x_i | y) for every row, feature and state: [B, d, 4] (-inf for impossible values)."""
  one = (jnp.asarray(x) > 0)[..., None]
  with np.errstate(divide="ignore"):
    log_t, log_1mt = np.log(table), np.log1p(-table)
  return jnp.where(one, jnp.asarray(log_t, jnp.float32), jnp.asarray(log_1mt, jnp.float32))


@functools.partial(jax.jit, static_argnums=2)
def posterior(x: jax.Array, mask: jax.Array, spec: Spec) -> jax.Array:
  """P(y | x_S): float[B, 4] from the observed features (mask True) of +-1 rows ``x``.

  Example:
    >>> x = jnp.array([[1.0] * 12])
    >>> posterior(x, jnp.zeros((1, 12), bool), Spec()).round(3).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
  """
  loglik = jnp.where(mask[..., None], _log_likelihoods(x, feature_table(spec)), 0.0).sum(1)
  return jax.nn.softmax(loglik, axis=-1)


@functools.partial(jax.jit, static_argnums=2)
def bayes_logits(x: jax.Array, mask: jax.Array, spec: Spec) -> jax.Array:
  """log P(y | x_S), the Bayes-optimal masked predictor's logits: float[B, 4] (finite: clipped at log 1e-30).

  Example:
    >>> bayes_logits(jnp.ones((1, 12)), jnp.zeros((1, 12), bool), Spec()).shape
    (1, 4)
  """
  return jnp.log(jnp.maximum(posterior(x, mask, spec), 1e-30))


def _entropy(p: jax.Array) -> jax.Array:
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


@functools.partial(jax.jit, static_argnums=2)
def cmi(x: jax.Array, mask: jax.Array, spec: Spec) -> jax.Array:
  """Exact I(y; x_i | x_S = observed values) in nats for every feature: float[B, d] (0 for selected ones).

  For each unobserved i: H(y | x_S) - sum_v P(x_i = v | x_S) H(y | x_S, x_i = v), with the posterior over the
  4 states updated by P(x_i = v | y).

  Example:
    >>> c = cmi(jnp.ones((1, 12)), jnp.zeros((1, 12), bool), Spec())
    >>> round(float(c[0, 0]), 4), int(c.argmax())                 # log 2, the switch first
    (0.6931, 0)
  """
  post = posterior(x, mask, spec)                                  # [B, 4]
  t = jnp.asarray(feature_table(spec), jnp.float32)                # [d, 4]
  joint1 = post[:, None, :] * t                                    # P(y, x_i = 1 | x_S): [B, d, 4]
  joint0 = post[:, None, :] * (1 - t)
  q1, q0 = joint1.sum(-1), joint0.sum(-1)
  cond = lambda j, q: j / jnp.where(q > 0, q, 1.0)[..., None]
  expected = q1 * _entropy(cond(joint1, q1)) + q0 * _entropy(cond(joint0, q0))
  return jnp.where(mask, 0.0, jnp.maximum(_entropy(post)[:, None] - expected, 0.0))


def closed_form_order(x: jax.Array | np.ndarray, spec: Spec) -> np.ndarray:
  """The first 1 + k greedy CMI selections from the derivation: x_0, then the relevant block by increasing flip.

  Returns:
    int32[B, 1 + k].

  Example:
    >>> x = np.array([[-1.0] + [1.0] * 11, [1.0] * 12])
    >>> closed_form_order(x, Spec()).tolist()
    [[0, 1, 2, 3, 4], [0, 6, 8, 5, 7]]
  """
  _check_spec(spec)
  k = len(spec.flips_a)
  order_a = 1 + np.argsort(spec.flips_a)
  order_b = 1 + k + np.argsort(spec.flips_b)
  switch = np.asarray(x)[:, :1] > 0
  return np.concatenate([np.zeros_like(switch, np.int32),
                         np.where(switch, order_b[None], order_a[None]).astype(np.int32)], axis=1)


def first_selection_agreement(order: np.ndarray, reference: np.ndarray, steps: Sequence[int]) -> dict[int, float]:
  """Fraction of samples whose first ``t`` selections equal the reference's, for each t in ``steps``.

  Example:
    >>> first_selection_agreement(np.array([[0, 1], [0, 2]]), np.array([[0, 1], [0, 1]]), [1, 2])
    {1: 1.0, 2: 0.5}
  """
  order, reference = np.asarray(order), np.asarray(reference)
  return {t: float(np.mean(np.all(order[:, :t] == reference[:, :t], axis=1))) for t in steps}
