"""Tabular classifiers explained with KernelSHAP: training, chunked resumable explanation, error vs exact values.

The pieces of ``experiments/explain_tabular.py`` that other programs reuse (the attribution job restores the same
MLP; studies compare estimators against exact values the same way):

  * :func:`train_classifier` trains the Flax NNX MLP of an explain_tabular config with :func:`xattr.training.train`
    (Orbax checkpoints in ``workdir/checkpoints``), or restores a finished run with :func:`xattr.training.restore`
    without training again;
  * :func:`background_sample` draws the seeded training rows that marginal removal averages over;
  * :func:`explain` runs KernelSHAP (through :mod:`xattr.methods`) on the marginal game of the class probabilities
    of every input, ``jit(lax.map(...))`` chunk by chunk, each finished chunk saved (:func:`explain_in_chunks`);
  * :func:`exact_comparison` restricts the game to a few players, enumerates exact Shapley values and compares
    KernelSHAP with them (:func:`error_metrics`);
  * :func:`write_report` writes the job's ``report.md`` with :mod:`xattr.reports`.

Example:
  >>> import numpy as np
  >>> exact = np.array([[1.0, -1.0], [2.0, 0.5]])
  >>> m = error_metrics(exact + 0.1, np.full_like(exact, 0.1), exact)
  >>> round(m["mae"], 6), m["within_2std"]
  (0.1, 1.0)
  >>> background_sample(np.arange(10.0)[:, None], 3, seed=0).ravel().tolist()
  [5.0, 6.0, 9.0]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import artifacts, chunked, games, methods, models, reports, training

__all__ = ["kernel_shap_settings", "background_sample", "build_classifier", "train_classifier", "error_metrics",
           "explain_in_chunks", "chunk_explainer", "explain", "exact_comparison", "write_report"]


def kernel_shap_settings(explain: Any) -> dict[str, Any]:
  """The KernelSHAP settings of an explain_tabular ``config.explain`` section (arguments of ``kernel_shap``).

  Example:
    >>> s = kernel_shap_settings(dict(num_samples=64, batch_size=32, paired=True, exact_a=False, threshold=0.01,
    ...                               max_samples=1024, enumerate_sizes=None))
    >>> s["num_samples"], sorted(s) == sorted(["num_samples", "batch_size", "paired", "exact_a", "threshold",
    ...                                          "max_samples", "enumerate_sizes"])
    (64, True)
  """
  get = explain.get if isinstance(explain, Mapping) else lambda k: getattr(explain, k)
  return {k: get(k) for k in ("num_samples", "batch_size", "paired", "exact_a", "threshold", "max_samples",
                              "enumerate_sizes")}


def background_sample(x_train: np.ndarray, size: int, seed: int) -> np.ndarray:
  """``size`` training rows drawn without replacement (``np.random.default_rng(seed)``), in their original order.

  Raises:
    ValueError: ``size`` is not in [1, len(x_train)].
  """
  if not 1 <= int(size) <= len(x_train):
    raise ValueError(f"the background size must lie in [1, {len(x_train)}] (training rows), got {size}.")
  rng = np.random.default_rng(seed)
  return np.asarray(x_train)[np.sort(rng.choice(len(x_train), int(size), replace=False))]


def build_classifier(config: Any, num_features: int, num_classes: int) -> models.MLP:
  """The MLP of an explain_tabular config (``config.model.hidden_sizes/activation``, init seed ``config.seed``)."""
  return models.MLP(num_features, config.model.hidden_sizes, num_classes, activation=config.model.activation,
                    rngs=nnx.Rngs(config.seed))


def _loss_fn(m: nnx.Module, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
  logits = m(batch["x"])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
  return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}


def train_classifier(config: Any, ds: Any, workdir: str | os.PathLike, *, progress: bool = True) -> models.MLP:
  """The classifier of an explain_tabular config on ``ds``: restored if ``workdir`` holds a finished run, else
  trained (resuming a killed run) with AdamW from ``training.optimizer(config.train)``.

  Args:
    config: an explain_tabular config (``seed``, ``model``, ``train``).
    ds: a classification :class:`xattr.data.Dataset`.
    workdir: checkpoints go to ``workdir/checkpoints``.
    progress: show the training progress bar.

  Returns:
    The trained :class:`xattr.models.MLP`.

  Raises:
    ValueError: the checkpoint in ``workdir`` does not fit the configured MLP.

  Example:
    >>> import tempfile, ml_collections
    >>> from xattr import data
    >>> config = ml_collections.ConfigDict(dict(seed=0, model=dict(hidden_sizes=(8,), activation="relu"),
    ...     train=dict(num_steps=2, batch_size=16, learning_rate=1e-3, weight_decay=1e-4, eval_every=None,
    ...                log_every=1, checkpoint_every=None, keep_checkpoints=1)))
    >>> ds = data.load_embedded("breast_cancer")
    >>> d = tempfile.mkdtemp()
    >>> model = train_classifier(config, ds, d, progress=False)
    >>> again = train_classifier(config, ds, d)              # restored, not trained
    >>> bool(jnp.all(again(ds.x_test[:2]) == model(ds.x_test[:2])))
    True
  """
  model = build_classifier(config, ds.num_features, ds.num_classes)
  t = config.train
  tx = training.optimizer(t)
  latest = training.latest_step(workdir)
  if latest is not None and latest >= t.num_steps:
    try:
      training.restore(model, workdir, optimizer=tx, min_step=t.num_steps)
    except ValueError as err:       # orbax names the shapes that differ
      raise ValueError(f"the checkpoint in {os.fspath(workdir)}/checkpoints does not fit the MLP of this config "
                       f"(hidden_sizes={tuple(config.model.hidden_sizes)}): {err}") from err
    return model
  x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)

  def eval_fn(m: nnx.Module, step: int) -> dict[str, float]:
    return {"test_accuracy": float(jnp.mean(jnp.argmax(m(x_test), -1) == y_test))}

  training.train(model, _loss_fn, {"x": ds.x_train, "y": ds.y_train}, optimizer=tx, num_steps=t.num_steps,
                 batch_size=t.batch_size, seed=config.seed, workdir=workdir, checkpoint_every=t.checkpoint_every,
                 keep_checkpoints=t.keep_checkpoints, eval_fn=eval_fn, eval_every=t.eval_every,
                 log_every=t.log_every, progress=progress)
  return model


def error_metrics(estimate: np.ndarray, std: np.ndarray, exact: np.ndarray) -> dict[str, float]:
  """Errors of an estimate against exact values (any matching shapes; computed over all entries).

  mae: mean |est - exact|; relative_l2: mean over inputs of ||est - exact|| / ||exact|| (flattened per input);
  correlation: Pearson over all entries; within_2std: fraction of entries with |est - exact| <= 2 std (+ 1e-6,
  float32 round-off, which matters where the estimate is exact and reports std 0).

  Raises:
    ValueError: the three arrays do not have the same shape.
  """
  estimate, std, exact = np.asarray(estimate), np.asarray(std), np.asarray(exact)
  if not estimate.shape == std.shape == exact.shape:
    raise ValueError(f"estimate, std and exact must have the same shape, got {estimate.shape}, {std.shape} and "
                     f"{exact.shape}.")
  err = estimate - exact
  per_input = np.linalg.norm(err.reshape(len(err), -1), axis=1) / np.maximum(
      np.linalg.norm(exact.reshape(len(exact), -1), axis=1), 1e-12)
  return dict(mae=float(np.abs(err).mean()), relative_l2=float(per_input.mean()),
              correlation=float(np.corrcoef(estimate.ravel(), exact.ravel())[0, 1]),
              within_2std=float(np.mean(np.abs(err) <= 2 * std + 1e-6)), max_abs_error=float(np.abs(err).max()),
              mean_std=float(std.mean()))


def explain_in_chunks(explain_fn: Callable[[jax.Array, jax.Array], Any], inputs: np.ndarray, keys: jax.Array, *,
                      chunk_size: int, directory: str | None = None, tag: str = "",
                      desc: str = "explain") -> dict[str, np.ndarray]:
  """``explain_fn(x_chunk, key_chunk)`` over the inputs with :func:`xattr.chunked.map_chunks` (saved, resumable).

  Example:
    >>> out = explain_in_chunks(lambda x, k: {"y": 2 * x}, np.arange(3.0), jax.random.split(jax.random.key(0), 3),
    ...                         chunk_size=2)
    >>> out["y"].tolist()
    [0.0, 2.0, 4.0]
  """
  return chunked.map_chunks(lambda a: explain_fn(jnp.asarray(a[0]), a[1]), (inputs, keys), chunk_size=chunk_size,
                            directory=directory, tag=tag, desc=desc)


def chunk_explainer(explain_one: Callable[[jax.Array, jax.Array], Any], vmap_size: int) -> Callable:
  """``jit(lax.map(explain_one, batch_size=vmap_size))`` over a chunk of (inputs, keys).

  In convergence mode a vmapped while_loop runs until its slowest input converges, so small groups waste less
  on CPU; on an accelerator use ``vmap_size = chunk_size``.
  """
  return jax.jit(lambda xs, keys: jax.lax.map(lambda a: explain_one(*a), (xs, keys), batch_size=vmap_size))


def _kernel_shap_chunk(game_of_x: Callable, num_players: int, vmap_size: int, settings: Mapping[str, Any]):
  return chunk_explainer(lambda x, key: methods.attribute("kernel_shap", methods.Problem(
      game=game_of_x(x), num_players=num_players), key, **settings), vmap_size)


def _input_keys(root: jax.Array, stream: int, n: int) -> jax.Array:
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, stream), i))(jnp.arange(n))


def explain(config: Any, x: np.ndarray, model_fn: Callable, background: np.ndarray,
            directory: str | None) -> dict[str, np.ndarray]:
  """KernelSHAP of every row of ``x`` on the marginal game of ``model_fn`` (class probabilities) over
  ``background``; input ``i`` uses the key ``fold_in(fold_in(key(config.seed), 1), i)``.

  Args:
    config: an explain_tabular config (``explain`` settings; the others fingerprint the saved chunks).
    x: float32[n, d] inputs.
    model_fn: float[b, d] -> float[b, k].
    background: float32[m, d] rows that removed features are averaged over.
    directory: where finished chunks are saved (resumable); None keeps nothing.

  Returns:
    dict with ``values``/``std`` (float[n, d, k]), ``num_evals`` and ``converged`` (float[n]).
  """
  e = config.explain
  settings = kernel_shap_settings(e)
  bg = jnp.asarray(background)
  d = x.shape[1]
  tag = artifacts.fingerprint(config.dataset, config.seed, config.test_fraction, config.model, config.train,
                              settings, e.background_size, e.chunk_size)
  return explain_in_chunks(_kernel_shap_chunk(lambda xi: games.marginal(model_fn, xi, bg), d, e.vmap_size, settings),
                           x, _input_keys(jax.random.key(config.seed), 1, len(x)), chunk_size=e.chunk_size,
                           directory=directory, tag=tag, desc="kernel_shap")


def exact_comparison(config: Any, x: np.ndarray, model_fn: Callable,
                     background: np.ndarray) -> dict[str, np.ndarray]:
  """Exact Shapley values vs KernelSHAP on the game restricted to ``config.exact.players`` (others present).

  The first ``config.exact.num_inputs`` rows of ``x``; KernelSHAP samples with the main settings and
  ``enumerate_sizes=config.exact.enumerate_sizes`` (left to itself, it would enumerate a small game completely and
  the comparison would say nothing).

  Returns:
    dict with ``exact`` and the estimate's ``values``, ``std``, ``num_evals``, ``converged``.
  """
  e, ex = config.explain, config.exact
  players, d = list(ex.players), x.shape[1]
  bg = jnp.asarray(background)
  n = min(ex.num_inputs, len(x))

  def restricted(xi: jax.Array) -> games.Game:
    return games.restrict(games.marginal(model_fn, xi, bg), players, d)

  exact_fn = chunk_explainer(lambda xi, key: {"values": methods.attribute(
      "exact_shapley", methods.Problem(game=restricted(xi), num_players=len(players)), key,
      batch_size=ex.batch_size).values}, e.vmap_size)
  keys = _input_keys(jax.random.key(config.seed), 2, n)
  exact = explain_in_chunks(exact_fn, x[:n], keys, chunk_size=ex.chunk_size, desc="exact")["values"]
  settings = dict(kernel_shap_settings(e), enumerate_sizes=ex.enumerate_sizes)
  sub = explain_in_chunks(_kernel_shap_chunk(restricted, len(players), e.vmap_size, settings), x[:n], keys,
                          chunk_size=ex.chunk_size, desc="kernel_shap (subset)")
  return dict(sub, exact=exact)


_ERROR_ROWS = [("mae", "mean absolute error"), ("max_abs_error", "max absolute error"),
               ("relative_l2", "relative L2 error (mean over inputs)"), ("correlation", "correlation"),
               ("within_2std", "fraction within 2 reported std (calibration; ~0.95 ideal)"),
               ("mean_std", "mean reported std"), ("mean_abs_exact", "mean |exact value|")]


def write_report(path: str | os.PathLike, config: Any, ds: Any, accuracy: float, metrics: Mapping[str, Any],
                 timings: Mapping[str, float]) -> str:
  """Writes the explain_tabular ``report.md`` (the plots ``summary.png`` and ``bar.png`` sit beside it).

  Args:
    path: the report file.
    config: the explain_tabular config.
    ds: the :class:`xattr.data.Dataset`.
    accuracy: test accuracy of the classifier.
    metrics: the job's metrics (``num_explained``, ``mean_num_evals``, ..., ``exact_<error metric>``).
    timings: stage name -> seconds.

  Returns:
    ``path``.
  """
  e, ex = config.explain, config.exact
  m, k = metrics, len(ex.players)
  settings = kernel_shap_settings(e)
  folder = os.path.dirname(os.path.abspath(path))
  r = reports.Report(f"KernelSHAP explanations: {ds.name}")
  r.bullets([
      f"Data: {ds.name}, {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test rows, {ds.num_features} "
      f"features (standardized with train statistics), classes {list(ds.class_names)}.",
      f"Model: MLP hidden={tuple(config.model.hidden_sizes)} ({config.model.activation}), "
      f"{config.train.num_steps} AdamW steps, batch {config.train.batch_size}.",
      f"**Test accuracy: {accuracy:.4f}**",
      f"Game: marginal (interventional) removal over {e.background_size} seeded training rows; the game is the "
      "vector of class probabilities (explained for every class at once; values sum to p(x) - E_bg[p]).",
      f"KernelSHAP: {', '.join(f'{k}={v}' for k, v in settings.items())} (num_samples=None: sample until "
      "max std / range < threshold).",
      f"Explained {m['num_explained']} test inputs: mean num_evals {m['mean_num_evals']:.0f} "
      f"(min {m['min_num_evals']}, max {m['max_num_evals']}), converged {m['converged_fraction']:.0%}, "
      f"max efficiency gap {m['max_efficiency_gap']:.2e}.",
      "Timings (s): " + ", ".join(f"{name} {v:.1f}" for name, v in timings.items())])
  r.heading(f"Error vs exact Shapley values ({k}-feature subset problem)")
  r.text(f"First {m['exact_num_inputs']} test inputs; players = features {list(ex.players)}, the other "
         f"{ds.num_features - k} features always present; exact values by enumerating all 2^{k} coalitions; "
         f"KernelSHAP with the settings above and enumerate_sizes={ex.enumerate_sizes} (so it samples rather than "
         f"enumerating the small game) (mean num_evals {m['exact_mean_num_evals']:.0f}, of 2^{k} = {2 ** k}).")
  r.table(["metric", "value"], [[label, m["exact_" + name]] for name, label in _ERROR_ROWS], digits=4)
  r.heading("Plots")
  r.text(f"Class shown: {ds.class_names[e.plot_class]!r} (index {e.plot_class}).")
  r.bullets(["[summary.png](summary.png): beeswarm, features sorted by mean |value|, color = standardized feature "
             "value", "[bar.png](bar.png): mean |value| per feature"])
  r.figure(os.path.join(folder, "summary.png"), "summary").figure(os.path.join(folder, "bar.png"), "bar")
  r.text("Arrays: values.npz (values [inputs, features, classes], std, num_evals, converged, x, feature_names, "
         "class_names, predictions, labels, background); exact_comparison.npz.")
  return r.write(path)
