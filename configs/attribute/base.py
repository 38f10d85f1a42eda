"""Settings shared by the attribution-job configs (not a config file itself: see breast_cancer.py, digits.py)."""

import ml_collections
from ml_collections.config_dict import placeholder


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                           # per-example keys: fold_in(fold_in(key(seed), 1), example index)
  # any name of xattr.jobs.method_names(): a registered method of xattr.methods (shapley, kernel_shap,
  # odd_kernel_shap, permutation, banzhaf_msr, kernel_banzhaf, lime, leave_one_out, random, gradient_x_input,
  # integrated_gradients, smoothgrad, ...) whose settings are read from the config section of that name (if any),
  # or explainer (the vit_shapley workdir's explainer, or a tabular FastSHAP explainer at explainer_path).
  # shapley: xattr.shapley.estimate, the most accurate estimator for the settings (odd_kernel_shap at a fixed
  # budget, kernel_shap in convergence mode: shapley.num_samples=None).
  config.method = "shapley"
  config.target = "all"                     # 'all': values [d, classes]; 'predicted': [d] for the predicted class
  # mlp: marginal | baseline; vit_shapley: surrogate | classifier (attention masking); vit: attention
  config.removal = "marginal"
  config.background_size = 64               # marginal removal: seeded sample of training rows
  config.explainer_path = placeholder(str)  # method='explainer' with a tabular model: xattr.amortize.load(path)
  config.output = placeholder(str)          # the output store; None: <workdir>/attributions
  config.overwrite = False                  # replace a different job's store at `output` instead of refusing
  config.chunk_size = 64                    # examples per chunk: the unit of memory, of writing and of resuming
  config.progress = True

  config.model = ml_collections.ConfigDict()
  config.model.kind = "mlp"                 # mlp | vit_shapley | vit (converted with python -m xattr.models.convert)
  config.model.config = "configs/explain_tabular/breast_cancer.py"   # the config that trained the model ([:arg])
  config.model.workdir = placeholder(str)   # mlp: checkpoint folder (None: <workdir>/model, trained if missing);
                                            # vit_shapley: the experiments.vit_shapley workdir (required)
  config.model.path = placeholder(str)      # vit: folder written by xattr.models.convert

  config.data = ml_collections.ConfigDict()
  config.data.name = placeholder(str)       # None: the model config's dataset; else 'digits' or a TFDS name
  config.data.split = "test"                # 'test' or 'train' (the model config's split names for TFDS)
  config.data.data_dir = placeholder(str)   # TFDS: the folder holding the prepared dataset (never downloaded)
  config.data.image_size = placeholder(int)
  config.data.max_examples = placeholder(int)   # None: every example of the split

  config.shapley = ml_collections.ConfigDict(dict(num_samples=512, batch_size=256))
  config.kernel_shap = ml_collections.ConfigDict(dict(num_samples=512, batch_size=256, paired=True))
  config.permutation = ml_collections.ConfigDict(dict(num_permutations=16, batch_size=256))
  config.banzhaf_msr = ml_collections.ConfigDict(dict(num_samples=512, batch_size=256))
  config.integrated_gradients = ml_collections.ConfigDict(dict(num_steps=32))
  config.smoothgrad = ml_collections.ConfigDict(dict(num_samples=32, sigma=0.15))

  config.report = ml_collections.ConfigDict()
  config.report.curves = True               # store insertion/deletion curves of the predicted class per example
  config.report.curve_steps = placeholder(int)  # None: all d + 1 sizes; an int: that many + 1 (large d)
  config.report.num_images = 8              # overlays in the report (images)
  config.report.max_points = 2000           # examples in the beeswarm plot (tabular)
  return config
