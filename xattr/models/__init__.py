"""Models (Flax NNX) and their functional view for the cores."""

from xattr.models.mlp import ACTIVATIONS, MLP, POSTPROCESS, Functional, functional, model_fn, rowwise
from xattr.models.predict import predict_in_batches

__all__ = ["ACTIVATIONS", "MLP", "POSTPROCESS", "Functional", "functional", "model_fn", "predict_in_batches",
           "rowwise"]

from xattr.models import convert, vit
from xattr.models.vit import ViT, ViTConfig

__all__ += ["ViT", "ViTConfig", "convert", "vit"]
