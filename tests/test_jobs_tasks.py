"""xattr.jobs.tasks: config files, placeholder modules, and clear errors before anything is trained or read."""

import numpy as np
import pytest
from flax import nnx

from configs.attribute import breast_cancer, digits
from xattr import jobs


def test_load_config_file_relative_to_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = jobs.load_config_file("configs/explain_tabular/breast_cancer.py:smoke")
  assert config.model.hidden_sizes == (16,)
  with pytest.raises(FileNotFoundError, match="config.model.config: no config file"):
    jobs.load_config_file("configs/none.py")


def test_placeholder_module_and_params_fingerprint():
  make = lambda: nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  zeros = jobs.placeholder_module(make)
  assert zeros.kernel[...].shape == (3, 2) and not np.any(np.asarray(zeros.kernel[...]))
  fp = jobs.tasks.params_fingerprint
  assert fp(make()) == fp(make()) != fp(zeros)


def test_clear_errors_before_loading(tmp_path):
  config = breast_cancer.get_config("smoke")
  config.model.kind = "cnn"
  with pytest.raises(ValueError, match=r"config.model.kind must be one of \('mlp', 'vit_shapley', 'vit'\)"):
    jobs.build_task(config, str(tmp_path))
  config = breast_cancer.get_config("smoke")
  config.data.name = "wine"
  with pytest.raises(ValueError, match="does not match the model's dataset 'breast_cancer'"):
    jobs.build_task(config, str(tmp_path))
  config = digits.get_config("smoke")
  config.model.workdir = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="python -m experiments.vit_shapley"):
    jobs.build_task(config, str(tmp_path))
  config.data.update(name="cifar10", image_size=32, data_dir=str(tmp_path / "no_tfds"))
  with pytest.raises(FileNotFoundError, match=r"(?s)config.data: data_dir.*Prepare it once"):
    jobs.tasks.image_source(config, None)
  config.data.update(name=None)
  with pytest.raises(ValueError, match="config.data.name and config.data.image_size"):
    jobs.tasks.image_source(config, None)
