"""Locality alignment (MaskEmbed) on 2x2 digit mosaics (32x32 pixels, 8x8 patches: 16 patch tokens).

Run (from the repository root; CPU is enough, see the README for the measured runtime):

  python -m experiments.maskembed --config=configs/maskembed/mosaic.py --workdir=runs/maskembed

Tiny version for tests (seconds):

  python -m experiments.maskembed --config=configs/maskembed/mosaic.py:smoke --workdir=/tmp/maskembed_smoke

Override any field, e.g. ``--config.seeds='(0,)' --config.maskembed.scheme=blockwise
--config.model.dtype=bfloat16 --config.maskembed.accumulate=4`` (the config is locked: misspelled fields fail).
"""

import ml_collections
from ml_collections.config_dict import placeholder


def stage(num_steps: int, batch_size: int, learning_rate: float, *, warmup_steps: int, b2: float = 0.95,
          accumulate: int = 1) -> ml_collections.ConfigDict:
  """One training stage: AdamW (0.9, b2), weight decay 0.01, clipping at 1.0, warmup + cosine to lr/10;
  ``num_steps`` optimizer updates of ``accumulate`` micro-batches of ``batch_size``."""
  return ml_collections.ConfigDict(dict(
      num_steps=num_steps, batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
      final_lr_fraction=0.1, weight_decay=0.01, grad_clip=1.0, b1=0.9, b2=b2, accumulate=accumulate,
      log_every=min(50, num_steps), checkpoint_every=max(num_steps // 2, 1)))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config; ``arg='smoke'`` shrinks every budget."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use no argument or 'smoke'.")
  config = ml_collections.ConfigDict()
  config.seeds = (0, 1, 2)
  config.data_seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="mosaic",                         # 'mosaic' (offline, scikit-learn digits) or a TFDS segmentation set
      num_train=4000, num_test=1000, grid=2, tile_size=16, patch_size=8, jitter=2, empty_prob=0.2, noise=0.15,
      data_dir=placeholder(str), num_classes=10, image_size=32, ignore_index=placeholder(int)))

  config.model = ml_collections.ConfigDict()
  config.model.name = "mu/8"                 # xattr.models.vit.config name: size/patch (patch = data.patch_size)
  config.model.overrides = ml_collections.ConfigDict(dict(depth=4))
  config.model.dtype = "float32"             # 'bfloat16' on accelerators
  config.model.init_from = placeholder(str)  # a converted pretrained ViT to start the backbone from

  # One backbone trained once with image-level labels (the given "CLIP"); seeds vary alignment, MIM and probes.
  config.shared_backbone = True
  config.backbone_seed = 0
  config.backbone = stage(1200, 64, 1e-3, warmup_steps=100, b2=0.999)
  config.maskembed = stage(500, 48, 1e-3, warmup_steps=50)
  config.maskembed.update(depth=placeholder(int), decoder_depth=2, scheme="uniform", antithetic=True,
                          include_full=True, scale_examples=1024, num_validation=256)   # 0: no validation loss
  config.mim = stage(300, 48, 1e-3, warmup_steps=30)
  config.mim.update(depth=placeholder(int), decoder_depth=2)

  config.probes = ml_collections.ConfigDict()
  config.probes.kinds = ("linear", "transformer")
  config.probes.num_heads = 2
  config.probes.linear = stage(1500, 256, 1e-2, warmup_steps=20, b2=0.999)
  config.probes.transformer = stage(500, 64, 1e-3, warmup_steps=20, b2=0.999)

  config.report = ml_collections.ConfigDict(dict(num_images=4))

  if arg == "smoke":
    config.seeds = (0,)
    config.shared_backbone = False
    config.data.update(num_train=96, num_test=32)
    config.model.overrides.depth = 2
    config.backbone = stage(8, 32, 1e-3, warmup_steps=2, b2=0.999)
    config.maskembed.update(stage(4, 16, 5e-4, warmup_steps=1, accumulate=2))
    config.maskembed.update(scale_examples=64, num_validation=0, decoder_depth=1)   # fewer programs to compile
    config.mim.update(stage(4, 16, 5e-4, warmup_steps=1))
    config.mim.decoder_depth = 1
    config.probes.linear = stage(6, 32, 3e-3, warmup_steps=1, b2=0.999)
    config.probes.transformer = stage(6, 32, 1e-3, warmup_steps=1, b2=0.999)
    config.report.num_images = 2
    for opt in (config.backbone, config.maskembed, config.mim, config.probes.linear, config.probes.transformer):
      opt.checkpoint_every = opt.num_steps                   # one checkpoint per stage (saves take time)
  return config
