"""Settings shared by the configs/shortcuts/*.py configs (each starts from :func:`base` and adjusts it)."""

import ml_collections
from ml_collections.config_dict import placeholder


def base() -> ml_collections.ConfigDict:
  """Defaults for digits 32x32 on CPU: five generators at l_inf 8/255 (one-pixel: l_0 1 px), three victims,
  three defences."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.progress = True
  config.data = ml_collections.ConfigDict(dict(
      name="digits",                 # 'digits' (embedded) | 'mosaic' (single-digit 2x2 mosaics) | 'tfds:<name>'
      image_size=32, split_seed=0, data_dir=placeholder(str), max_train=placeholder(int), max_test=placeholder(int),
      train_split="train", test_split="test"))
  config.generators = ("fixed_patterns", "patch", "one_pixel", "error_min_classwise", "error_min_samplewise")
  config.linf_255 = (8.0,)           # l_inf budgets (in 1/255) of the l_inf-bounded generators
  config.target_linf_255 = 8.0       # the target budget
  config.generator = ml_collections.ConfigDict(dict(
      block=4,                       # fixed_patterns: sign constant over block x block pixels
      patch_size=4,                  # patch: side of the class-specific +-l_inf patch
      surrogate="cnn", rounds=5, train_steps=10, delta_steps=10, batch_size=64, learning_rate=1e-3,
      stop_accuracy=0.99))           # error-minimising min-min
  config.victims = ("cnn", "mlp", "vit")
  config.cnn = ml_collections.ConfigDict(dict(channels=(8, 16), hidden=64))
  config.mlp = ml_collections.ConfigDict(dict(hidden=(256, 256)))
  config.vit = ml_collections.ConfigDict(dict(name="mu/8", overrides=ml_collections.ConfigDict(dict(depth=2))))
  config.train = ml_collections.ConfigDict(dict(num_steps=300, batch_size=64, learning_rate=1e-3,
                                                weight_decay=1e-4, checkpoint_every=100))
  config.train_overrides = ml_collections.ConfigDict()
  config.train_overrides.vit = ml_collections.ConfigDict(dict(num_steps=600, warmup_steps=50))
  config.defences = ("none", "augment", "adversarial")
  config.defence_generators = ("fixed_patterns", "one_pixel", "error_min_classwise")
  config.augment = ml_collections.ConfigDict(dict(crop_padding=2, flip=False, noise_std=0.1))  # no flips: digits
  config.adversarial = ml_collections.ConfigDict(dict(linf_255=8.0, steps=3))
  config.attribution = ml_collections.ConfigDict(dict(
      generators=("one_pixel", "patch"), num_images=16, patch_size=8, method="kernel_shap", budget=512))
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks everything so a run takes about a minute on CPU (the tests' variant)."""
  config.progress = False
  config.data.max_train = 512
  config.data.max_test = 200
  config.generators = ("fixed_patterns", "one_pixel")
  config.victims = ("vit",)                # the victim the smoke budgets fool (see the README table)
  config.vit.name = "nano/8"
  config.vit.overrides.depth = 1
  config.train.num_steps = 150
  config.train.batch_size = 64
  config.train.checkpoint_every = 50
  config.train_overrides.vit.num_steps = 150
  config.train_overrides.vit.warmup_steps = 10
  config.defences = ("none",)             # defences are exercised through study.train_cell in the tests
  config.attribution.generators = ("one_pixel",)
  config.attribution.num_images = 4
  config.attribution.budget = 128
  return config
