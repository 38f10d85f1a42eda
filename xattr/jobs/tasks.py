"""What the attribution job explains: a model restored from a finished training run, its game and its data.

A :class:`Task` holds everything the per-example computation needs as pure functions of arrays (class
probabilities, the removal game of one input, differentiable logits, an amortized explainer), the
:class:`xattr.data.Source` of the examples, and a fingerprint of the model's parameters (a retrained model is a
different job). :func:`build_task` makes one from an attribution config (``configs/attribute/*.py``):

  * ``model.kind='mlp'``: the MLP of an explain_tabular config, restored from ``model.workdir`` (trained there
    first if the folder holds no finished run) with :func:`xattr.tabular.train_classifier`; removal ``marginal``
    (seeded training rows) or ``baseline`` (zeros: the training mean of standardized features);
  * ``model.kind='vit_shapley'``: the classifier, surrogate and (for ``method='explainer'``) explainer of an
    ``experiments.vit_shapley`` workdir, restored with :func:`xattr.training.restore` (never trained here);
    removal: attention masking in the surrogate or the classifier;
  * ``model.kind='vit'``: a ViT converted with ``python -m xattr.models.convert``; removal: its attention masking.

Example:
  >>> import jax, numpy as np
  >>> from flax import nnx
  >>> m = placeholder_module(lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
  >>> float(np.abs(m.kernel[...]).sum()), len(params_fingerprint(m))
  (0.0, 16)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from xattr import amortize, artifacts, data, games, models, tabular, training
from xattr.data import images as image_data
from xattr.models import vit

__all__ = ["MODEL_KINDS", "Task", "load_config_file", "params_fingerprint", "placeholder_module", "mlp_task",
           "vit_shapley_task", "vit_task", "image_source", "build_task"]

_REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Task:
  """Everything the per-example computation needs, as pure functions of arrays.

  Attributes:
    source: the examples (:class:`xattr.data.Source`).
    num_players: d, features (tabular) or patches (images).
    probs_fn: ``float[B, ...] -> float[B, k]`` class probabilities.
    game_fn: one input -> its vector-valued removal game (class probabilities).
    logit_fn: differentiable ``float[B, ...] -> logits[B, k]`` (gradient methods).
    players: pixel-to-player pooling of gradient maps (patch size for images) or None.
    explainer_fn: one input -> ``float[d, k]`` (a ViT Shapley explainer), or None.
    model_hash: fingerprint of the explained parameters.
    description: one line for the report.
    grid: patch grid (images) or None.
    model: the explained ViT itself (for methods that read its internals: GradCAM, LRP, ...), or None.
  """

  source: data.Source
  num_players: int
  probs_fn: Callable[[jax.Array], jax.Array]
  game_fn: Callable[[jax.Array], games.Game]
  logit_fn: Callable[[jax.Array], jax.Array]
  players: int | None
  explainer_fn: Callable[[jax.Array], jax.Array] | None
  model_hash: str
  description: str
  grid: tuple[int, int] | None = None
  model: vit.ViT | None = None


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """``'configs/x/y.py[:arg]'`` -> that file's ``get_config(arg)`` (paths relative to the cwd or the repository).

  Raises:
    FileNotFoundError: no such file.
  """
  path, _, arg = spec.partition(":")
  if not os.path.exists(path) and (_REPO / path).exists():
    path = str(_REPO / path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.model.config: no config file {path!r} (from {spec!r}).")
  module_spec = importlib.util.spec_from_file_location(f"_attribute_model_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def params_fingerprint(*modules: nnx.Module) -> str:
  """Fingerprint of the modules' parameters (:func:`xattr.artifacts.data_identity` of every ``nnx.Param``)."""
  identity = artifacts.data_identity([nnx.state(m, nnx.Param) for m in modules])
  return artifacts.fingerprint(identity, library=False)


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


def _mismatch(what: str, err: Exception, hint: str) -> ValueError:
  return ValueError(f"checkpoint/model mismatch: {what} ({type(err).__name__}: {err}). {hint}")


def _split(config: ml_collections.ConfigDict, ds: Any) -> tuple[np.ndarray, np.ndarray]:
  return (ds.x_test, ds.y_test) if config.data.split == "test" else (ds.x_train, ds.y_train)


def mlp_task(config: ml_collections.ConfigDict, workdir: str) -> Task:
  """The explain_tabular MLP of ``config.model.config``, restored from (or trained into) its model folder."""
  tab = load_config_file(config.model.config)
  ds = data.load_embedded(tab.dataset, seed=tab.seed, test_fraction=tab.test_fraction)
  if config.data.name not in (None, tab.dataset):
    raise ValueError(f"config.data.name={config.data.name!r} does not match the model's dataset {tab.dataset!r} "
                     f"(from {config.model.config}); leave data.name unset or pick the model config of that data.")
  model_dir = config.model.workdir or os.path.join(workdir, "model")
  try:
    model = tabular.train_classifier(tab, ds, model_dir)
  except (ValueError, KeyError, TypeError) as err:
    raise _mismatch(f"the checkpoint in {model_dir}/checkpoints does not fit the MLP of {config.model.config}", err,
                    "Point config.model.config at the config that trained it, or config.model.workdir at another "
                    "folder (an empty one trains the model).") from err
  x, y = _split(config, ds)
  source = data.from_arrays(ds.name, x, y, class_names=ds.class_names, feature_names=ds.feature_names,
                            max_examples=config.data.max_examples)
  probs = jax.jit(models.model_fn(model, postprocess="softmax"))
  fast_probs = models.model_fn(model, postprocess="softmax", fold_vmap=True)   # vmap folds into one matmul
  if config.removal == "marginal":
    background = jnp.asarray(tabular.background_sample(ds.x_train, config.background_size, config.seed))
    game_fn = lambda x: games.marginal(fast_probs, x, background)
  elif config.removal == "baseline":          # standardized features: 0 is the training mean
    game_fn = lambda x: games.baseline(fast_probs, x, jnp.zeros_like(x))
  else:
    raise ValueError(f"config.removal for a tabular model must be 'marginal' or 'baseline', got {config.removal!r}.")
  return Task(source, ds.num_features, probs, game_fn, models.model_fn(model), None, None, params_fingerprint(model),
              f"MLP {tuple(tab.model.hidden_sizes)} trained by explain_tabular ({config.model.config}), checkpoint "
              f"{model_dir}")


def _restore_stage(module: nnx.Module, stage: ml_collections.ConfigDict, directory: str, name: str,
                   trainable: Any, command: str) -> None:
  """Restores a finished vit_shapley stage into ``module`` (refusing to train: that is vit_shapley's job)."""
  try:
    training.restore(module, directory, optimizer=training.optimizer(stage, num_steps=stage.num_steps),
                     trainable=trainable, min_step=stage.num_steps)
  except FileNotFoundError as err:
    raise FileNotFoundError(f"{directory} holds no finished '{name}' stage ({err}). Train it first: "
                            f"{command}") from err
  except (ValueError, KeyError, TypeError) as err:
    raise _mismatch(f"the '{name}' checkpoint in {directory} does not fit the model of the vit_shapley config", err,
                    "config.model.config must be the config that trained this workdir.") from err


def _explainer_fn(explainer: nnx.Module, surrogate: vit.ViT) -> Callable[[jax.Array], jax.Array]:
  """One image -> the explainer's values, efficiently normalized on the surrogate's game."""
  graphdef, state = nnx.split(explainer)
  surrogate_probs = vit.masked_model_fn(surrogate, postprocess="softmax")
  p = surrogate.num_patches

  def explain(image: jax.Array) -> jax.Array:
    raw = nnx.merge(graphdef, state)(image[None])
    grand = surrogate_probs(image[None], jnp.ones((1, p), bool))
    null = surrogate_probs(image[None], jnp.zeros((1, p), bool))[0]
    return amortize.efficient_normalize(raw, grand, null)[0]

  return explain


def _vit_functions(model: vit.ViT, removal: vit.ViT) -> tuple[Callable, Callable, Callable]:
  """(probs_fn, game_fn, logit_fn) of a ViT whose game masks attention in ``removal``."""
  masked = vit.masked_model_fn(removal, postprocess="softmax")
  logits = vit.masked_model_fn(model)
  full = lambda xb: logits(xb, None)
  return jax.jit(lambda xb: jax.nn.softmax(full(xb), -1)), lambda x: games.surrogate(masked, x), full


def vit_shapley_task(config: ml_collections.ConfigDict) -> Task:
  """The models of an ``experiments.vit_shapley`` workdir (``config.model.workdir``), restored without training."""
  from xattr import vit_shapley   # deferred: the ViT Shapley method is only needed on this path

  vs = load_config_file(config.model.config)
  wd = config.model.workdir
  command = f"python -m experiments.vit_shapley --config={config.model.config} --workdir={wd or 'runs/vit_shapley'}"
  if not wd or not os.path.isdir(wd):
    raise FileNotFoundError(f"config.model.workdir must be a vit_shapley workdir, got {wd!r}. Train one first: "
                            f"{command}")
  source = image_source(config, vs)
  cfg = vit_shapley.model_config(vs, source.example_shape, source.num_classes)
  classifier = placeholder_module(lambda: vit.ViT(cfg, rngs=nnx.Rngs(vs.seed)))
  _restore_stage(classifier, vs.classifier, os.path.join(wd, "classifier"), "classifier", nnx.Param, command)
  wrapper = placeholder_module(lambda: vit_shapley.WithMaskRngs(vit.ViT(cfg, rngs=nnx.Rngs(0)), seed=vs.seed + 1))
  _restore_stage(wrapper, vs.surrogate, os.path.join(wd, "surrogate"), "surrogate", nnx.Param, command)
  surrogate = wrapper.model
  explainer_fn, hashed = None, [classifier, surrogate]
  if config.method == "explainer":
    training_module = placeholder_module(lambda: vit_shapley.ExplainerTraining(
        vit_shapley.build_explainer(vs, vit.ViT(cfg, rngs=nnx.Rngs(0)), source.num_classes),
        vit.ViT(cfg, rngs=nnx.Rngs(0)), seed=vs.seed + 4))
    _restore_stage(training_module, vs.explainer, os.path.join(wd, "explainer"), "explainer",
                   vit_shapley.EXPLAINER_TRAINABLE, command)
    hashed.append(training_module.explainer)
    explainer_fn = _explainer_fn(training_module.explainer, surrogate)
  removal = {"surrogate": surrogate, "classifier": classifier}.get(config.removal)
  if removal is None:
    raise ValueError(f"config.removal for a vit_shapley model must be 'surrogate' or 'classifier' (attention "
                     f"masking in that ViT), got {config.removal!r}.")
  probs, game_fn, logits = _vit_functions(classifier, removal)
  return Task(source, classifier.num_patches, probs, game_fn, logits, cfg.patch_size, explainer_fn,
              params_fingerprint(*hashed), f"ViT {vs.model.name} from the vit_shapley workdir {wd} "
              f"({config.model.config}); removal: attention masking in the {config.removal}", classifier.grid,
              classifier)


def image_source(config: ml_collections.ConfigDict, vs: ml_collections.ConfigDict | None) -> data.Source:
  """The images of ``config.data`` (defaults from the vit_shapley config ``vs`` when given): digits or TFDS.

  Raises:
    ValueError: no dataset name or image size.
    FileNotFoundError: a TFDS dataset that is not prepared in ``config.data.data_dir``.
  """
  name = config.data.name or (vs.data.name if vs is not None else None)
  image_size = config.data.image_size or (vs.data.image_size if vs is not None else None)
  if name is None or image_size is None:
    raise ValueError("config.data.name and config.data.image_size must be set for this model.")
  if name == "digits":
    ds = image_data.load("digits", image_size=image_size, seed=vs.seed if vs is not None else config.seed)
    x, y = _split(config, ds)
    return data.from_arrays("digits", x, y, class_names=ds.class_names, max_examples=config.data.max_examples)
  data_dir = config.data.data_dir or (vs.data.data_dir if vs is not None else None)
  split = config.data.split
  if vs is not None:
    split = vs.data.test_split if split == "test" else vs.data.train_split
  try:
    return data.from_tfds(name, data_dir=data_dir, split=split, image_size=image_size,
                          max_examples=config.data.max_examples)
  except FileNotFoundError as err:
    raise FileNotFoundError(f"config.data: {err}") from err


def vit_task(config: ml_collections.ConfigDict) -> Task:
  """A converted ViT classifier (``python -m xattr.models.convert``); removal = its own attention masking."""
  from xattr.models import convert

  if not config.model.path or not os.path.isdir(config.model.path):
    raise FileNotFoundError(f"config.model.path must be a folder written by `python -m xattr.models.convert`, got "
                            f"{config.model.path!r}.")
  model = convert.load_checkpoint(config.model.path)
  source = image_source(config, None)
  cfg = model.config
  if tuple(source.example_shape) != (*cfg.image_hw, cfg.num_channels) or source.num_classes != cfg.num_classes:
    raise ValueError(f"checkpoint/model mismatch: {config.model.path} is a ViT for {cfg.image_hw} images with "
                     f"{cfg.num_channels} channels and {cfg.num_classes} classes; the data {source.name!r} has "
                     f"images {source.example_shape} and {source.num_classes} classes. Set "
                     "config.data.image_size, or fine-tune the model on this dataset (experiments.vit_shapley with "
                     "model.init_from).")
  if config.removal != "attention":
    raise ValueError(f"config.removal for a converted ViT must be 'attention', got {config.removal!r}.")
  probs, game_fn, logits = _vit_functions(model, model)
  return Task(source, model.num_patches, probs, game_fn, logits, cfg.patch_size, None, params_fingerprint(model),
              f"converted ViT {config.model.path}; removal: attention masking", model.grid, model)


MODEL_KINDS: dict[str, Callable[[ml_collections.ConfigDict, str], Task]] = {
    "mlp": mlp_task,
    "vit_shapley": lambda config, workdir: vit_shapley_task(config),
    "vit": lambda config, workdir: vit_task(config),
}


def build_task(config: ml_collections.ConfigDict, workdir: str) -> Task:
  """The :class:`Task` of an attribution config (``config.model.kind`` in :data:`MODEL_KINDS`)."""
  kind = config.model.kind
  if kind not in MODEL_KINDS:
    raise ValueError(f"config.model.kind must be one of {tuple(MODEL_KINDS)}, got {kind!r}.")
  return MODEL_KINDS[kind](config, workdir)
