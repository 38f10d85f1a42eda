"""The selection API: ``select(key, target, background, num_features=k) -> Selection``.

Two phases, each one call of the shared training loop (:func:`xattr.training.train`: jit-compiled steps,
data-parallel over the devices, Orbax checkpoints in ``workdir`` so a killed run resumes):

  1. an :class:`~xattr.cfs.model.Autoencoder` on the background (MSE); its encoder g gives every target row a
     code g(x) (k' = ``code_size`` dims) that holds what the background variation explains;
  2. a selector (``"gates"`` or ``"concrete"``) and a reconstruction network f trained on the target so that
     ``f([g(x), x * mask])`` reproduces x: the selected features must carry what g(x) cannot.

``joint=True`` trains encoder, selector and f together (the paper's joint variant: background rows
reconstructed from ``[g(x_b), 0]``, target rows from ``[stop_gradient(g(x_t)), x_t * mask]``).
``background=None`` is the no-background ablation (f sees ``x * mask`` only: a target-only selector).

Defaults follow the paper's public code: hidden layers 512x512, k' = 20, Adam lr 1e-3, batch 128, sigma = 0.5.
Data are used as given (standardize them first if the features have unrelated units).

Example:
  >>> import jax, numpy as np
  >>> from xattr import cfs
  >>> from xattr.data import contrastive
  >>> ds = contrastive.linear_gaussian(seed=0, num_target=64, num_background=64)
  >>> sel = cfs.select(jax.random.key(0), ds.target, ds.background, num_features=10, hidden_sizes=(8,),
  ...                  background_steps=2, selector_steps=2, batch_size=64)
  >>> sel.indices.shape, len(set(sel.indices.tolist()))
  ((10,), 10)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xattr import _checks, models, training
from xattr.cfs import model
from xattr.data import contrastive
from xattr.models import MLP
from xattr.selection import predictor as predictor_lib

__all__ = ["SELECTORS", "Selection", "Settings", "settings", "top_k", "train_background", "train_selector",
           "select"]

SELECTORS = ("gates", "concrete")


class Selection(NamedTuple):
  """What a selection returns.

  Attributes:
    indices: int32[k] selected players (features, or groups with a group matrix), best first.
    scores: float32[p] per-player scores (gates: mu; concrete: the largest row probability); higher = better.
    history: per training phase, the training loop's logged metrics (``{"background": [...], "selector": [...]}``)
      and ``stopped_early`` (a run stopped by ``stop_at``).
  """

  indices: np.ndarray
  scores: np.ndarray
  history: dict[str, Any]


class Settings(NamedTuple):
  """Training settings shared by every neural selector (see :func:`select` for their meaning)."""

  hidden_sizes: tuple[int, ...] = (512, 512)
  code_size: int = 20
  learning_rate: float = 1e-3
  batch_size: int = 128
  background_steps: int = 2000
  selector_steps: int = 2000
  penalty: float = 0.1
  sigma: float = 0.5
  start_temperature: float = 10.0
  end_temperature: float = 0.01


def settings(**overrides: Any) -> Settings:
  """:class:`Settings` with ``overrides``; unknown names raise.

  Example:
    >>> settings(penalty=0.5).penalty
    0.5
  """
  unknown = sorted(set(overrides) - set(Settings._fields))
  if unknown:
    raise ValueError(f"unknown settings {unknown}; known: {list(Settings._fields)}.")
  s = Settings(**{k: v for k, v in overrides.items() if v is not None})
  for name in ("code_size", "batch_size", "background_steps", "selector_steps"):
    _checks.positive_int(name, getattr(s, name))
  return s._replace(hidden_sizes=tuple(int(h) for h in s.hidden_sizes))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """The k highest-scoring players, best first (ties: lower index first).

  Example:
    >>> top_k(np.array([0.1, 0.9, 0.5]), 2).tolist()
    [1, 2]
  """
  return np.argsort(-np.asarray(scores, np.float64), kind="stable")[:k].astype(np.int32)


def _path(workdir: str | os.PathLike | None, name: str) -> str | None:
  return None if workdir is None else os.path.join(os.fspath(workdir), name)


def _batch(s: Settings, n: int) -> int:
  return min(s.batch_size, n)


def train_background(key: jax.Array, background: np.ndarray, s: Settings, *, workdir: str | None = None,
                     progress: bool = False, mesh: Any = "auto") -> tuple[model.Autoencoder, list[dict]]:
  """Phase 1: an autoencoder trained on ``background`` with MSE; returns it and its history.

  Example:
    >>> s = settings(hidden_sizes=(8,), code_size=2, background_steps=3, batch_size=8)
    >>> ae, hist = train_background(jax.random.key(0), np.ones((16, 4), np.float32), s)   # doctest: +SKIP
    >>> hist[-1]["step"]                                                                  # doctest: +SKIP
    3
  """
  init_key, _, seed = _keys(key)
  ae = model.Autoencoder(background.shape[1], s.code_size, s.hidden_sizes, rngs=nnx.Rngs(params=init_key))
  result = training.train(ae, _autoencoder_loss, {"x": background}, optimizer=training.optimizer({"learning_rate": s.learning_rate}),
                          num_steps=s.background_steps, batch_size=_batch(s, len(background)), seed=seed,
                          workdir=workdir, progress=progress, desc="cfs background", mesh=mesh)
  return ae, result.history


def _autoencoder_loss(ae: model.Autoencoder, batch):
  x = batch["x"]
  loss = jnp.mean(jnp.square(ae(x) - x))
  return loss, {}


def _keys(key: jax.Array) -> tuple[jax.Array, jax.Array, int]:
  """(init key, rbg key for the noise of training steps, data-order seed)."""
  init_key, rest = jax.random.split(key)
  noise_key, seed = predictor_lib.mask_key_and_seed(rest)
  return init_key, noise_key, seed


def _make_selector(kind: str, num_players: int, num_features: int, s: Settings, groups: Any, key: jax.Array
                  ) -> nnx.Module:
  """A fresh selector module of ``kind`` in :data:`SELECTORS`."""
  if kind == "gates":
    return model.StochasticGates(num_players, sigma=s.sigma, groups=groups, rngs=nnx.Rngs(params=key))
  return model.ConcreteTopK(num_features, num_players, num_steps=s.selector_steps,
                            start_temperature=s.start_temperature, end_temperature=s.end_temperature, groups=groups,
                            rngs=nnx.Rngs(params=key))


def train_selector(key: jax.Array, task: str, data: dict[str, np.ndarray], net: nnx.Module, *, kind: str,
                   num_features: int, groups: np.ndarray | None, s: Settings, workdir: str | None = None,
                   progress: bool = False, mesh: Any = "auto", stop_at: int | None = None,
                   **modules: nnx.Module) -> tuple[np.ndarray, np.ndarray, list[dict], bool]:
  """Phase 2 (and the supervised STG baseline): trains a selector of ``kind`` with ``net`` on ``data`` for
  ``task`` (see :func:`xattr.cfs.model.loss_fn`); returns ``(indices, scores, history, stopped_early)``."""
  group_var, p, k = _check_budget(kind, num_features, groups, data["x"].shape[1])
  init_key, noise_key, seed = _keys(key)
  selector = _make_selector(kind, p, k, s, group_var, init_key)
  lam = s.penalty if kind == "gates" else 0.0
  bundle = predictor_lib.Bundle(noise_key, scalars={"lam": lam}, selector=selector, net=net, **modules)
  result = training.train(bundle, model.loss_fn(task), data,
                          optimizer=training.optimizer({"learning_rate": s.learning_rate}),
                          num_steps=s.selector_steps, batch_size=_batch(s, len(data["x"])), seed=seed,
                          workdir=workdir, progress=progress, desc=f"cfs {task} {kind}", mesh=mesh, stop_at=stop_at)
  scores = selector.scores().astype(np.float32)
  indices = top_k(scores, k) if kind == "gates" else selector.selection()
  return indices, scores, result.history, result.stopped_early


def _check_budget(kind: str, num_features: int, groups: np.ndarray | None, d: int
                  ) -> tuple[predictor_lib.GroupMatrix | None, int, int]:
  """(group matrix state, number of players p, k), raising for an unknown selector or k outside [1, p]."""
  if kind not in SELECTORS:
    raise ValueError(f"selector must be one of {SELECTORS}, got {kind!r}.")
  group_var, p = model.group_variable(groups, d)
  k = _checks.positive_int("num_features", num_features)
  if k > p:
    raise ValueError(f"num_features must be <= the number of {'groups' if groups is not None else 'features'} "
                     f"({p}), got {k}.")
  return group_var, p, k


def _joint_data(target: np.ndarray, background: np.ndarray, seed: int) -> dict[str, np.ndarray]:
  """Target and background rows paired one-to-one: the shorter set is cycled in a seeded random order."""
  n = max(len(target), len(background))
  rng = np.random.default_rng(seed)
  pick = lambda a: a[np.resize(rng.permutation(len(a)), n)] if len(a) < n else a
  return {"x": pick(target), "background": pick(background)}


def select(key: jax.Array, target: np.ndarray, background: np.ndarray | None, *, num_features: int,
           selector: str = "gates", joint: bool = False, groups: np.ndarray | None = None,
           hidden_sizes: Sequence[int] = (512, 512), code_size: int = 20, learning_rate: float = 1e-3,
           batch_size: int = 128, background_steps: int = 2000, selector_steps: int = 2000, penalty: float = 0.1,
           sigma: float = 0.5, start_temperature: float = 10.0, end_temperature: float = 0.01,
           background_model: model.Autoencoder | None = None, workdir: str | os.PathLike | None = None,
           progress: bool = False, mesh: Any = "auto", stop_at: int | None = None) -> Selection:
  """Contrastive feature selection: the ``num_features`` features (or groups) that carry target-only variation.

  Args:
    key: PRNG key (initializations, gate/Gumbel noise, data order).
    target: float[n, d], nuisance plus the variation of interest.
    background: float[m, d], nuisance only; None: the no-background ablation (selection from the target alone).
    num_features: k, how many players to select (<= d, or <= the number of groups).
    selector: ``"gates"`` (stochastic gates, top-k by mu) or ``"concrete"`` (exactly k, Concrete top-k layer).
    joint: train background encoder and selector together (the paper's joint variant).
    groups: optional 0/1 matrix [num_groups, d]; players are then groups of features.
    hidden_sizes, code_size: the MLPs' hidden widths (512x512) and the background code size k' (20).
    learning_rate, batch_size: Adam settings (1e-3, 128; the batch is capped at the number of rows).
    background_steps, selector_steps: optimizer steps of the two phases (joint: ``selector_steps`` in all).
    penalty: lambda of the gate penalty (gates only).
    sigma: the gates' noise scale (0.5).
    start_temperature, end_temperature: the Concrete temperature schedule (10 -> 0.01).
    background_model: an autoencoder already trained on ``background`` (:func:`train_background`): phase 1 is
      skipped (several selections from one background representation).
    workdir: checkpoints (``background/`` and ``selector/``); a rerun resumes there. None: no checkpoints.
    progress: progress bars.
    mesh: data parallelism of :func:`xattr.training.train` (``"auto"``: every device).
    stop_at: stop phase 2 after this step without a final checkpoint (preemption drills and tests).

  Returns:
    :class:`Selection`.

  Raises:
    ValueError: mismatched feature counts, empty data, k out of range, unknown selector;
    FloatingPointError: non-finite values.
  """
  target, background = contrastive.check_pair(target, background)
  s = settings(hidden_sizes=hidden_sizes, code_size=code_size, learning_rate=learning_rate, batch_size=batch_size,
               background_steps=background_steps, selector_steps=selector_steps, penalty=penalty, sigma=sigma,
               start_temperature=start_temperature, end_temperature=end_temperature)
  common = dict(kind=selector, num_features=num_features, groups=groups, s=s, workdir=_path(workdir, "selector"),
                progress=progress, mesh=mesh, stop_at=stop_at)
  _check_budget(selector, num_features, groups, target.shape[1])
  if background_model is not None and (joint or background is None):
    raise ValueError("background_model is only used by the sequential variant with a background (joint=False).")
  return _fit(key, target, background, joint, workdir, common, background_model)


def _fit(key: jax.Array, target: np.ndarray, background: np.ndarray | None, joint: bool,
         workdir: str | os.PathLike | None, common: dict[str, Any], ae: model.Autoencoder | None) -> Selection:
  s, d = common["s"], target.shape[1]
  bg_key, sel_key, net_key = jax.random.split(key, 3)
  history: dict[str, Any] = {}
  if background is not None and joint:
    data = _joint_data(target, background, int(jax.random.randint(bg_key, (), 0, 2 ** 31 - 1)))
    encoder = MLP(d, s.hidden_sizes, s.code_size, rngs=nnx.Rngs(params=bg_key))
    net = MLP(s.code_size + d, s.hidden_sizes, d, rngs=nnx.Rngs(params=net_key))
    out = train_selector(sel_key, "joint", data, net, encoder=encoder, **common)
  else:
    data = {"x": target}
    width = 0
    if background is not None and ae is None:
      ae, history["background"] = train_background(bg_key, background, s, workdir=_path(workdir, "background"),
                                                   progress=common["progress"], mesh=common["mesh"])
    if background is not None:
      encoder = models.functional(ae.encoder)
      data["code"] = np.asarray(jax.jit(encoder.apply)(encoder.state, target), np.float32)
      width = data["code"].shape[1]
    net = MLP(width + d, s.hidden_sizes, d, rngs=nnx.Rngs(params=net_key))
    out = train_selector(sel_key, "reconstruct", data, net, **common)
  indices, scores, history["selector"], history["stopped_early"] = out
  return Selection(indices, scores, history)
