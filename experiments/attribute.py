"""Batch attributions over a whole dataset: sharded over devices, streamed chunk by chunk, resumable, with a report.

  python -m experiments.attribute --config=configs/attribute/breast_cancer.py --workdir=runs/attribute

Given a model (the tabular MLP of ``experiments.explain_tabular``, the ViTs of an ``experiments.vit_shapley``
workdir, or a ViT converted with ``python -m xattr.models.convert``), a removal choice, a method and a dataset
(embedded, or TFDS read from a user ``data_dir``), the job explains every example:

  1. the examples are split into chunks of ``chunk_size`` rows; a chunk's examples are explained in parallel over
     all devices (:func:`xattr.parallel.explain_batch`: jit(vmap) sharded over a 1-D data mesh; multi-host via
     ``jax.distributed``), each example ``i`` with the key ``fold_in(fold_in(seed key, 1), i)``, so results do not
     depend on the device count, the chunk size or the order chunks run in;
  2. each finished chunk goes to the output store (:mod:`xattr.outputs`: zarr arrays keyed by example index, one
     completion marker per chunk); only the current chunk is in memory, whatever the dataset size;
  3. a killed job restarted with the same command skips the finished chunks and recomputes the rest; the store
     then equals that of an uninterrupted run. A store of another job (different config, model or data) is
     refused unless ``config.overwrite``;
  4. ``report.md`` (summary statistics, insertion/deletion curves, attribution overlays or a beeswarm summary) is
     written from the store, again chunk by chunk.

Stored per example: ``values`` (float[d, classes] with ``target='all'``, float[d] for the explained class with
``target='predicted'``), ``std`` and ``num_evals`` (sampling estimators), ``probs``, ``prediction``, ``label``,
``target`` and, with ``report.curves``, the ``insertion`` / ``deletion`` curves of the target-class probability.
Read them back with ``xattr.outputs.open(path)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import platform
import time
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging
from flax import nnx

from experiments import cli
from xattr import amortize, attributions, banzhaf, evaluation, games, loo, models, outputs, parallel, plots, shapley
from xattr.data import embedded
from xattr.data import images as image_data
from xattr.models import vit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ESTIMATORS = ("kernel_shap", "permutation", "banzhaf")           # sampling estimators: values, std, num_evals
GAME_METHODS = ESTIMATORS + ("leave_one_out",)
GRADIENT_METHODS = ("gradient_x_input", "integrated_gradients", "smoothgrad")
METHODS = GAME_METHODS + GRADIENT_METHODS + ("explainer",)
MODEL_KINDS = ("mlp", "vit_shapley", "vit")
# Test hook: seconds to sleep after each written chunk, so a test can kill the job between chunks.
SLEEP_ENV = "XATTR_ATTRIBUTE_SLEEP_AFTER_CHUNK"


# ---------------------------------------------------------------------------------------------------------------
# Data sources: examples read chunk by chunk
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Source:
  """Examples to explain, read a chunk at a time (``read(start, end) -> (x, labels)``)."""

  name: str
  num_examples: int
  example_shape: tuple[int, ...]
  read: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
  class_names: tuple[str, ...]
  feature_names: tuple[str, ...] | None = None     # tabular only

  @property
  def is_image(self) -> bool:
    return len(self.example_shape) == 3


def _limit(n: int, max_examples: int | None) -> int:
  return n if max_examples is None else min(n, int(max_examples))


def array_source(name: str, x: np.ndarray, y: np.ndarray, class_names, feature_names=None,
                 max_examples: int | None = None) -> Source:
  n = _limit(len(x), max_examples)
  return Source(name, n, tuple(x.shape[1:]), lambda a, b: (x[a:b], y[a:b]), tuple(class_names),
                tuple(feature_names) if feature_names is not None else None)


def tfds_source(name: str, *, data_dir: str | None, split: str, image_size: int,
                max_examples: int | None = None) -> Source:
  """A prepared TFDS image dataset read lazily (array_record data source: only the asked rows are decoded)."""
  hint = image_data.PREPARE_HINT.format(name=name, data_dir=data_dir or "/path/to/tfds")
  if not data_dir or not os.path.isdir(data_dir):
    raise FileNotFoundError(f"config.data.data_dir for TFDS dataset {name!r} must be an existing folder, got "
                            f"{data_dir!r}. " + hint)
  import tensorflow_datasets as tfds   # deferred: seconds of import that embedded runs need not pay

  try:
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    source = builder.as_data_source(split=split)
  except Exception as err:   # TFDS raises several types (AssertionError, DatasetNotFoundError, ...)
    raise FileNotFoundError(f"TFDS dataset {name!r} (split {split!r}) is not prepared in data_dir={data_dir!r} "
                            f"({type(err).__name__}: {err}). " + hint) from err
  label = builder.info.features["label"]
  class_names = tuple(label.names) if getattr(label, "names", None) else tuple(map(str, range(label.num_classes)))
  first = image_data._resize(source[0]["image"], image_size)

  def read(start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [source[i] for i in range(start, end)]
    return (np.stack([image_data._resize(r["image"], image_size) for r in rows]),
            np.asarray([int(r["label"]) for r in rows], np.int32))

  return Source(name, _limit(len(source), max_examples), tuple(first.shape), read, class_names)


# ---------------------------------------------------------------------------------------------------------------
# Models: what the job explains
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Task:
  """Everything the per-example computation needs, as pure functions of arrays."""

  source: Source
  num_players: int
  probs_fn: Callable[[jax.Array], jax.Array]              # float[B, ...] -> float[B, k]
  game_fn: Callable[[jax.Array], games.Game]               # one input -> vector-valued game (class probabilities)
  logit_fn: Callable[[jax.Array], jax.Array]               # differentiable float[B, ...] -> logits[B, k]
  players: int | None                                      # gradient maps summed per patch (images) or None
  explainer_fn: Callable[[jax.Array], jax.Array] | None    # one input -> float[d, k] (vit_shapley explainer)
  model_hash: str
  description: str
  grid: tuple[int, int] | None = None


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """``'configs/x/y.py[:arg]'`` -> that file's ``get_config(arg)`` (paths relative to the cwd or the repo root)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path) and os.path.exists(os.path.join(ROOT, path)):
    path = os.path.join(ROOT, path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.model.config: no config file {path!r} (from {spec!r}).")
  module_spec = importlib.util.spec_from_file_location(f"_attribute_model_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def params_hash(*modules: nnx.Module) -> str:
  """Fingerprint of the models' parameters: a retrained model is a different job."""
  crc = 0
  for module in modules:
    for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)):
      crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).tobytes(), crc)
  return f"{crc:08x}"


def _mismatch(what: str, err: Exception, hint: str) -> ValueError:
  return ValueError(f"checkpoint/model mismatch: {what} ({type(err).__name__}: {err}). {hint}")


def _mlp_task(config: ml_collections.ConfigDict, workdir: str) -> Task:
  from experiments import explain_tabular

  tab = load_config_file(config.model.config)
  ds = embedded.load(tab.dataset, seed=tab.seed, test_fraction=tab.test_fraction)
  if config.data.name not in (None, tab.dataset):
    raise ValueError(f"config.data.name={config.data.name!r} does not match the model's dataset {tab.dataset!r} "
                     f"(from {config.model.config}); leave data.name unset or pick the model config of that data.")
  model_dir = config.model.workdir or os.path.join(workdir, "model")
  try:
    model, _ = explain_tabular._train_classifier(tab, ds, model_dir)   # restores a finished checkpoint
  except (ValueError, KeyError, TypeError) as err:
    raise _mismatch(f"the checkpoint in {model_dir}/checkpoints does not fit the MLP of {config.model.config}", err,
                    "Point config.model.config at the config that trained it, or config.model.workdir at another "
                    "folder (an empty one trains the model).") from err
  split = config.data.split
  x, y = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train)
  source = array_source(ds.name, x, y, ds.class_names, ds.feature_names, config.data.max_examples)
  probs = jax.jit(models.model_fn(model, postprocess="softmax"))
  fast_probs = models.model_fn(model, postprocess="softmax", fold_vmap=True)   # vmap folds into one matmul
  if config.removal == "marginal":
    rng = np.random.default_rng(config.seed)
    background = jnp.asarray(ds.x_train[np.sort(rng.choice(len(ds.x_train), config.background_size,
                                                           replace=False))])
    game_fn = lambda x: games.marginal(fast_probs, x, background)
  elif config.removal == "baseline":          # standardized features: 0 is the training mean
    game_fn = lambda x: games.baseline(fast_probs, x, jnp.zeros_like(x))
  else:
    raise ValueError(f"config.removal for a tabular model must be 'marginal' or 'baseline', got {config.removal!r}.")
  return Task(source, ds.num_features, probs, game_fn, models.model_fn(model), None, None, params_hash(model),
              f"MLP {tuple(tab.model.hidden_sizes)} trained by explain_tabular ({config.model.config}), checkpoint "
              f"{model_dir}")


def placeholder_module(make: Callable[[], nnx.Module]) -> nnx.Module:
  """The module ``make()`` builds, with zeros instead of its initial values (to be overwritten by a checkpoint).

  Running the initializers eagerly compiles one small program per parameter shape: about 10 s for a nano ViT on
  2 busy cores, all of it wasted when a checkpoint replaces the values right after.
  """
  graphdef, state = nnx.split(nnx.eval_shape(make))

  def zeros(leaf: Any) -> Any:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    return np.zeros(leaf.shape, leaf.dtype)

  return nnx.merge(graphdef, jax.tree.map(zeros, state))


def _restore_stage(module: nnx.Module, stage: ml_collections.ConfigDict, directory: str, name: str,
                   trainable: Any, command: str) -> None:
  """Restores a finished vit_shapley stage into ``module`` (refusing to train: that is vit_shapley's job)."""
  from experiments import vit_shapley
  from xattr import training

  manager = training.checkpoint_manager(os.path.join(directory, "checkpoints"))
  try:
    latest = manager.latest_step()
  finally:
    manager.close()
  if latest is None or latest < stage.num_steps:
    raise FileNotFoundError(f"{directory} holds no finished '{name}' stage (latest checkpoint step {latest}, "
                            f"expected {stage.num_steps}). Train it first: {command}")
  try:
    training.train(module, lambda m, b: (0.0, {}), {"x": np.zeros((stage.batch_size, 1), np.float32)},
                   optimizer=vit_shapley.make_optimizer(stage, stage.num_steps), num_steps=stage.num_steps,
                   batch_size=stage.batch_size, workdir=directory, progress=False, trainable=trainable, desc=name)
  except (ValueError, KeyError, TypeError) as err:
    raise _mismatch(f"the '{name}' checkpoint in {directory} does not fit the model of the vit_shapley config", err,
                    "config.model.config must be the config that trained this workdir.") from err


def _vit_shapley_task(config: ml_collections.ConfigDict, source_override: Source | None) -> Task:
  from experiments import vit_shapley

  vs = load_config_file(config.model.config)
  wd = config.model.workdir
  command = (f"python -m experiments.vit_shapley --config={config.model.config} --workdir={wd or 'runs/vit_shapley'}")
  if not wd or not os.path.isdir(wd):
    raise FileNotFoundError(f"config.model.workdir must be a vit_shapley workdir, got {wd!r}. Train one first: "
                            f"{command}")
  source = source_override or _image_source(config, vs)
  cfg = vit_shapley.model_config(vs, _FakeData(source))
  classifier = placeholder_module(lambda: vit.ViT(cfg, rngs=nnx.Rngs(vs.seed)))
  _restore_stage(classifier, vs.classifier, os.path.join(wd, "classifier"), "classifier", nnx.Param, command)
  surrogate_wrapper = placeholder_module(lambda: vit_shapley.WithMaskRngs(vit.ViT(cfg, rngs=nnx.Rngs(0)),
                                                                          seed=vs.seed + 1))
  _restore_stage(surrogate_wrapper, vs.surrogate, os.path.join(wd, "surrogate"), "surrogate", nnx.Param, command)
  surrogate = surrogate_wrapper.model
  explainer_fn, hashed = None, [classifier, surrogate]
  if config.method == "explainer":
    wrapper = placeholder_module(lambda: vit_shapley.ExplainerTraining(
        vit_shapley.build_explainer(vs, vit.ViT(cfg, rngs=nnx.Rngs(0)), len(source.class_names)),
        vit.ViT(cfg, rngs=nnx.Rngs(0)), seed=vs.seed + 4))
    _restore_stage(wrapper, vs.explainer, os.path.join(wd, "explainer"), "explainer",
                   vit_shapley.EXPLAINER_TRAINABLE, command)
    hashed.append(wrapper.explainer)
    graphdef, state = nnx.split(wrapper.explainer)
    surrogate_probs = vit.masked_model_fn(surrogate, postprocess="softmax")
    p = surrogate.num_patches

    def explainer_fn(image: jax.Array) -> jax.Array:
      raw = nnx.merge(graphdef, state)(image[None])
      grand = surrogate_probs(image[None], jnp.ones((1, p), bool))
      null = surrogate_probs(image[None], jnp.zeros((1, p), bool))[0]
      return amortize.efficient_normalize(raw, grand, null)[0]

  removal = {"surrogate": surrogate, "classifier": classifier}.get(config.removal)
  if removal is None:
    raise ValueError(f"config.removal for a vit_shapley model must be 'surrogate' or 'classifier' (attention "
                     f"masking in that ViT), got {config.removal!r}.")
  masked = vit.masked_model_fn(removal, postprocess="softmax")
  logits = vit.masked_model_fn(classifier)
  full = lambda xb: logits(xb, None)
  return Task(source, classifier.num_patches, jax.jit(lambda xb: jax.nn.softmax(full(xb), -1)),
              lambda x: games.surrogate(masked, x), full, cfg.patch_size, explainer_fn, params_hash(*hashed),
              f"ViT {vs.model.name} from the vit_shapley workdir {wd} ({config.model.config}); removal: "
              f"attention masking in the {config.removal}", classifier.grid)


@dataclasses.dataclass
class _FakeData:
  """What ``vit_shapley.model_config`` reads from a dataset: image shape and class count."""

  source: Source

  @property
  def image_shape(self) -> tuple[int, ...]:
    return self.source.example_shape

  @property
  def num_classes(self) -> int:
    return len(self.source.class_names)


def _image_source(config: ml_collections.ConfigDict, vs: ml_collections.ConfigDict | None) -> Source:
  name = config.data.name or (vs.data.name if vs is not None else None)
  image_size = config.data.image_size or (vs.data.image_size if vs is not None else None)
  if name is None or image_size is None:
    raise ValueError("config.data.name and config.data.image_size must be set for this model.")
  if name == "digits":
    ds = image_data.load("digits", image_size=image_size, seed=vs.seed if vs is not None else config.seed)
    x, y = (ds.x_test, ds.y_test) if config.data.split == "test" else (ds.x_train, ds.y_train)
    return array_source("digits", x, y, ds.class_names, max_examples=config.data.max_examples)
  data_dir = config.data.data_dir or (vs.data.data_dir if vs is not None else None)
  split = config.data.split
  if vs is not None:
    split = vs.data.test_split if split == "test" else vs.data.train_split
  return tfds_source(name, data_dir=data_dir, split=split, image_size=image_size,
                     max_examples=config.data.max_examples)


def _vit_task(config: ml_collections.ConfigDict) -> Task:
  """A converted ViT classifier (``python -m xattr.models.convert``); removal = its own attention masking."""
  from xattr.models import convert

  if not config.model.path or not os.path.isdir(config.model.path):
    raise FileNotFoundError(f"config.model.path must be a folder written by `python -m xattr.models.convert`, got "
                            f"{config.model.path!r}.")
  model = convert.load_checkpoint(config.model.path)
  source = _image_source(config, None)
  cfg = model.config
  if tuple(source.example_shape) != (*cfg.image_hw, cfg.num_channels) or len(source.class_names) != cfg.num_classes:
    raise ValueError(f"checkpoint/model mismatch: {config.model.path} is a ViT for {cfg.image_hw} images with "
                     f"{cfg.num_channels} channels and {cfg.num_classes} classes; the data {source.name!r} has "
                     f"images {source.example_shape} and {len(source.class_names)} classes. Set "
                     "config.data.image_size, or fine-tune the model on this dataset (experiments.vit_shapley with "
                     "model.init_from).")
  if config.removal != "attention":
    raise ValueError(f"config.removal for a converted ViT must be 'attention', got {config.removal!r}.")
  masked = vit.masked_model_fn(model, postprocess="softmax")
  logits = vit.masked_model_fn(model)
  full = lambda xb: logits(xb, None)
  return Task(source, model.num_patches, jax.jit(lambda xb: jax.nn.softmax(full(xb), -1)),
              lambda x: games.surrogate(masked, x), full, cfg.patch_size, None, params_hash(model),
              f"converted ViT {config.model.path}; removal: attention masking", model.grid)


def build_task(config: ml_collections.ConfigDict, workdir: str) -> Task:
  kind = config.model.kind
  if kind == "mlp":
    return _mlp_task(config, workdir)
  if kind == "vit_shapley":
    return _vit_shapley_task(config, None)
  if kind == "vit":
    return _vit_task(config)
  raise ValueError(f"config.model.kind must be one of {MODEL_KINDS}, got {kind!r}.")


# ---------------------------------------------------------------------------------------------------------------
# The per-example computation
# ---------------------------------------------------------------------------------------------------------------

def _check_method(config: ml_collections.ConfigDict) -> None:
  if config.method not in METHODS:
    raise ValueError(f"config.method must be one of {METHODS}, got {config.method!r}.")
  if config.target not in ("all", "predicted"):
    raise ValueError(f"config.target must be 'all' (every class) or 'predicted', got {config.target!r}.")
  if config.method in GRADIENT_METHODS and config.target != "predicted":
    raise ValueError(f"config.method={config.method!r} explains one class: set config.target='predicted'.")


def _game_estimate(config: ml_collections.ConfigDict, game: games.Game, d: int, key: jax.Array) -> dict[str, Any]:
  m = config.method
  if m == "kernel_shap":
    k = config.kernel_shap
    est = shapley.kernel_shap(game, d, key, num_samples=k.num_samples, batch_size=k.batch_size, paired=k.paired)
  elif m == "permutation":
    k = config.permutation
    est = shapley.permutation(game, d, key, num_permutations=k.num_permutations, batch_size=k.batch_size)
  elif m == "banzhaf":
    k = config.banzhaf
    est = banzhaf.msr(game, d, key, num_samples=k.num_samples, batch_size=k.batch_size)
  else:
    return {"values": loo.leave_one_out(game, d)}
  return {"values": est.values, "std": est.std, "num_evals": est.num_evals.astype(jnp.int32)}


def _gradient(config: ml_collections.ConfigDict, task: Task, x: jax.Array, target: jax.Array,
              key: jax.Array) -> jax.Array:
  m = config.method
  if m == "gradient_x_input":
    return attributions.gradient_x_input(task.logit_fn, x, target, players=task.players)
  if m == "integrated_gradients":
    return attributions.integrated_gradients(task.logit_fn, x, target, num_steps=config.integrated_gradients.num_steps,
                                             players=task.players)
  return attributions.smoothgrad(task.logit_fn, x, target, key, num_samples=config.smoothgrad.num_samples,
                                 sigma=config.smoothgrad.sigma, players=task.players)


def _curves(config: ml_collections.ConfigDict, game: games.Game, attribution: jax.Array,
            target: jax.Array) -> dict[str, jax.Array]:
  ins, dele = evaluation.insertion_deletion_curves(games.select(game, target), attribution,
                                                   num_steps=config.report.curve_steps)
  return {"insertion": ins.values, "deletion": dele.values}


def _target_values(values: jax.Array, target: jax.Array) -> jax.Array:
  """float[d, k] -> the target class's float[d] (float[d] passes through)."""
  return values if values.ndim == 1 else jnp.take(values, target, axis=-1)


def make_explain_one(config: ml_collections.ConfigDict, task: Task) -> Callable[[dict, jax.Array], dict]:
  """``(row, key) -> outputs`` for ONE example ``row = {'x', 'index', 'label'}`` (vmapped and sharded later)."""
  root = jax.random.fold_in(jax.random.key(config.seed), 1)
  method, d = config.method, task.num_players

  def explain_one(row: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
    del key   # keys come from the global example index, whatever the chunking
    key = jax.random.fold_in(root, row["index"])
    x = row["x"]
    probs = task.probs_fn(x[None])[0]
    prediction = jnp.argmax(probs).astype(jnp.int32)
    game = task.game_fn(x)
    if method in GAME_METHODS:
      out = _game_estimate(config, game if config.target == "all" else games.select(game, prediction), d, key)
    elif method in GRADIENT_METHODS:
      out = {"values": _gradient(config, task, x, prediction, key)}
    elif task.explainer_fn is not None:
      values = task.explainer_fn(x)
      out = {"values": values if config.target == "all" else values[:, prediction]}
    else:                                   # precomputed by the batched amortized explainer (see run)
      out = {"values": row["values"] if config.target == "all" else row["values"][:, prediction]}
    out.update(probs=probs, prediction=prediction, label=row["label"].astype(jnp.int32), target=prediction)
    if config.report.curves:
      out.update(_curves(config, game, _target_values(out["values"], prediction), prediction))
    return out

  return explain_one


def load_amortized_explainer(path: str | None) -> Any:
  """The tabular FastSHAP explainer saved at ``path``, via ``xattr.amortize.load``."""
  if not hasattr(amortize, "load"):
    raise NotImplementedError("config.method='explainer' for tabular models needs xattr.amortize.load (loading a "
                              "trained FastSHAP explainer), which this version of xattr does not have.")
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f"config.explainer_path must point at a trained FastSHAP explainer, got {path!r}.")
  return amortize.load(path)


def output_specs(config: ml_collections.ConfigDict, task: Task) -> dict[str, outputs.ArraySpec]:
  d, k = task.num_players, len(task.source.class_names)
  per_example = (d, k) if config.target == "all" else (d,)
  specs = {"values": outputs.ArraySpec(per_example, "float32")}
  if config.method in ESTIMATORS:
    specs["std"] = outputs.ArraySpec(per_example, "float32")
    specs["num_evals"] = outputs.ArraySpec((), "int32")
  specs.update(probs=outputs.ArraySpec((k,), "float32"), prediction=outputs.ArraySpec((), "int32"),
               label=outputs.ArraySpec((), "int32"), target=outputs.ArraySpec((), "int32"))
  if config.report.curves:
    s = (d if config.report.curve_steps is None else config.report.curve_steps) + 1
    specs.update(insertion=outputs.ArraySpec((s,), "float32"), deletion=outputs.ArraySpec((s,), "float32"))
  return specs


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------

def _job_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The settings the stored arrays depend on (not where they go, nor how the report looks)."""
  d = config.to_dict()
  for key in ("output", "overwrite", "progress", "chunk_size"):
    d.pop(key, None)
  d["report"] = {k: d["report"][k] for k in ("curves", "curve_steps")}
  return d


def versions() -> dict[str, str]:
  from importlib import metadata

  found = {"python": platform.python_version()}
  for package in ("xattr", "jax", "jaxlib", "flax", "numpy", "tensorstore"):
    try:
      found[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      found[package] = "unknown"
  return found


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
  return a if len(a) == rows else np.concatenate([a, np.repeat(a[-1:], rows - len(a), axis=0)])


_EXPLAIN_CACHE: dict[str, Callable] = {}


def _open_store(path: str, specs: dict[str, outputs.ArraySpec], num_examples: int,
                config: ml_collections.ConfigDict, fingerprint: str, metadata: dict[str, Any]) -> outputs.Store:
  """Process 0 creates or resumes the store; the others (multi-host, shared filesystem) open it after a barrier."""
  kwargs = dict(num_examples=num_examples, chunk_size=config.chunk_size, fingerprint=fingerprint, metadata=metadata)
  if jax.process_count() == 1:
    return outputs.create_or_resume(path, specs, overwrite=config.overwrite, **kwargs)
  from jax.experimental import multihost_utils
  store = outputs.create_or_resume(path, specs, overwrite=config.overwrite, **kwargs) \
      if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("attribute: store ready")
  return store or outputs.create_or_resume(path, specs, **kwargs)


def _files_hash(path: str) -> str:
  """Fingerprint of the files at ``path`` (a file or a folder): a retrained explainer is a different job."""
  files = [path] if os.path.isfile(path) else sorted(
      os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
  crc = 0
  for name in files:
    crc = zlib.crc32(os.path.relpath(name, path).encode(), crc)
    with open(name, "rb") as f:
      while block := f.read(1 << 20):
        crc = zlib.crc32(block, crc)
  return f"{crc:08x}"


def _to_host(tree: Any) -> Any:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)


def run(config: ml_collections.ConfigDict, workdir: str, *, mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Explains every example of the configured dataset into the output store and writes the report.

  Args:
    config: see configs/attribute/*.py.
    workdir: report, plots and (by default) the store ``workdir/attributions`` and the tabular model.
    mesh: device mesh; None: all devices (of every process when multi-host).

  Returns:
    dict with ``paths``, ``summary`` (report statistics), ``timings``, ``computed_chunks``, ``num_examples``.
  """
  parallel.initialize_distributed()
  _check_method(config)
  os.makedirs(workdir, exist_ok=True)
  timings: dict[str, float] = {}
  t0 = time.perf_counter()
  task = build_task(config, workdir)
  timings["load_s"] = time.perf_counter() - t0
  mesh = parallel.make_mesh() if mesh is None else mesh
  source = task.source
  amortized = None
  if config.method == "explainer" and task.explainer_fn is None:
    amortized = load_amortized_explainer(config.explainer_path)
    shape = (getattr(amortized, "num_features", None), getattr(amortized, "num_classes", None))
    if shape != (task.num_players, len(source.class_names)):
      raise ValueError(f"checkpoint/model mismatch: the explainer at {config.explainer_path} explains "
                       f"(num_features, num_classes) = {shape}, the model and data have "
                       f"{(task.num_players, len(source.class_names))}.")

  specs = output_specs(config, task)
  job = _job_config(config)
  model_hash = task.model_hash + (f"+{_files_hash(config.explainer_path)}" if amortized is not None else "")
  # Locations are left out (a moved model folder is the same job); what they hold is in model_hash.
  located = json.loads(json.dumps(job, default=str))
  for section, key in (("model", "workdir"), ("model", "path"), ("data", "data_dir"), (None, "explainer_path")):
    (located[section] if section else located).pop(key, None)
  fingerprint = hashlib.sha256(json.dumps([located, model_hash, source.name, source.num_examples],
                                          sort_keys=True, default=str).encode()).hexdigest()[:16]
  metadata = {"config": job, "versions": versions(), "seed": config.seed, "method": config.method,
              "model": task.description, "model_hash": model_hash, "dataset": source.name,
              "split": config.data.split, "class_names": list(source.class_names),
              "feature_names": list(source.feature_names) if source.feature_names else None,
              "grid": list(task.grid) if task.grid else None}
  path = config.output or os.path.join(workdir, "attributions")
  store = _open_store(path, specs, source.num_examples, config, fingerprint, metadata)
  missing = store.missing_chunks()
  logging.info("store %s: %d of %d chunks left", path, len(missing), store.num_chunks)

  # One explain function per job: explain_batch caches its compilation on the function object, so rerunning the
  # same job in a process (a notebook, a resumed run, the tests) compiles once.
  explain_one = _EXPLAIN_CACHE.get(fingerprint) or make_explain_one(config, task)
  _EXPLAIN_CACHE[fingerprint] = explain_one
  while len(_EXPLAIN_CACHE) > 8:
    _EXPLAIN_CACHE.pop(next(iter(_EXPLAIN_CACHE)))
  batched_explainer = amortized          # jitted inside; it checks its input shape outside jit
  sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
  done_rows = source.num_examples - sum(np.subtract(*store.chunk_rows(c)[::-1]) for c in missing)
  t0 = time.perf_counter()
  computed = 0
  with tqdm.tqdm(total=source.num_examples, initial=done_rows, unit="example", desc=f"attribute {config.method}",
                 dynamic_ncols=True, disable=not config.progress or jax.process_index() != 0) as bar:
    for chunk in missing:
      start, end = store.chunk_rows(chunk)
      x, labels = source.read(start, end)
      rows = {"x": _pad_rows(np.asarray(x, np.float32), config.chunk_size),
              "index": np.arange(start, start + config.chunk_size, dtype=np.uint32),
              "label": _pad_rows(np.asarray(labels, np.int32), config.chunk_size)}
      if batched_explainer is not None:
        phi = np.asarray(batched_explainer(rows["x"]), np.float32)           # [chunk, d, k]
        rows["values"] = phi
      out = parallel.explain_batch(explain_one, rows, jax.random.key(0), mesh=mesh, progress=False)
      out = {k: v[:end - start] for k, v in _to_host(out).items()}
      if jax.process_index() == 0:
        try:
          store.write_chunk(chunk, out)
        except OSError as err:
          done = len(store.done_chunks())
          raise OSError(f"Writing chunk {chunk} (rows {start}-{end - 1}) to the store {path} failed: {err}. The "
                        f"{done} chunk(s) finished before are intact; free space or fix the folder, then rerun the "
                        "same command to resume.") from err
      computed += 1
      bar.update(end - start)
      if sleep:
        time.sleep(sleep)
  timings["attribute_s"] = time.perf_counter() - t0
  rows_computed = source.num_examples - done_rows
  timings["attributions_per_s"] = rows_computed / timings["attribute_s"] if rows_computed else float("nan")
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("attribute: store written")

  paths = {"store": path}
  summary: dict[str, Any] = {}
  if jax.process_index() == 0:
    t0 = time.perf_counter()
    summary, report_paths = write_report(config, workdir, outputs.open(path), source, timings)
    paths.update(report_paths)
    timings["report_s"] = time.perf_counter() - t0
  return dict(paths=paths, summary=summary, timings=timings, computed_chunks=computed,
              num_examples=source.num_examples, fingerprint=fingerprint)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def _target_rows(values: np.ndarray, target: np.ndarray) -> np.ndarray:
  if values.ndim == 2:
    return values
  return np.take_along_axis(values, target[:, None, None], axis=2)[:, :, 0]


def summarize(reader: outputs.Reader, *, keep: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Streams over the store: summary statistics, plus the first ``keep`` rows' target-class values."""
  n, d = reader.num_examples, reader.specs["values"].shape[0]
  sums = dict(abs=np.zeros(d), signed=np.zeros(d), std=0.0, evals=0.0, correct=0, curves_ins=None, curves_del=None,
              auc_ins=[0.0, 0.0], auc_del=[0.0, 0.0])
  kept: dict[str, list[np.ndarray]] = {"values": [], "target": [], "label": []}
  for start, values in reader["values"].chunks():
    end = start + len(values)
    target = reader["target"][start:end]
    a = _target_rows(values, target).astype(np.float64)
    sums["abs"] += np.abs(a).sum(0)
    sums["signed"] += a.sum(0)
    sums["correct"] += int((reader["prediction"][start:end] == reader["label"][start:end]).sum())
    if "std" in reader:
      sums["std"] += float(_target_rows(reader["std"][start:end], target).mean(1).sum())
      sums["evals"] += float(reader["num_evals"][start:end].sum())
    if "insertion" in reader:
      for kind, key in (("insertion", "ins"), ("deletion", "del")):
        c = reader[kind][start:end].astype(np.float64)
        fractions = np.linspace(0.0, 1.0, c.shape[1])
        aucs = np.trapezoid(c, fractions, axis=1)
        sums[f"auc_{key}"][0] += aucs.sum()
        sums[f"auc_{key}"][1] += (aucs ** 2).sum()
        sums[f"curves_{key}"] = c.sum(0) if sums[f"curves_{key}"] is None else sums[f"curves_{key}"] + c.sum(0)
    if sum(len(v) for v in kept["values"]) < keep:
      kept["values"].append(a)
      kept["target"].append(target)
      kept["label"].append(reader["label"][start:end])
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
  return summary, {k: np.concatenate(v)[:keep] for k, v in kept.items()}


def write_report(config: ml_collections.ConfigDict, workdir: str, reader: outputs.Reader, source: Source,
                 timings: dict[str, float]) -> tuple[dict[str, Any], dict[str, str]]:
  """Writes ``report.md``, ``summary.json`` and the plots from the store (chunk by chunk)."""
  r = config.report
  keep = r.num_images if source.is_image else r.max_points
  summary, kept = summarize(reader, keep=keep)
  meta = reader.metadata
  method = meta["method"]
  names = meta["feature_names"] or [f"patch {i}" for i in range(len(summary["mean_abs_per_player"]))]
  paths = {"report": os.path.join(workdir, "report.md"), "summary": os.path.join(workdir, "summary.json")}
  k = len(kept["values"])
  x, _ = source.read(0, k)
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
    fractions = np.linspace(0.0, 1.0, len(ins))
    paths["curves"] = plots.curves_plot(
        fractions, {method: {"insertion": ins[None], "deletion": np.asarray(summary["deletion_curve"])[None]}},
        os.path.join(workdir, "curves.png"), ylabel="predicted-class probability")

  order = np.argsort(summary["mean_abs_per_player"])[::-1][:10]
  lines = [f"# Attributions: {method} on {source.name} ({meta['split']} split)", "",
           f"- Model: {meta['model']}",
           f"- Examples: {summary['num_examples']} in {reader.num_chunks} chunks of {reader.chunk_size}; "
           f"model accuracy on them {summary['accuracy']:.4f}",
           f"- Values: {tuple(reader.specs['values'].shape)} per example "
           f"({'every class' if config.target == 'all' else 'the predicted class'}); statistics below are for the "
           "predicted class.",
           f"- Store: `{reader.path}` (read with `xattr.outputs.open(path)`), fingerprint {reader.fingerprint}, "
           f"seed {meta['seed']}, versions {meta['versions']}",
           f"- Throughput of this run: {timings.get('attributions_per_s', float('nan')):.2f} attributions/s "
           f"({timings.get('attribute_s', 0.0):.1f} s for the chunks computed now)", "",
           "## Summary statistics", "", "| statistic | value |", "| --- | --- |",
           f"| mean \\|attribution\\| | {summary['mean_abs']:.4g} |"]
  if "mean_std" in summary:
    lines += [f"| mean reported std | {summary['mean_std']:.4g} |",
              f"| mean game evaluations per example | {summary['mean_num_evals']:.1f} |"]
  if "insertion_auc" in summary:
    lines += [f"| insertion AUC (higher is better) | {summary['insertion_auc']:.4f} ± "
              f"{summary['insertion_auc_sem']:.4f} |",
              f"| deletion AUC (lower is better) | {summary['deletion_auc']:.4f} ± "
              f"{summary['deletion_auc_sem']:.4f} |"]
  lines += ["", "Top players by mean |attribution|:", "", "| player | mean \\|attribution\\| | mean attribution |",
            "| --- | --- | --- |"]
  lines += [f"| {names[j]} | {summary['mean_abs_per_player'][j]:.4g} | {summary['mean_per_player'][j]:.4g} |"
            for j in order]
  lines += [""]
  if "curves" in paths:
    lines += ["## Insertion / deletion curves", "", "Players added to the empty coalition (removed from the full "
              "one) in decreasing attribution order, through the job's removal; mean over all examples.", "",
              "![insertion and deletion curves](curves.png)", ""]
  if source.is_image:
    lines += ["## Attribution overlays", "", f"The first {k} examples (red: positive, blue: negative).", "",
              "![attribution overlays](overlays.png)", ""]
  else:
    lines += ["## Summary plot", "", f"Beeswarm of the first {k} examples (color: feature value).", "",
              "![beeswarm summary](beeswarm.png)", "", "![mean |attribution|](bar.png)", ""]
  with open(paths["report"], "w") as f:
    f.write("\n".join(lines))
  with open(paths["summary"], "w") as f:
    json.dump(dict(summary, timings=timings), f, indent=1, default=float)
  return summary, paths


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  t = out["timings"]
  print(f"{out['num_examples']} examples ({out['computed_chunks']} chunks computed now, "
        f"{t['attributions_per_s']:.2f} attributions/s); store: {out['paths']['store']}; "
        f"report: {out['paths'].get('report')}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/attribute/breast_cancer.py",
           workdir_help="Directory for the output store (attributions/), the report and plots, and the tabular model.")
