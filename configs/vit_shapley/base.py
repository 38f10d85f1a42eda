"""Settings shared by the ViT Shapley configs (not a config file itself: see digits.py, tfds.py)."""

import ml_collections
from ml_collections.config_dict import placeholder


def stage(num_steps: int, batch_size: int, learning_rate: float, *, warmup_steps: int, weight_decay: float = 0.01,
          eval_every: int | None = None) -> ml_collections.ConfigDict:
  """Optimizer and loop settings of one training stage (AdamW, warmup + cosine, clipping at 1.0)."""
  return ml_collections.ConfigDict(dict(
      num_steps=num_steps, batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
      final_lr_fraction=0.0, weight_decay=weight_decay, grad_clip=1.0, eval_every=eval_every or num_steps,
      log_every=min(50, num_steps), checkpoint_every=eval_every or num_steps))


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"               # 'digits' (embedded) or a TFDS name read from data_dir
  config.data.image_size = 32
  config.data.data_dir = placeholder(str)
  config.data.train_split = "train"
  config.data.test_split = "test"
  config.data.max_train = placeholder(int)
  config.data.max_test = placeholder(int)

  config.model = ml_collections.ConfigDict()
  config.model.name = "mu/8"                # xattr.models.vit.config name: size/patch
  config.model.dtype = "float32"            # compute dtype; 'bfloat16' on accelerators
  config.model.overrides = ml_collections.ConfigDict()   # ViTConfig fields to replace, e.g. depth=4
  # Pretrained weights for the classifier (all but the head): a big_vision .npz, a timm .safetensors file, or a
  # folder from `python -m xattr.models.convert`. Files are read from disk; nothing is downloaded.
  config.model.init_from = placeholder(str)

  config.classifier = stage(1500, 64, 1e-3, warmup_steps=100, eval_every=500)
  config.surrogate = stage(1500, 32, 5e-4, warmup_steps=100, eval_every=500)
  config.surrogate.num_masks = 4            # uniform-cardinality masks per image and step
  config.explainer = stage(4000, 16, 1e-3, warmup_steps=200, eval_every=1000)
  config.explainer.num_samples = 32         # paired Shapley-kernel masks per image and step
  config.explainer.extra_blocks = 1
  config.explainer.head_hidden_sizes = (256,)
  config.explainer.num_validation = 64      # test images for the fixed-mask validation loss

  config.evaluate = ml_collections.ConfigDict()
  config.evaluate.num_images = 32           # test images explained and scored (exact: 65,536 evaluations each)
  config.evaluate.chunk_size = 16
  config.evaluate.ground_truth = "auto"     # 'exact' (<= 20 patches), 'kernel_shap' (converged), or 'auto'
  config.evaluate.kernel_shap_threshold = 0.005
  config.evaluate.kernel_shap_max_samples = 2 ** 15
  config.evaluate.baselines = ("random", "leave_one_out", "attention_rollout", "last_layer_attention",
                               "vanilla_gradients", "gradient_x_input", "integrated_gradients", "smoothgrad",
                               "gradcam", "attention_x_gradient", "gradient_rollout", "lrp", "rise", "kernel_shap")
  config.evaluate.rise_masks = 64           # game evaluations for RISE (4 per patch)
  config.evaluate.kernel_shap_evals = 64    # KernelSHAP at the same budget as RISE ("matched compute")
  # KernelSHAP error vs exact at these budgets: how many evaluations it needs to match the explainer's error.
  config.evaluate.kernel_shap_budgets = (32, 64, 128, 256, 512, 1024, 2048)
  config.evaluate.ig_steps = 32
  config.evaluate.smoothgrad_samples = 32
  config.evaluate.smoothgrad_sigma = 0.15
  config.evaluate.sensitivity_sizes = placeholder(tuple)   # None: a few sizes across [1, patches - 1]
  config.evaluate.sensitivity_samples = 64
  config.evaluate.num_heatmaps = 6
  return config
