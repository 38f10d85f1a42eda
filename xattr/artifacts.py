"""Artifacts: fingerprints, atomic compute-or-load of array bundles, and resumable stages.

Every saved result of an xattr job (noisy labels, ground-truth values, sampled utilities, evaluation tables)
is an *array bundle*: a dict of numpy arrays in one ``.npz`` file, stored with the fingerprint of everything it
was computed from. A fingerprint covers

  * the settings (config sections, plain values; ``ConfigDict`` is turned into a dict),
  * the identity of the input data (:func:`data_identity`: shapes, dtypes and a hash of the bytes),
  * the library itself: ``xattr.__version__`` and a hash of the source of the xattr modules the result depends
    on (:func:`library_hash`; all of them by default).

So results computed by older core code are recomputed, not silently reused. :func:`compute_or_load` writes the
bundle to a temporary file and renames it, so a killed job never leaves a half-written file; run again, it loads
what is finished and computes the rest.

Example:
  >>> import os, tempfile, numpy as np
  >>> from xattr import artifacts
  >>> fp = artifacts.fingerprint({"budget": 32}, data=np.arange(4.0))
  >>> path = os.path.join(tempfile.mkdtemp(), "values.npz")
  >>> calls = []
  >>> def compute():
  ...   calls.append(1)
  ...   return {"values": np.arange(3.0)}
  >>> artifacts.compute_or_load(path, fp, compute)["values"].tolist()
  [0.0, 1.0, 2.0]
  >>> artifacts.compute_or_load(path, fp, compute)["values"].tolist(), len(calls)   # loaded, not recomputed
  ([0.0, 1.0, 2.0], 1)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["FINGERPRINT_KEY", "library_hash", "data_identity", "fingerprint", "load", "save", "compute_or_load",
           "save_json", "load_json", "Stage", "stage", "use_compilation_cache"]

FINGERPRINT_KEY = "__fingerprint__"
_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def _module_files(modules: Iterable[str] | None, root: pathlib.Path) -> list[pathlib.Path]:
  if modules is None:
    return sorted(root.rglob("*.py"))
  files = []
  for name in modules:
    rel = name.removeprefix("xattr.").replace(".", "/") if name != "xattr" else ""
    target = root / rel
    if target.is_dir():
      files.extend(sorted(target.rglob("*.py")))
    elif target.with_suffix(".py").is_file():
      files.append(target.with_suffix(".py"))
    else:
      raise ValueError(f"modules must name xattr modules or packages (e.g. 'xattr.shapley'), got {name!r}: no "
                       f"{target.with_suffix('.py')} or package folder.")
  return files


@functools.lru_cache(maxsize=32)
def _hash_files(root: pathlib.Path, files: tuple[pathlib.Path, ...], stats: tuple[tuple[int, int], ...]) -> str:
  del stats   # part of the cache key only: an edited file is hashed again
  h = hashlib.sha256()
  for f in files:
    h.update(str(f.relative_to(root)).encode())
    h.update(f.read_bytes())
  return h.hexdigest()[:16]


def library_hash(modules: Iterable[str] | None = None, *, package_dir: str | os.PathLike | None = None) -> str:
  """A hash of the xattr source a result depends on: every module by default, or just ``modules``.

  Args:
    modules: dotted names of xattr modules or subpackages (``"xattr.shapley"``, ``"xattr.valuation"``);
      None hashes the whole package.
    package_dir: the package folder to hash (default: the installed xattr's own folder).

  Example:
    >>> len(library_hash()), library_hash(["xattr.shapley"]) != library_hash(["xattr.banzhaf"])
    (16, True)
  """
  root = pathlib.Path(package_dir).resolve() if package_dir is not None else _PACKAGE_DIR
  files = tuple(_module_files(None if modules is None else tuple(modules), root))
  stats = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files)
  return _hash_files(root, files, stats)


def data_identity(tree: Any) -> list[Any]:
  """A JSON-able identity of array data: per leaf its shape, dtype and a hash of its bytes.

  Example:
    >>> data_identity({"x": np.zeros((2, 3), np.float32)})[0][:2]
    [[2, 3], 'float32']
  """
  import jax   # deferred: artifacts is imported by tools that never touch JAX arrays

  out = []
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    arr = np.ascontiguousarray(np.asarray(leaf))
    out.append([list(arr.shape), str(arr.dtype), hashlib.sha256(arr.tobytes()).hexdigest()[:16]])
  return out


def _jsonable(part: Any) -> Any:
  if hasattr(part, "to_dict") and callable(part.to_dict):        # ml_collections.ConfigDict
    return part.to_dict()
  if dataclasses.is_dataclass(part) and not isinstance(part, type):
    return dataclasses.asdict(part)
  if isinstance(part, np.ndarray):
    return part.tolist()
  return part


def fingerprint(*parts: Any, data: Any = None, modules: Iterable[str] | None = None, library: bool = True,
                package_dir: str | os.PathLike | None = None) -> str:
  """A 16-hex-digit fingerprint of settings, input data and library code.

  Args:
    *parts: anything JSON-serialisable (ConfigDicts and dataclasses are converted; other objects use ``str``).
    data: a pytree of arrays the result is computed from (hashed by :func:`data_identity`).
    modules: the xattr modules the result depends on (see :func:`library_hash`); None: the whole library.
    library: include ``xattr.__version__`` and the library hash (turn off only for results that do not depend
      on xattr code, e.g. a fingerprint of a user's file).
    package_dir: see :func:`library_hash`.

  Example:
    >>> fingerprint({"a": 1}) == fingerprint({"a": 1}), fingerprint({"a": 1}) == fingerprint({"a": 2})
    (True, False)
  """
  payload: list[Any] = [[_jsonable(p) for p in parts]]
  if data is not None:
    payload.append(data_identity(data))
  if library:
    from xattr import __version__
    payload.append([__version__, library_hash(modules, package_dir=package_dir)])
  text = json.dumps(payload, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _atomic_write(path: str, write: Callable[[str], None], suffix: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}{suffix}"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def save(path: str | os.PathLike, arrays: Mapping[str, Any], fp: str) -> None:
  """Writes ``arrays`` and the fingerprint ``fp`` to ``path`` (``.npz``) atomically."""
  path = os.fspath(path)
  if FINGERPRINT_KEY in arrays:
    raise ValueError(f"arrays must not use the reserved name {FINGERPRINT_KEY!r}.")
  out = {k: np.asarray(v) for k, v in arrays.items()}
  _atomic_write(path, lambda tmp: np.savez(tmp, **{FINGERPRINT_KEY: np.array(fp)}, **out), ".npz")


def load(path: str | os.PathLike, fp: str) -> dict[str, np.ndarray] | None:
  """The bundle at ``path`` if it exists and was saved with fingerprint ``fp``; else None."""
  path = os.fspath(path)
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as saved:
      if FINGERPRINT_KEY not in saved.files or str(saved[FINGERPRINT_KEY]) != fp:
        return None
      return {k: saved[k] for k in saved.files if k != FINGERPRINT_KEY}
  except (OSError, ValueError, EOFError):     # unreadable (e.g. written by another program): recompute
    return None


def compute_or_load(path: str | os.PathLike, fp: str,
                    compute: Callable[[], Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Loads the bundle at ``path`` saved with fingerprint ``fp``, or computes it, saves it atomically and returns it.

  Args:
    path: the ``.npz`` file.
    fp: the fingerprint of everything the bundle depends on (see :func:`fingerprint`); a file saved under
      another fingerprint is recomputed and overwritten.
    compute: ``() -> dict name -> array``; called only when nothing valid is saved.
  """
  saved = load(path, fp)
  if saved is not None:
    return saved
  out = {k: np.asarray(v) for k, v in compute().items()}
  save(path, out, fp)
  return out


def save_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically (numpy scalars and arrays become plain numbers and lists)."""
  def default(o: Any) -> Any:
    if isinstance(o, np.generic):
      return o.item()
    if isinstance(o, np.ndarray):
      return o.tolist()
    return str(o)

  def write(tmp: str) -> None:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2, default=default)
  _atomic_write(os.fspath(path), write, ".json")


def load_json(path: str | os.PathLike) -> Any:
  """The JSON at ``path``, or None if there is none."""
  path = os.fspath(path)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


@dataclasses.dataclass(frozen=True)
class Stage:
  """A named step of a job with its own folder and fingerprint; done once its result bundle is saved.

  Attributes:
    directory: the stage's folder (checkpoints, chunks and its ``result.npz`` go here).
    fingerprint: the fingerprint of everything the stage depends on.
  """

  directory: str
  fingerprint: str

  @property
  def result_path(self) -> str:
    return os.path.join(self.directory, "result.npz")

  def path(self, *names: str) -> str:
    """A path inside the stage's folder."""
    return os.path.join(self.directory, *names)

  def done(self) -> bool:
    """Whether the stage's result is saved under its current fingerprint."""
    return load(self.result_path, self.fingerprint) is not None

  def run(self, compute: Callable[[], Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The stage's result: loaded if done, else ``compute()`` (which may resume from the folder), then saved."""
    os.makedirs(self.directory, exist_ok=True)
    return compute_or_load(self.result_path, self.fingerprint, compute)


def stage(workdir: str | os.PathLike, name: str, *parts: Any, data: Any = None,
          modules: Iterable[str] | None = None) -> Stage:
  """The stage ``name`` of a job in ``workdir``, fingerprinted by ``parts``, ``data`` and the library.

  Example:
    >>> import tempfile, numpy as np
    >>> s = stage(tempfile.mkdtemp(), "truth", {"num_players": 4})
    >>> s.done(), s.run(lambda: {"v": np.ones(2)})["v"].tolist(), s.done()
    (False, [1.0, 1.0], True)
  """
  fp = fingerprint(name, *parts, data=data, modules=modules)
  return Stage(os.path.join(os.fspath(workdir), name), fp)


def use_compilation_cache(workdir: str | os.PathLike, *, subdir: str = "jax_cache") -> str:
  """Turns on JAX's persistent compilation cache in ``workdir/subdir`` for every program, however fast to compile.

  A job's seeds, stages and budgets compile the same programs again; with the cache on disk all but the first
  compile (and a resumed or repeated run's) are loads, which on CPU is most of the wall time of small models.

  Args:
    workdir: the job's directory; the cache lives beside its results, so deleting the run deletes it.
    subdir: the cache folder's name inside ``workdir``.

  Returns:
    The absolute path of the cache folder.

  Example:
    >>> import tempfile
    >>> path = use_compilation_cache(tempfile.mkdtemp())
    >>> path.endswith("jax_cache")
    True
  """
  import jax                                        # imported on use: `import xattr.artifacts` stays light

  path = os.path.abspath(os.path.join(os.fspath(workdir), subdir))
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path
