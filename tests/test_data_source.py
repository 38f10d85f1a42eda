"""The one data source: arrays, .npz files and TFDS (mock data) read a range at a time, with clear errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from xattr import data


def test_arrays_and_head():
  x, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 3
  src = data.from_arrays("toy", x, y, feature_names=["a", "b"])
  assert (src.num_examples, src.example_shape, src.class_names, src.feature_names) == (10, (2,), ("0", "1", "2"),
                                                                                       ("a", "b"))
  np.testing.assert_array_equal(src.read(3, 5)[0], x[3:5])
  assert src.read(3, 5)[1].dtype == np.int32
  head = src.head(4)
  assert head.num_examples == 4 and head.identity != src.identity and not src.is_image
  with pytest.raises(ValueError, match=r"needs 0 <= start <= end <= 10, got \(5, 11\)"):
    src.read(5, 11)
  with pytest.raises(ValueError, match=r"same number of rows, got x \(10, 2\) and y \(9,\)"):
    data.from_arrays("bad", x, y[:9])
  # The identity follows the data: other values, another identity.
  assert data.from_arrays("toy", x + 1, y).identity != src.identity


def test_npz(tmp_path):
  path = tmp_path / "pool.npz"
  np.savez(path, x=np.ones((5, 3)), y=np.array([0, 1, 1, 0, 1]), class_names=np.array(["neg", "pos"]))
  src = data.from_npz(path)
  assert src.name == "pool" and src.class_names == ("neg", "pos") and src.read_all()[0].shape == (5, 3)
  with pytest.raises(KeyError, match=r"must hold arrays \['labels'\].*holds \['class_names', 'x', 'y'\]"):
    data.from_npz(path, y_key="labels")
  with pytest.raises(FileNotFoundError, match="path must be an existing .npz file"):
    data.from_npz(tmp_path / "missing.npz")


def test_tfds_images_and_flattened_vectors(tmp_path):
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    images = data.from_tfds("cifar10", data_dir=tmp_path, split="train", image_size=8, max_examples=4)
    x, y = images.read(1, 3)
    assert images.num_examples == 4 and images.is_image and x.shape == (2, 8, 8, 3) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0 and images.num_classes == 10
    flat = data.from_tfds("mnist", data_dir=tmp_path, split="test", flatten=True)
    assert flat.example_shape == (28 * 28,) and flat.read(0, 2)[0].dtype == np.float32
    with pytest.raises(KeyError, match="feature_key must be a feature of TFDS dataset 'mnist'"):
      data.from_tfds("mnist", data_dir=tmp_path, split="test", feature_key="pixels")


def test_tfds_errors_say_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match="(?s)must be an existing folder.*never downloads"):
    data.from_tfds("cifar10", data_dir=tmp_path / "nope", split="train")


def test_resize_crops_and_scales():
  image = np.zeros((10, 20, 3), np.uint8)
  image[:, 5:15] = 255                                     # the centre square is white
  out = data.resize(image, 5)
  assert out.shape == (5, 5, 3) and out.dtype == np.float32 and np.allclose(out, 1.0)
  with pytest.raises(ValueError, match="image must have shape"):
    data.resize(np.zeros((2, 2, 2, 2)), 4)


def test_npy_source_reads_ranges_from_disk_and_fingerprints_content(tmp_path):
  from xattr import data
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(37, 4)).astype(np.float32), rng.integers(0, 3, 37)
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "y.npy", y)
  src = data.from_npy(tmp_path / "x.npy", tmp_path / "y.npy", block_rows=5)
  assert (src.num_examples, src.example_shape, src.class_names) == (37, (4,), ("0", "1", "2"))
  for start, end in [(0, 37), (3, 9), (36, 37), (5, 5)]:
    xs, ys = src.read(start, end)
    np.testing.assert_array_equal(xs, x[start:end])
    np.testing.assert_array_equal(ys, y[start:end])
  # The identity follows the content, not just the path.
  x[20, 1] += 1.0
  np.save(tmp_path / "x.npy", x)
  assert data.from_npy(tmp_path / "x.npy", tmp_path / "y.npy").identity != src.identity
  np.save(tmp_path / "short.npy", y[:5])
  with pytest.raises(ValueError, match="y_path must hold one label per example"):
    data.from_npy(tmp_path / "x.npy", tmp_path / "short.npy")
  with pytest.raises(FileNotFoundError, match="x_path must be an existing .npy file"):
    data.from_npy(tmp_path / "nope.npy", tmp_path / "y.npy")
