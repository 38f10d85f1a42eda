"""Models (Flax NNX) and their functional view for the cores."""

from xattr.models.mlp import ACTIVATIONS, MLP, Functional, functional, model_fn, rowwise

__all__ = ["ACTIVATIONS", "MLP", "Functional", "functional", "model_fn", "rowwise"]

from xattr.models import convert, vit
from xattr.models.vit import ViT, ViTConfig

__all__ += ["ViT", "ViTConfig", "convert", "vit"]
