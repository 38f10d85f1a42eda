"""MaskEmbed driver on the smoke config: every stage runs, the report holds every row, a rerun resumes."""

import json
import os

import pytest

from configs.maskembed import mosaic as mosaic_config
from experiments import maskembed
from xattr.maskembed import BACKBONES, LABELS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("maskembed"))
  config = mosaic_config.get_config("smoke")
  return config, workdir, maskembed.run(config, workdir)


def test_outputs(smoke):
  config, workdir, out = smoke
  for name in ("report.md", "metrics.json", "patches.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  for stage in ("backbone", "maskembed", "mim"):
    assert os.listdir(os.path.join(workdir, "seed_0", stage, "checkpoints")), stage
  report = open(os.path.join(workdir, "report.md")).read()
  for label in LABELS.values():
    for kind in config.probes.kinds:
      assert f"| {label} | {kind} |" in report, (label, kind)
  saved = json.load(open(os.path.join(workdir, "metrics.json")))
  for name in BACKBONES:
    for kind in config.probes.kinds:
      scores = saved["results"]["0"][name][kind]
      assert 0.0 <= scores["macro_f1"] <= 1.0 and 0.0 <= scores["macro_recall"] <= 1.0, (name, kind, scores)
  gain = saved["f1_gain_maskembed"]["linear"][0]
  assert gain == pytest.approx(saved["results"]["0"]["maskembed"]["linear"]["macro_f1"]
                               - saved["results"]["0"]["backbone"]["linear"]["macro_f1"])


def test_rerun_resumes_without_retraining(smoke):
  config, workdir, first = smoke
  probe_json = os.path.join(workdir, "seed_0", "probes", "maskembed", "transformer", "metrics.json")
  stamp = os.path.getmtime(probe_json)
  again = maskembed.run(config, workdir)
  assert os.path.getmtime(probe_json) == stamp
  assert again["results"] == first["results"]


def test_bad_settings_are_named(tmp_path):
  with pytest.raises(ValueError, match="Unknown config argument"):
    mosaic_config.get_config("huge")
  config = mosaic_config.get_config("smoke")
  config.model.name = "mu/4"
  with pytest.raises(ValueError, match="patch size 4"):
    maskembed.run(config, str(tmp_path / "never_created"))
  assert not (tmp_path / "never_created").exists()
