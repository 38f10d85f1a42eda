"""Meshes, padding, sharded batches and batched explanations; the 4-device check runs in its own process."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xattr import parallel

KEY = jax.random.key(7)
D = 5


def projection(x, key):
  """Explains one input by a key-dependent random projection, plus integer draws that must match exactly."""
  features, label = x
  w = jax.random.normal(key, (D, 3))
  return {"proj": features @ w + label, "bits": jax.random.randint(key, (2,), 0, 1000)}


def inputs(n=7):
  rng = np.random.default_rng(0)
  return rng.normal(size=(n, D)).astype(np.float32), np.arange(n, dtype=np.float32)


def loop_reference(fn, xs, key):
  """What explain_batch must return: one plain (unjitted) call per input with key fold_in(key, i)."""
  n = jax.tree.leaves(xs)[0].shape[0]
  outs = [fn(jax.tree.map(lambda a: a[i], xs), jax.random.fold_in(key, i)) for i in range(n)]
  return jax.tree.map(lambda *rows: np.stack(rows), *outs)


def assert_tree_close(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a), np.asarray(e)
    assert a.shape == e.shape
    if np.issubdtype(e.dtype, np.floating):
      np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_array_equal(a, e)


# --- pad_to_multiple / shard_batch ---------------------------------------------------------------------------

def test_pad_repeats_last_row_and_keeps_array_kind():
  x = {"a": np.arange(10.0).reshape(5, 2), "b": jnp.arange(5)}
  padded, n = parallel.pad_to_multiple(x, 4)
  assert n == 5
  assert isinstance(padded["a"], np.ndarray) and isinstance(padded["b"], jax.Array)
  np.testing.assert_array_equal(padded["a"], np.concatenate([x["a"], np.repeat(x["a"][-1:], 3, 0)]))
  np.testing.assert_array_equal(padded["b"], [0, 1, 2, 3, 4, 4, 4, 4])
  same, n = parallel.pad_to_multiple(x, 5)
  assert n == 5 and same["a"].shape == (5, 2) and same["b"].shape == (5,)


@pytest.mark.parametrize("tree, multiple, match", [
    (np.ones((3, 2)), 0, "multiple must be a positive int, got 0"),
    (np.ones((3, 2)), 2.0, "multiple must be a positive int, got 2.0"),
    ({"a": np.ones((3, 2)), "b": np.ones(4)}, 2, r"share the leading .*\(3, 2\).*\(4,\)"),
    ({"a": np.ones(3), "b": np.float32(1.0)}, 2, r"leading batch axis, got a leaf of shape \(\)"),
    ({}, 2, "at least one array"),
    (np.ones((0, 2)), 2, "at least one example"),
])
def test_pad_errors(tree, multiple, match):
  with pytest.raises(ValueError, match=match):
    parallel.pad_to_multiple(tree, multiple)


def test_shard_batch():
  mesh = parallel.make_mesh()
  sharded, n = parallel.shard_batch({"x": np.ones((3, 2), np.float32)}, mesh)
  size = mesh.shape["data"]
  assert n == 3
  assert sharded["x"].shape[0] == -(-3 // size) * size
  assert sharded["x"].sharding == parallel.data_sharding(mesh)


# --- meshes and shardings ------------------------------------------------------------------------------------

def test_make_mesh():
  mesh = parallel.make_mesh()
  assert dict(mesh.shape) == {"data": len(jax.devices())}
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  one = parallel.make_mesh(1, "batch", devices=jax.devices()[:1])
  assert dict(one.shape) == {"batch": 1} and list(one.devices.flat) == jax.devices()[:1]
  assert parallel.data_sharding(one, "batch").spec == jax.sharding.PartitionSpec("batch")
  assert parallel.replicated(one).spec == jax.sharding.PartitionSpec()


def test_make_mesh_errors():
  available = len(jax.devices())
  with pytest.raises(ValueError, match=f"num_devices={available + 1} exceeds the {available} available"):
    parallel.make_mesh(available + 1)
  with pytest.raises(ValueError, match="num_devices=2 exceeds the 1 available"):
    parallel.make_mesh(2, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="num_devices must be a positive int, got 0"):
    parallel.make_mesh(0)
  with pytest.raises(ValueError, match="axis_name must be a non-empty string"):
    parallel.make_mesh(1, "")
  with pytest.raises(ValueError, match="devices must hold at least one device"):
    parallel.make_mesh(devices=[])


def test_sharding_errors():
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match=r"axis_name must be one of the mesh's axes \('data',\), got 'batch'"):
    parallel.data_sharding(mesh, "batch")
  with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh.*got str"):
    parallel.replicated("data")


# --- explain_batch -------------------------------------------------------------------------------------------

def test_explain_batch_matches_loop():
  xs = inputs()
  out = parallel.explain_batch(projection, xs, KEY, progress=False)
  assert out["proj"].shape == (7, 3) and out["bits"].shape == (7, 2)     # padding stripped
  assert_tree_close(out, loop_reference(projection, xs, KEY))
  # Different keys per input, and a different base key changes the result.
  assert not np.allclose(out["bits"][0], out["bits"][1])
  other = parallel.explain_batch(projection, xs, jax.random.key(8), progress=False)
  assert not np.allclose(other["proj"], out["proj"])


def test_explain_batch_legacy_key_and_device_inputs():
  legacy = jax.random.PRNGKey(3)
  xs = jax.tree.map(jnp.asarray, inputs(5))
  assert_tree_close(parallel.explain_batch(projection, xs, legacy, progress=False),
                    loop_reference(projection, xs, legacy))


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunked_equals_unchunked(chunk_size):
  xs = inputs()
  whole = parallel.explain_batch(projection, xs, KEY, progress=False)
  chunked = parallel.explain_batch(projection, xs, KEY, chunk_size=chunk_size, progress=False)
  assert_tree_close(chunked, whole)


def test_padding_rows_are_real_inputs():
  # Zero padding would divide by zero here; with NaN debugging on, that raises even in discarded rows.
  normalize = lambda x, k: x / x.sum()
  xs = np.abs(inputs()[0]) + 0.1
  with jax.debug_nans(True):
    out = parallel.explain_batch(normalize, xs, KEY, chunk_size=4, progress=False)
  np.testing.assert_allclose(out, xs / xs.sum(1, keepdims=True), rtol=1e-6)


def test_compiles_once_across_chunks_and_calls():
  traces = []

  def fn(x, key):
    traces.append(x.shape)                       # runs only while tracing
    return x * jax.random.uniform(key)

  xs = np.ones((7, 2), np.float32)
  parallel.explain_batch(fn, xs, KEY, chunk_size=2, progress=False)      # 4 chunks, the last one padded
  parallel.explain_batch(fn, xs + 1, KEY, chunk_size=2, progress=False)
  assert traces == [(2,)]


def test_unhashable_explain_fn():
  class Scale:
    __hash__ = None                              # e.g. a dataclass with eq=True

    def __call__(self, x, key):
      return x * 3

  out = parallel.explain_batch(Scale(), np.ones((3, 2), np.float32), KEY, chunk_size=2, progress=False)
  np.testing.assert_array_equal(out, np.full((3, 2), 3.0))


def test_progress_bar_only_with_several_chunks(capsys):
  fn = lambda x, k: x * 2
  xs = np.ones((4, 2), np.float32)
  parallel.explain_batch(fn, xs, KEY)
  assert "explain_batch" not in capsys.readouterr().err
  parallel.explain_batch(fn, xs, KEY, chunk_size=1)
  assert "4/4" in capsys.readouterr().err
  parallel.explain_batch(fn, xs, KEY, chunk_size=1, progress=False)
  assert "explain_batch" not in capsys.readouterr().err


def test_explain_batch_errors():
  xs = inputs()
  with pytest.raises(ValueError, match=r"key must be a single PRNG key.*got shape \(3,\)"):
    parallel.explain_batch(projection, xs, jax.random.split(KEY, 3))
  with pytest.raises(ValueError, match="key must be a single PRNG key.*dtype float32"):
    parallel.explain_batch(projection, xs, jnp.zeros(2))
  with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
    parallel.explain_batch(projection, xs, KEY, chunk_size=0)
  with pytest.raises(ValueError, match="explain_fn must be callable"):
    parallel.explain_batch(None, xs, KEY)
  with pytest.raises(ValueError, match=r"inputs leaves must share the leading .*\(7, 5\), \(6,\)"):
    parallel.explain_batch(projection, (xs[0], xs[1][:6]), KEY)
  with pytest.raises(ValueError, match="axis_name must be one of the mesh's axes"):
    parallel.explain_batch(projection, xs, KEY, mesh=parallel.make_mesh(axis_name="batch"))


# --- multi-host helpers --------------------------------------------------------------------------------------

_LAUNCH_VARS = ["JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "TPU_PROCESS_ADDRESSES",
                "TPU_WORKER_HOSTNAMES"]


@pytest.fixture
def fake_distributed(monkeypatch):
  """Records jax.distributed.initialize calls instead of starting a runtime; clears launcher variables."""
  calls = []
  for var in _LAUNCH_VARS:
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(calls))
  return calls


def test_initialize_distributed_single_process_is_noop(fake_distributed, monkeypatch):
  assert parallel.initialize_distributed() is False
  # A one-task Slurm job is still a single process.
  for var, value in dict(SLURM_JOB_ID="1", SLURM_STEP_NODELIST="n1", SLURM_NTASKS="1", SLURM_PROCID="0",
                         SLURM_LOCALID="0").items():
    monkeypatch.setenv(var, value)
  assert parallel.initialize_distributed() is False
  assert fake_distributed == []


def test_initialize_distributed_explicit_and_idempotent(fake_distributed):
  assert parallel.initialize_distributed("10.0.0.1:1234", 2, 1) is True
  assert fake_distributed == [dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)]
  assert parallel.initialize_distributed("10.0.0.1:1234", 2, 1) is True
  assert len(fake_distributed) == 1


def test_initialize_distributed_from_environment(fake_distributed, monkeypatch):
  monkeypatch.setenv("SLURM_NTASKS", "4")
  for var in ["SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID"]:
    monkeypatch.setenv(var, "0")
  assert parallel.initialize_distributed() is True
  assert fake_distributed == [dict(coordinator_address=None, num_processes=None, process_id=None)]


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_COORDINATOR_ADDRESS"),
    ({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}, "ompi"),
    ({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "1"}, None),
    ({"TPU_WORKER_HOSTNAMES": "a,b"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "a"}, None),
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}, None),          # not inside a step: srun sets the rest
])
def test_detect_multiprocess(env, expected):
  assert parallel.detect_multiprocess(env) == expected


def test_initialize_distributed_errors():
  with pytest.raises(ValueError, match="process_id must be < num_processes=2, got 2"):
    parallel.initialize_distributed("h:1", 2, 2)
  with pytest.raises(ValueError, match="num_processes must be a positive int, got 0"):
    parallel.initialize_distributed("h:1", 0, 0)
  with pytest.raises(ValueError, match="process_id must be a non-negative int, got -1"):
    parallel.initialize_distributed("h:1", 2, -1)


def test_host_local_to_global_single_process():
  mesh = parallel.make_mesh()
  rows = 2 * mesh.size
  local = {"x": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3), "y": np.arange(rows)}
  out = parallel.host_local_to_global(local, mesh)
  for key in local:
    assert out[key].sharding == parallel.data_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(out[key]), local[key])


# --- 4 fake devices vs 1 -------------------------------------------------------------------------------------

@pytest.mark.multidevice
def test_four_devices_match_one(tmp_path):
  from tests import multidevice_check as check
  from tests.four_devices import compare_with_one_device

  one, four = compare_with_one_device("multidevice_check.py", tmp_path / "four.npz", check.explain_all)
  check.assert_same(one, four, "parent 1 device vs subprocess 4 devices")
  # The comparison is only meaningful if the estimates are random and the loop lengths vary.
  assert np.ptp(four["kernel_converge/num_evals"]) > 0
  assert np.abs(four["kernel_sampled/std"]).max() > 0
  assert np.abs(four["kernel_stochastic/std"]).max() > 0
