"""The attribution output store: chunked arrays keyed by example index, written chunk by chunk, read lazily.

A batch attribution job over a large dataset produces, for every example ``i``, a few fixed-shape arrays
(``values[i]``, ``std[i]``, ``probs[i]``, ...). The store keeps each of them as one on-disk array with a leading
example axis, split into chunks of ``chunk_size`` rows, plus a little metadata:

  PATH/meta.json            format, job fingerprint, num_examples, chunk_size, array specs, metadata (config,
                            versions, seed, ...): written once, atomically, when the store is created
  PATH/arrays/<name>/       one zarr array per output, shape [num_examples, ...], chunks [chunk_size, ...]
  PATH/done/<chunk>.json    completion marker of chunk ``c`` (rows [c * chunk_size, (c + 1) * chunk_size)),
                            written atomically AFTER every array's chunk is on disk, with per-array checksums

Why zarr (through tensorstore) rather than array_record or plain numpy files:
  * the data are dense numeric arrays addressed by example index, which is exactly zarr's model: a chunk is one
    file (one object on GCS/S3), so chunk ``c`` of every array can be written in any order, by any process, and
    rewritten idempotently, with no append log to replay or compact; a reader slices ``values[a:b]`` or a single
    feature column without decoding whole records (array_record stores serialized records, good for sequential
    example streams, bad for column slices and numeric reductions);
  * the files are readable without xattr (zarr-python, xarray, dask, tensorstore) and compressed (zstd);
  * tensorstore is already installed as a dependency of Orbax, writes each chunk by write-then-rename on local
    disks, and speaks ``gs://`` / ``s3://`` kvstores for multi-host jobs.
Completion is tracked by the marker files, not by the arrays: a chunk whose marker is missing (the job was killed
while writing it, or the disk filled up) is simply computed and written again, so a resumed job never has
duplicate or missing rows and chunks finished before a crash are never touched.

Example:
  >>> import tempfile, numpy as np
  >>> from xattr import outputs
  >>> path = tempfile.mkdtemp() + "/store"
  >>> specs = {"values": outputs.ArraySpec((3,), "float32")}
  >>> store = outputs.create(path, specs, num_examples=5, chunk_size=2, fingerprint="job-1", metadata={"seed": 0})
  >>> store.write_chunk(2, {"values": np.full((1, 3), 2.0)})    # chunks in any order; the last one is short
  >>> store.write_chunk(0, {"values": np.zeros((2, 3))})
  >>> store.missing_chunks()
  [1]
  >>> reader = outputs.open(path)
  >>> reader["values"][4].tolist(), reader.metadata["seed"], reader.complete
  ([2.0, 2.0, 2.0], 0, False)
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import shutil
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorstore as ts

from xattr import artifacts

__all__ = ["ArraySpec", "Store", "Reader", "LazyArray", "StoreMismatchError", "UnfinishedRowsWarning", "UNFINISHED",
           "create", "create_or_resume", "open", "FORMAT"]

FORMAT = "xattr.outputs/1"
_META = "meta.json"


class StoreMismatchError(FileExistsError):
  """The output path holds a different job's results (or something that is not an xattr store)."""


class UnfinishedRowsWarning(UserWarning):
  """Rows of chunks that no job finished were read: they hold fill values (NaN, -1, False), not results."""


UNFINISHED = ("warn", "raise", "ignore")


def _check_unfinished(unfinished: str) -> str:
  if unfinished not in UNFINISHED:
    raise ValueError(f"unfinished must be one of {UNFINISHED} (reading rows of unfinished chunks), got "
                     f"{unfinished!r}.")
  return unfinished


@dataclasses.dataclass(frozen=True)
class ArraySpec:
  """Shape (per example, without the leading example axis) and dtype of one stored array."""

  shape: tuple[int, ...]
  dtype: str

  def to_json(self) -> dict[str, Any]:
    return {"shape": list(self.shape), "dtype": np.dtype(self.dtype).name}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> ArraySpec:
    return cls(tuple(int(s) for s in d["shape"]), str(d["dtype"]))


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------

def _fill_value(dtype: np.dtype) -> Any:
  # Never-written rows read as values no result can have: NaN for floats, -1 for the int arrays (labels,
  # predictions, targets, evaluation counts are all >= 0). Booleans have no such value; the reader warns about
  # rows of unfinished chunks whatever the dtype (it knows which chunks are done from the markers).
  if np.issubdtype(dtype, np.floating):
    return "NaN"
  if dtype == np.bool_:
    return False
  return int(np.iinfo(dtype).max) if np.issubdtype(dtype, np.unsignedinteger) else -1


def _array_spec(path: str, spec: ArraySpec | None, num_examples: int, chunk_size: int) -> dict[str, Any]:
  out: dict[str, Any] = {"driver": "zarr", "kvstore": {"driver": "file", "path": os.path.abspath(path)}}
  if spec is not None:
    dtype = np.dtype(spec.dtype)
    out["metadata"] = {"shape": [num_examples, *spec.shape], "chunks": [chunk_size, *spec.shape],
                       "dtype": dtype.str, "fill_value": _fill_value(dtype),
                       "compressor": {"id": "zstd", "level": 3}}
  return out


def _checksum(a: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(a).tobytes())


def _read_meta(path: str) -> dict[str, Any] | None:
  meta = os.path.join(path, _META)
  if not os.path.exists(meta):
    return None
  with builtins.open(meta) as f:
    data = json.load(f)
  if data.get("format") != FORMAT:
    raise StoreMismatchError(f"{meta} is not an xattr output store (format {data.get('format')!r}, expected "
                             f"{FORMAT!r}).")
  return data


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(d, Mapping):
    out: dict[str, Any] = {}
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: d}


def _differences(old: Any, new: Any, limit: int = 8) -> list[str]:
  """Human-readable 'key: old -> new' lines between two (nested) JSON-like configs."""
  a, b = _flatten(old), _flatten(new)
  diffs = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
           if json.dumps(a.get(k), default=str) != json.dumps(b.get(k), default=str)]
  return diffs[:limit] + ([f"... and {len(diffs) - limit} more"] if len(diffs) > limit else [])


# ---------------------------------------------------------------------------------------------------------------
# Lazy reading
# ---------------------------------------------------------------------------------------------------------------

class LazyArray:
  """One stored array, read only when indexed: ``a[i]``, ``a[10:20]``, ``np.asarray(a)`` (reads everything).

  Attributes:
    shape: (num_examples, *per-example shape).
    dtype: numpy dtype.
    chunk_size: rows per on-disk chunk (iterate with :meth:`chunks` for bounded memory).
  """

  def __init__(self, store: ts.TensorStore, chunk_size: int, *, name: str = "array",
               missing_chunks: Callable[[], list[int]] | None = None, unfinished: str = "warn"):
    self._store = store
    self.chunk_size = int(chunk_size)
    self._name = name
    self._missing_chunks = missing_chunks
    self._unfinished = _check_unfinished(unfinished)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(int(s) for s in self._store.shape)

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(self._store.dtype.numpy_dtype)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index: Any) -> np.ndarray:
    index = self._numpy_index(index)
    self._check_finished(index)
    return np.asarray(self._store[index].read().result())

  def _check_finished(self, index: Any) -> None:
    """Warns (or raises) when ``index`` reads rows of chunks that were never finished (they hold fill values)."""
    if self._missing_chunks is None or self._unfinished == "ignore":
      return
    missing = self._missing_chunks()
    if not missing:
      return
    first = index[0] if isinstance(index, tuple) and index else index
    rows = np.arange(len(self)) if first is Ellipsis else np.arange(len(self))[first]
    hit = sorted(set(np.unique(np.atleast_1d(rows) // self.chunk_size).tolist()) & set(missing))
    if not hit:
      return
    message = (f"{self._name}: the rows read include unfinished chunk(s) {hit[:8]}{' ...' if len(hit) > 8 else ''} "
               f"(rows {hit[0] * self.chunk_size}-{min((hit[0] + 1) * self.chunk_size, len(self)) - 1}, ...): they "
               "hold fill values (NaN, -1 or False), not results. Rerun the job to finish them, or read only "
               "finished chunks (reader.done_chunks()).")
    if self._unfinished == "raise":
      raise ValueError(message)
    warnings.warn(message, UnfinishedRowsWarning, stacklevel=3)

  def _numpy_index(self, index: Any) -> Any:
    """numpy semantics for the example axis (tensorstore rejects out-of-range slices and negative indices)."""
    first, rest = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, ())
    n = len(self)
    if isinstance(first, slice):
      first = slice(*first.indices(n))
    elif isinstance(first, (int, np.integer)):
      if not -n <= first < n:
        raise IndexError(f"index {first} is out of range for {n} examples.")
      first = int(first) % n
    return (first, *rest) if isinstance(index, tuple) else first

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    out = self[...]
    return out if dtype is None else out.astype(dtype)

  def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(start_row, rows)`` chunk by chunk (one chunk in memory at a time)."""
    for start in range(0, len(self), self.chunk_size):
      yield start, self[start:start + self.chunk_size]

  def __repr__(self) -> str:
    return f"LazyArray(shape={self.shape}, dtype={self.dtype}, chunk_size={self.chunk_size})"


class Reader:
  """Read access to a store: ``reader[name]`` is a :class:`LazyArray`; see :func:`open`.

  Attributes:
    path: the store folder.
    metadata: the job's metadata dict (config, versions, seed, ...).
    fingerprint: the job fingerprint.
    num_examples, chunk_size: layout.
    specs: name -> :class:`ArraySpec`.
  """

  def __init__(self, path: str, meta: Mapping[str, Any], *, unfinished: str = "warn"):
    self.path = path
    self.unfinished = _check_unfinished(unfinished)
    self.metadata = meta["metadata"]
    self.fingerprint = meta["fingerprint"]
    self.num_examples = int(meta["num_examples"])
    self.chunk_size = int(meta["chunk_size"])
    self.specs = {k: ArraySpec.from_json(v) for k, v in meta["arrays"].items()}
    self._arrays: dict[str, LazyArray] = {}

  @property
  def num_chunks(self) -> int:
    return -(-self.num_examples // self.chunk_size)

  def chunk_rows(self, chunk: int) -> tuple[int, int]:
    """Row range [start, end) of chunk ``chunk``."""
    start = chunk * self.chunk_size
    return start, min(start + self.chunk_size, self.num_examples)

  def done_chunks(self) -> list[int]:
    folder = os.path.join(self.path, "done")
    if not os.path.isdir(folder):
      return []
    return sorted(int(f[:-5]) for f in os.listdir(folder) if f.endswith(".json") and f[:-5].isdigit())

  def missing_chunks(self) -> list[int]:
    done = set(self.done_chunks())
    return [c for c in range(self.num_chunks) if c not in done]

  @property
  def complete(self) -> bool:
    return not self.missing_chunks()

  def keys(self) -> list[str]:
    return list(self.specs)

  def __contains__(self, name: str) -> bool:
    return name in self.specs

  def __getitem__(self, name: str) -> LazyArray:
    if name not in self.specs:
      raise KeyError(f"{name!r} is not in the store at {self.path}; it holds {sorted(self.specs)}.")
    if name not in self._arrays:
      store = ts.open(_array_spec(os.path.join(self.path, "arrays", name), None, 0, 0), open=True,
                      read=True).result()
      self._arrays[name] = LazyArray(store, self.chunk_size, name=f"{self.path}[{name!r}]",
                                     missing_chunks=self.missing_chunks, unfinished=self.unfinished)
    return self._arrays[name]

  def verify(self) -> list[int]:
    """Chunks whose stored rows no longer match the checksums recorded when they were written (should be [])."""
    bad = []
    for c in self.done_chunks():
      with builtins.open(os.path.join(self.path, "done", f"{c:08d}.json")) as f:
        sums = json.load(f)["checksums"]
      start, end = self.chunk_rows(c)
      if any(_checksum(self[k][start:end]) != v for k, v in sums.items()):
        bad.append(c)
    return bad

  def __repr__(self) -> str:
    done = len(self.done_chunks())
    return (f"Reader({self.path!r}, {self.num_examples} examples, {done}/{self.num_chunks} chunks done, "
            f"arrays={ {k: (self.num_examples, *v.shape) for k, v in self.specs.items()} })")


class Store(Reader):
  """A store open for writing chunks (see :func:`create_or_resume`)."""

  def __init__(self, path: str, meta: Mapping[str, Any]):
    super().__init__(path, meta)
    self._writers: dict[str, ts.TensorStore] = {}

  def _writer(self, name: str) -> ts.TensorStore:
    if name not in self._writers:
      self._writers[name] = ts.open(_array_spec(os.path.join(self.path, "arrays", name), None, 0, 0), open=True,
                                    read=True, write=True).result()
    return self._writers[name]

  def write_chunk(self, chunk: int, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes every array's rows of chunk ``chunk``, then its completion marker.

    Args:
      chunk: chunk index in [0, num_chunks).
      arrays: one entry per stored array, each with exactly the chunk's row count as leading axis.

    Raises:
      ValueError: a missing/extra array or a wrong shape.
      OSError: the disk refused the write (the chunk stays missing; earlier chunks are untouched).
    """
    if not 0 <= chunk < self.num_chunks:
      raise ValueError(f"chunk must lie in [0, {self.num_chunks}), got {chunk}.")
    if set(arrays) != set(self.specs):
      raise ValueError(f"arrays must hold exactly {sorted(self.specs)}, got {sorted(arrays)}.")
    start, end = self.chunk_rows(chunk)
    rows = {}
    for name, spec in self.specs.items():
      a = np.asarray(arrays[name], dtype=np.dtype(spec.dtype))
      if a.shape != (end - start, *spec.shape):
        raise ValueError(f"arrays[{name!r}] for chunk {chunk} must have shape {(end - start, *spec.shape)}, got "
                         f"{a.shape}.")
      rows[name] = a
    futures = [self._writer(name)[start:end].write(a) for name, a in rows.items()]
    for future in futures:
      _result(future)
    marker = {"rows": [start, end], "checksums": {k: _checksum(a) for k, a in rows.items()}}
    artifacts.save_json(os.path.join(self.path, "done", f"{chunk:08d}.json"), marker)


def _result(future: Any) -> Any:
  """tensorstore errors as OSError (they are I/O failures: disk full, permission, vanished folder)."""
  try:
    return future.result()
  except ValueError as err:   # tensorstore reports I/O failures as ValueError with the OS message inside
    raise OSError(str(err)) from err


# ---------------------------------------------------------------------------------------------------------------
# Creating, resuming, opening
# ---------------------------------------------------------------------------------------------------------------

def _check_specs(specs: Mapping[str, ArraySpec]) -> None:
  if not specs:
    raise ValueError("specs must name at least one array.")
  for name, spec in specs.items():
    if not isinstance(spec, ArraySpec):
      raise ValueError(f"specs[{name!r}] must be an ArraySpec, got {type(spec).__name__}.")
    if not name or "/" in name or name.startswith("."):
      raise ValueError(f"array names must be plain folder names, got {name!r}.")


def create(path: str | os.PathLike, specs: Mapping[str, ArraySpec], *, num_examples: int, chunk_size: int,
           fingerprint: str, metadata: Mapping[str, Any] | None = None) -> Store:
  """Creates an empty store at ``path`` (the folder must not hold a store already; see :func:`create_or_resume`).

  Args:
    path: folder to create.
    specs: array name -> :class:`ArraySpec` (per-example shape and dtype).
    num_examples: rows of every array.
    chunk_size: rows per chunk (the unit of writing and of resuming).
    fingerprint: identifies the job; a later run with another fingerprint is refused.
    metadata: JSON-serializable job description (config, versions, seed, ...).

  Returns:
    The writable :class:`Store`.
  """
  path = os.fspath(path)
  _check_specs(specs)
  for name, value in (("num_examples", num_examples), ("chunk_size", chunk_size)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}.")
  if _read_meta(path) is not None:
    raise StoreMismatchError(f"{path} already holds an xattr output store; use create_or_resume.")
  os.makedirs(os.path.join(path, "done"), exist_ok=True)
  for name, spec in specs.items():
    ts.open(_array_spec(os.path.join(path, "arrays", name), spec, int(num_examples), int(chunk_size)),
            create=True, delete_existing=True).result()
  meta = {"format": FORMAT, "fingerprint": str(fingerprint), "num_examples": int(num_examples),
          "chunk_size": int(chunk_size), "arrays": {k: v.to_json() for k, v in specs.items()},
          "metadata": dict(metadata or {})}
  # meta.json last: a store without it was interrupted while being created and is recreated next time.
  artifacts.save_json(os.path.join(path, _META), meta)   # atomic: a reader sees no store or the whole header
  return Store(path, meta)


def _remove_store(path: str) -> None:
  """Removes what a store consists of (meta.json, arrays/, done/), nothing else in the folder."""
  os.remove(os.path.join(path, _META))     # first: a half-removed store is no longer taken for a valid one
  for sub in ("arrays", "done"):
    shutil.rmtree(os.path.join(path, sub), ignore_errors=True)


def create_or_resume(path: str | os.PathLike, specs: Mapping[str, ArraySpec], *, num_examples: int,
                     chunk_size: int, fingerprint: str, metadata: Mapping[str, Any] | None = None,
                     overwrite: bool = False) -> Store:
  """Opens the store of this job at ``path`` to resume it, or creates it.

  * no store at ``path`` (missing or empty folder, or a store whose creation was interrupted): create it;
  * a store with the same fingerprint and layout: resume it (finished chunks are kept);
  * a store of another job: refuse with :class:`StoreMismatchError` listing what differs, unless ``overwrite``,
    which replaces that store;
  * a non-empty folder that is not a store: always refuse (nothing is deleted that xattr did not write).

  Args:
    path, specs, num_examples, chunk_size, fingerprint, metadata: see :func:`create`.
    overwrite: replace another job's store instead of refusing.

  Returns:
    The writable :class:`Store`; ``store.missing_chunks()`` says what is left to do.

  Raises:
    StoreMismatchError: see above.
  """
  path = os.fspath(path)
  meta = _read_meta(path)
  if meta is None:
    leftovers = [f for f in (os.listdir(path) if os.path.isdir(path) else []) if f not in ("arrays", "done")]
    if os.path.exists(path) and not os.path.isdir(path):
      raise StoreMismatchError(f"The output path {path} is a file, not a folder; choose another output path.")
    if leftovers:
      raise StoreMismatchError(f"The output path {path} is a non-empty folder that is not an xattr output store "
                               f"(it holds {sorted(leftovers)[:5]}); choose another output path. Nothing was "
                               "deleted.")
    if os.path.isdir(path):        # an interrupted creation: arrays/ or done/ without meta.json
      shutil.rmtree(os.path.join(path, "arrays"), ignore_errors=True)
      shutil.rmtree(os.path.join(path, "done"), ignore_errors=True)
    return create(path, specs, num_examples=num_examples, chunk_size=chunk_size, fingerprint=fingerprint,
                  metadata=metadata)
  layout = {"num_examples": int(num_examples), "chunk_size": int(chunk_size),
            "arrays": {k: v.to_json() for k, v in specs.items()}}
  same_layout = all(json.dumps(meta[k], sort_keys=True) == json.dumps(v, sort_keys=True) for k, v in layout.items())
  if meta["fingerprint"] == fingerprint and same_layout:
    return Store(path, meta)
  if not overwrite:
    diffs = _differences(meta.get("metadata", {}).get("config", {}), (metadata or {}).get("config", {}))
    if not same_layout:
      diffs += _differences({k: meta[k] for k in layout}, layout)
    detail = ("; differences: " + "; ".join(diffs)) if diffs else ""
    done = len(Reader(path, meta).done_chunks())
    raise StoreMismatchError(
        f"The output path {path} holds the results of a different job (fingerprint {meta['fingerprint']}, this job "
        f"{fingerprint}; {done} finished chunk(s)){detail}. Refusing to mix them: choose another output path, or "
        "pass --config.overwrite=True (overwrite=True) to replace them.")
  _remove_store(path)
  return create(path, specs, num_examples=num_examples, chunk_size=chunk_size, fingerprint=fingerprint,
                metadata=metadata)


def open(path: str | os.PathLike, *, unfinished: str = "warn") -> Reader:  # noqa: A001 - the issue's public name
  """Opens a store for reading; arrays are read lazily when indexed.

  Rows of chunks no job finished hold fill values that no result can have (NaN for floats, -1 for ints, False
  for booleans); reading them warns (:class:`UnfinishedRowsWarning`) by default.

  Args:
    path: a store folder written by :func:`create` / an attribution job.
    unfinished: what reading rows of unfinished chunks does: 'warn', 'raise' (ValueError) or 'ignore'.

  Returns:
    :class:`Reader`: ``reader["values"][a:b]`` reads rows a..b-1; ``reader.metadata`` holds the job description;
    ``reader.complete`` says whether every chunk is finished.

  Raises:
    FileNotFoundError: ``path`` holds no store.
  """
  path = os.fspath(path)
  meta = _read_meta(path)
  if meta is None:
    raise FileNotFoundError(f"No xattr output store at {path} (no {_META}); run the attribution job first, e.g. "
                            "python -m experiments.attribute --config=configs/attribute/breast_cancer.py "
                            "--workdir=runs/attribute.")
  return Reader(path, meta, unfinished=unfinished)
