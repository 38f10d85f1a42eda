"""The adversarial-shortcuts experiment: data, shortcut generation, victim training cells, resumable stages.

For a config (``configs/shortcuts/*.py``):

  1. load the data (:func:`load_data`: embedded digits 32x32, single-digit mosaics, or a TFDS dataset from a
     user ``data_dir``);
  2. build every shortcut (:data:`GENERATORS` x budgets; :func:`make_shortcut`) and apply it to the training and
     test images (:func:`xattr.shortcuts.apply`: clipped, budget-checked);
  3. train every victim (cnn, mlp, vit) on clean data and on each modified training set, under each defence
     (:func:`train_cell`): training accuracy on the data it was trained on, clean test accuracy, and, for the
     clean-trained victims, accuracy on each modified test set (semantics preserved: it should stay near clean).

Each shortcut and each trained cell is an :func:`xattr.artifacts.stage` fingerprinted by its settings, its data
and the library source, and victims train through ``training.train`` with checkpoints in the stage folder: a run
killed at any point and restarted redoes only the unfinished cell, from its last checkpoint.

Example:
  >>> from xattr.shortcuts import study
  >>> study.budget_label("one_pixel", 8), study.budget_label("fixed_patterns", 8)
  ('l_0 1 px', 'l_inf 8/255')
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from xattr import artifacts, masks, training
from xattr.data import images as images_lib
from xattr.data import mosaic as mosaic_lib
from xattr.shortcuts import victims
from xattr.shortcuts.budget import Shortcut, apply
from xattr.shortcuts.defences import Defence
from xattr.shortcuts.generators import fixed_patterns, patches
from xattr.shortcuts.minmin import error_minimizing

__all__ = ["GENERATORS", "L0_GENERATORS", "MODULES", "Cell", "load_data", "single_digit_mosaics", "budget_label",
           "shortcut_keys", "make_shortcut", "defences", "cell_stage", "train_cell", "load_victim",
           "run"]

GENERATORS = ("fixed_patterns", "patch", "one_pixel", "error_min_classwise", "error_min_samplewise")
L0_GENERATORS = ("one_pixel",)        # replace pixels: an l_0 budget, the l_inf budgets do not apply
# The library code shortcuts and cells depend on (the report and the attribution check are not part of it).
MODULES = ("xattr.shortcuts.budget", "xattr.shortcuts.generators", "xattr.shortcuts.minmin", "xattr.shortcuts.defences",
           "xattr.shortcuts.victims", "xattr.shortcuts.study", "xattr.training", "xattr.parallel", "xattr.models",
           "xattr.data", "xattr._checks")


@dataclasses.dataclass(frozen=True)
class Cell:
  """One trained victim: which data it saw and how it trained, and what it scored."""

  generator: str           # 'none' for clean training data
  budget: str
  victim: str
  defence: str
  train_accuracy: float    # on the (modified) data it was trained on
  clean_test_accuracy: float
  modified_test_accuracy: dict[str, float]   # clean-trained victims only: shortcut key -> accuracy


def single_digit_mosaics(*, num_train: int, num_test: int, seed: int, empty_prob: float = 0.6,
                         noise: float = 0.15) -> images_lib.ImageDataset:
  """2x2 digit mosaics (32x32, :func:`xattr.data.mosaic.digit_mosaics`) that show one digit class only (one or more
  tiles of it, the other cells empty, on noise): a single-label 10-class task whose digits move around.

  Example:
    >>> ds = single_digit_mosaics(num_train=20, num_test=10, seed=0)
    >>> ds.x_train.shape, ds.y_train.shape, ds.num_classes
    ((20, 32, 32, 1), (20,), 10)
  """
  want = {"train": int(num_train), "test": int(num_test)}
  # P(exactly one distinct class) is about 4 (1 - p) p^3 + ...; build enough mosaics to keep the asked number.
  factor = int(np.ceil(1.5 / max(4 * (1 - empty_prob) * empty_prob ** 3, 1e-3)))
  ds = mosaic_lib.digit_mosaics(num_train=factor * want["train"], num_test=factor * want["test"], grid=2,
                                tile_size=16, patch_size=8, empty_prob=empty_prob, noise=noise, seed=seed)
  out = {}
  for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
    keep = np.flatnonzero(y.sum(1) == 1)[:want[split]]
    if len(keep) < want[split]:
      raise ValueError(f"only {len(keep)} single-digit {split} mosaics out of {len(y)}; lower empty_prob's "
                       f"distance from 0.75 or ask for fewer than {want[split]}.")
    out[split] = (x[keep], np.argmax(y[keep], 1).astype(np.int32))
  return images_lib.ImageDataset("mosaic", *out["train"], *out["test"], ds.class_names)


def load_data(config: Any) -> images_lib.ImageDataset:
  """``config.data.name``: 'digits' (embedded, ``image_size``), 'mosaic' or 'tfds:<name>' (from ``data_dir``)."""
  d = config.data
  name = str(d.name)
  if name == "digits":
    ds = images_lib.digits(image_size=int(d.image_size), seed=int(d.split_seed))
  elif name == "mosaic":
    ds = single_digit_mosaics(num_train=int(d.max_train or 2000), num_test=int(d.max_test or 500),
                              seed=int(d.split_seed))
  elif name.startswith("tfds:"):
    ds = images_lib.from_tfds(name[5:], data_dir=d.data_dir, image_size=int(d.image_size), max_train=d.max_train,
                              max_test=d.max_test, train_split=str(d.train_split), test_split=str(d.test_split))
  else:
    raise ValueError(f"config.data.name must be 'digits', 'mosaic' or 'tfds:<name>', got {name!r}.")
  limit = lambda a, m: a if m is None else a[:int(m)]
  return dataclasses.replace(ds, x_train=limit(ds.x_train, d.max_train), y_train=limit(ds.y_train, d.max_train),
                             x_test=limit(ds.x_test, d.max_test), y_test=limit(ds.y_test, d.max_test))


def budget_label(generator: str, linf_255: float) -> str:
  """The budget column of a (generator, l_inf budget) pair."""
  if generator in L0_GENERATORS:
    return "l_0 1 px"
  return f"l_inf {linf_255:g}/255"


def shortcut_keys(config: Any) -> list[tuple[str, float, str]]:
  """``(generator, linf_255, key)`` of every shortcut of the config (l_0 generators once)."""
  out = []
  for g in config.generators:
    if g not in GENERATORS:
      raise ValueError(f"config.generators must name generators of {GENERATORS}, got {g!r}.")
    for b in (config.linf_255[-1:] if g in L0_GENERATORS else config.linf_255):
      out.append((g, float(b), f"{g}@{budget_label(g, b).replace(' ', '').replace('/', '_')}"))
  return out


def make_shortcut(config: Any, generator: str, linf_255: float, ds: images_lib.ImageDataset, seed: int) -> Shortcut:
  """The shortcut ``generator`` at l_inf budget ``linf_255 / 255`` for ``ds`` (per-sample noise: one row per train
  image, then one per test image)."""
  g = config.generator
  key = jax.random.fold_in(jax.random.key(seed), GENERATORS.index(generator))
  linf = float(linf_255) / 255.0
  shape, k = ds.image_shape, ds.num_classes
  if generator == "fixed_patterns":
    return fixed_patterns(key, k, shape, linf=linf, block=int(g.block))
  if generator == "patch":
    return patches(key, k, shape, size=int(g.patch_size), linf=linf, mean_image=ds.x_train.mean(0))
  if generator == "one_pixel":
    return patches(key, k, shape, size=1, mean_image=ds.x_train.mean(0))
  per_sample = generator == "error_min_samplewise"
  x = np.concatenate([ds.x_train, ds.x_test]) if per_sample else ds.x_train
  y = np.concatenate([ds.y_train, ds.y_test]) if per_sample else ds.y_train
  surrogate = victims.build(str(g.surrogate), shape, k, seed=seed + 1000, cnn_channels=tuple(config.cnn.channels),
                            cnn_hidden=int(config.cnn.hidden), mlp_hidden=tuple(config.mlp.hidden)).net
  return error_minimizing(key, x, y, k, surrogate=surrogate, linf=linf, per_sample=per_sample,
                          rounds=int(g.rounds), train_steps=int(g.train_steps), delta_steps=int(g.delta_steps),
                          batch_size=min(int(g.batch_size), len(x)), learning_rate=float(g.learning_rate),
                          stop_accuracy=float(g.stop_accuracy))


def _stage_shortcut(config: Any, workdir: str, generator: str, linf_255: float, key: str,
                    ds: images_lib.ImageDataset, seed: int) -> dict[str, np.ndarray]:
  """Builds (or loads) one shortcut and the modified train and test images; the budget is checked on both."""
  settings = {"generator": config.generator.to_dict(), "cnn": config.cnn.to_dict(), "mlp": config.mlp.to_dict(),
              "seed": seed, "linf_255": linf_255}
  stage = artifacts.stage(workdir, os.path.join("shortcuts", key), generator, settings,
                          data=[ds.x_train, ds.y_train, ds.x_test, ds.y_test], modules=MODULES)

  def compute() -> dict[str, np.ndarray]:
    logging.info("shortcuts: building %s", key)
    sc = make_shortcut(config, generator, linf_255, ds, seed)
    n = len(ds.y_train)
    rows = (np.arange(n), np.arange(n, n + len(ds.y_test))) if sc.per_sample else (None, None)
    x_train = apply(ds.x_train, ds.y_train, sc, indices=rows[0])
    x_test = apply(ds.x_test, ds.y_test, sc, indices=rows[1])
    return {"x_train": x_train, "x_test": x_test, **sc.arrays(), "per_sample": np.array(sc.per_sample)}

  return stage.run(compute)


def defences(config: Any) -> dict[str, Defence]:
  """The defences named by ``config.defences`` ('none', 'augment', 'adversarial'), built from their sections."""
  out = {}
  for name in config.defences:
    if name == "none":
      out[name] = Defence("none")
    elif name == "augment":
      a = config.augment
      out[name] = Defence("augment", crop_padding=int(a.crop_padding), flip=bool(a.flip), noise_std=float(a.noise_std))
    elif name == "adversarial":
      a = config.adversarial
      out[name] = Defence("adversarial", adversarial_linf=float(a.linf_255) / 255.0, adversarial_steps=int(a.steps))
    else:
      raise ValueError(f"config.defences must name 'none', 'augment' or 'adversarial', got {name!r}.")
  return out


def _build_victim(config: Any, kind: str, ds: images_lib.ImageDataset, seed: int) -> victims.Victim:
  return victims.build(kind, ds.image_shape, ds.num_classes, seed=seed, cnn_channels=tuple(config.cnn.channels),
                       cnn_hidden=int(config.cnn.hidden), mlp_hidden=tuple(config.mlp.hidden), vit=str(config.vit.name),
                       vit_overrides=config.vit.overrides.to_dict())


def cell_stage(config: Any, workdir: str, name: str, kind: str, defence: Defence, x_train: np.ndarray,
               ds: images_lib.ImageDataset, eval_keys: Any, seed: int) -> tuple[artifacts.Stage, dict[str, Any]]:
  """The stage of one trained victim and its training section (steps, batch size, optimizer fields)."""
  section = config.train.to_dict()
  if kind in config.train_overrides:
    section.update(config.train_overrides[kind].to_dict())
  stage = artifacts.stage(workdir, os.path.join("cells", name), kind, dataclasses.asdict(defence), section,
                          {"model": {"cnn": config.cnn.to_dict(), "mlp": config.mlp.to_dict(),
                                     "vit": config.vit.to_dict()}, "seed": seed, "eval": sorted(eval_keys)},
                          data=[x_train, ds.y_train, ds.x_test, ds.y_test], modules=MODULES)
  return stage, section


def train_cell(config: Any, workdir: str, name: str, kind: str, defence: Defence, x_train: np.ndarray,
               ds: images_lib.ImageDataset, eval_sets: dict[str, np.ndarray], seed: int,
               stop_at: int | None = None) -> dict[str, np.ndarray]:
  """Trains (or loads the scores of) victim ``kind`` on ``x_train`` under ``defence``.

  Returns:
    ``train_accuracy`` on ``x_train``, ``clean_test_accuracy``, and ``eval/<key>`` on each of ``eval_sets``.

  Raises:
    InterruptedError: training stopped at ``stop_at`` (a kill drill); a rerun resumes from the checkpoint.
  """
  stage, section = cell_stage(config, workdir, name, kind, defence, x_train, ds, eval_sets, seed)

  def compute() -> dict[str, np.ndarray]:
    model = _build_victim(config, kind, ds, seed)
    result = victims.train(model, x_train, ds.y_train, section=_Section(section), defence=defence, seed=seed,
                           workdir=stage.path("train"), progress=bool(config.progress), stop_at=stop_at)
    if result.stopped_early:
      raise InterruptedError(f"cell {name} stopped at step {stop_at} (stop_at); run again to resume.")
    out = {"train_accuracy": victims.accuracy(model, x_train, ds.y_train),
           "clean_test_accuracy": victims.accuracy(model, ds.x_test, ds.y_test)}
    out.update({f"eval/{k}": victims.accuracy(model, x, ds.y_test) for k, x in eval_sets.items()})
    return out

  return stage.run(compute)


def load_victim(config: Any, workdir: str, name: str, kind: str, defence: Defence, x_train: np.ndarray,
                ds: images_lib.ImageDataset, eval_keys: Any, seed: int) -> victims.Victim:
  """The trained victim of a finished cell, restored from its checkpoint."""
  stage, section = cell_stage(config, workdir, name, kind, defence, x_train, ds, eval_keys, seed)
  model = _build_victim(config, kind, ds, seed)
  steps = int(section["num_steps"])
  training.restore(model, stage.path("train"), optimizer=training.optimizer(section, num_steps=steps), min_step=steps)
  return model


class _Section(dict):
  """A dict with attribute access (what ``victims.train`` and ``training.optimizer`` read)."""

  __getattr__ = dict.__getitem__


def _clean_cells(config: Any, workdir: str, kind: str, ds: images_lib.ImageDataset, eval_sets: dict[str, np.ndarray],
                 defence_map: dict[str, Defence], seed: int) -> list[Cell]:
  cells = []
  for dname, defence in defence_map.items():
    evals = eval_sets if dname == "none" else {}
    s = train_cell(config, workdir, f"{kind}/clean/{dname}", kind, defence, ds.x_train, ds, evals, seed)
    cells.append(Cell("none", "—", kind, dname, float(s["train_accuracy"]), float(s["clean_test_accuracy"]),
                      {k: float(s[f"eval/{k}"]) for k in evals}))
  return cells


def run(config: Any, workdir: str) -> dict[str, Any]:
  """Every shortcut and every cell of the config (resumably); returns what the report needs.

  Returns:
    ``{"data": ImageDataset, "keys": [(generator, linf_255, key)], "shortcuts": key -> bundle (modified images and
    the shortcut's arrays), "cells": [Cell], "attribution": key -> victim -> shares}``.
  """
  os.makedirs(workdir, exist_ok=True)
  ds = load_data(config)
  seed = int(config.seed)
  keys = shortcut_keys(config)
  bundles = {key: _stage_shortcut(config, workdir, g, b, key, ds, seed) for g, b, key in keys}
  eval_sets = {key: bundles[key]["x_test"] for _, _, key in keys}
  defence_map = defences(config)
  cells: list[Cell] = []
  for kind in config.victims:
    cells += _clean_cells(config, workdir, kind, ds, eval_sets, defence_map, seed)
    for g, b, key in keys:
      for dname, defence in defence_map.items():
        if dname != "none" and g not in config.defence_generators:
          continue
        s = train_cell(config, workdir, f"{kind}/{key}/{dname}", kind, defence, bundles[key]["x_train"], ds, {},
                       seed)
        cells.append(Cell(g, budget_label(g, b), kind, dname, float(s["train_accuracy"]),
                          float(s["clean_test_accuracy"]), {}))
  attribution = _attribution(config, workdir, ds, keys, bundles, seed)
  return {"data": ds, "keys": keys, "shortcuts": bundles, "cells": cells, "attribution": attribution}


def _attribution(config: Any, workdir: str, ds: images_lib.ImageDataset, keys: list, bundles: dict,
                 seed: int) -> dict[str, dict[str, dict[str, float]]]:
  """Share of Shapley mass on the shortcut's patches, for shortcut-trained and clean-trained victims alike."""
  from xattr.shortcuts import attribution as attribution_lib

  a = config.attribution
  out: dict[str, dict[str, dict[str, float]]] = {}
  for g, b, key in keys:
    if g not in a.generators:
      continue
    n = min(int(a.num_images), len(ds.y_test))
    x_mod = bundles[key]["x_test"][:n]
    changed = attribution_lib.changed_pixels(ds.x_test[:n], x_mod)
    out[key] = {}
    for kind in config.victims:
      for trained_on, name, x_train in (("shortcut", f"{kind}/{key}/none", bundles[key]["x_train"]),
                                        ("clean", f"{kind}/clean/none", ds.x_train)):
        evals = {k: None for _, _, k in keys} if trained_on == "clean" else {}
        stage = artifacts.stage(workdir, os.path.join("attribution", key, f"{kind}_{trained_on}"), a.to_dict(),
                                name, data=[x_mod, x_train], modules=(*MODULES, "xattr.shortcuts.attribution",
                                                                      "xattr.methods", "xattr.games", "xattr.shapley"))

        def compute(name=name, kind=kind, x_train=x_train, evals=evals):
          model = load_victim(config, workdir, name, kind, Defence("none"), x_train, ds, evals, seed)
          share = attribution_lib.mass_on_shortcut(victims.logit_fn(model), x_mod, ds.y_test[:n], changed,
                                                   patch_size=int(a.patch_size), key=jax.random.key(seed),
                                                   method=str(a.method), budget=int(a.budget))
          return {"share": share}

        out[key][f"{kind}/{trained_on}"] = float(np.nanmean(stage.run(compute)["share"]))
    h, w = ds.image_shape[:2]
    groups = masks.patch_groups((h, w), int(a.patch_size)).astype(np.float32)
    covering = (groups @ changed.reshape(n, -1).T.astype(np.float32) > 0).sum(0)     # players holding the shortcut
    out[key]["uniform"] = float(np.mean(covering) / groups.shape[0])
  return out
