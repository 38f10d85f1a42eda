"""One seed of a feature selection study: results, their cache and fingerprint, errors, dependency list."""

import ast
import os
import pathlib

import numpy as np
import pytest

from configs.dfs import digits
from xattr.selection import problem as problem_lib
from xattr.selection import study

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tiny(**changes):
  config = digits.get_config("smoke")
  with config.unlocked():
    config.methods, config.seeds, config.pretrain.num_steps, config.max_features = ("random", "static"), (0,), 5, 3
    config.num_test = 16
    for k, v in changes.items():
      config[k] = v
  return config


def test_run_seed_results_and_reuse(tmp_path):
  config = _tiny()
  res = study.run_seed(config, 0, str(tmp_path))
  k = config.max_features
  for m in ("random", "static"):
    assert res[f"{m}/curve"].shape == res[f"{m}/accuracy"].shape == (k + 1,)
    assert res[f"{m}/order"].shape == (16, k)
    np.testing.assert_allclose(res[f"{m}/cost"], np.arange(k + 1))           # uniform costs: cost = #features
  assert (res["static/order"] == res["static/ranking"][None]).all()
  assert str(res["metric_name"]) == "accuracy" and res["labels"].shape == (16,) and "test_images" in res
  path = tmp_path / "results.npz"
  stamp = os.path.getmtime(path)
  with config.unlocked():
    config.progress = True                  # not part of the fingerprint: reused
  again = study.run_seed(config, 0, str(tmp_path))
  assert os.path.getmtime(path) == stamp
  np.testing.assert_array_equal(again["random/order"], res["random/order"])


def test_fingerprint_covers_results_settings_seed_and_data():
  config = _tiny()
  p = problem_lib.load(config, 0)
  fp = study.fingerprint(config, 0, p)
  with config.unlocked():
    config.plots.num_images = 1
    config.compilation_cache = False
  assert study.fingerprint(config, 0, p) == fp
  assert study.fingerprint(config, 1, p) != fp
  assert study.fingerprint(config, 0, p._replace(costs=p.costs * 2)) != fp
  with config.unlocked():
    config.max_features = 2
  assert study.fingerprint(config, 0, p) != fp


def test_errors(tmp_path):
  with pytest.raises(ValueError, match=r"config.methods entries must be in .*got 'lasso'"):
    study.run_seed(_tiny(methods=("random", "lasso")), 0, str(tmp_path))
  with pytest.raises(ValueError, match=r"config.max_features must lie in \[1, 64\].*got 65"):
    study.run_seed(_tiny(max_features=65), 0, str(tmp_path))
  assert not (tmp_path / "results.npz").exists()


def _is_module(name: str) -> bool:
  path = ROOT / name.replace(".", "/")
  return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _xattr_imports(module: str) -> set[str]:
  """The xattr modules that ``module`` (a module or a package) imports anywhere in its source."""
  path = ROOT / module.replace(".", "/")
  files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
  out = set()
  for f in files:
    for node in ast.walk(ast.parse(f.read_text())):
      if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("xattr"):
        out.update(f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module
                   for a in node.names)
      elif isinstance(node, ast.Import):
        out.update(a.name for a in node.names if a.name.startswith("xattr"))
  return out


def test_modules_cover_what_the_results_depend_on():
  """Every xattr module the selection code imports (transitively) is hashed into the results' fingerprint."""
  covered = lambda name: any(name == m or name.startswith(m + ".") for m in study.MODULES)
  todo, seen = ["xattr.selection"], set()
  while todo:
    for name in sorted(_xattr_imports(todo.pop()) - seen):
      seen.add(name)
      if name in ("xattr", "xattr.artifacts", "xattr.reports", "xattr.plots"):
        continue   # the package itself (its version is in every fingerprint), the cache, report and drawing layers
      assert covered(name), name
      todo.append(name)
