"""Models (Flax NNX) and their functional view for the cores."""

from xattr.models.mlp import ACTIVATIONS, MLP, Functional, functional, model_fn

__all__ = ["ACTIVATIONS", "MLP", "Functional", "functional", "model_fn"]
