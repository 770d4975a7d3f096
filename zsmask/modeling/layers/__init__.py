"""Small building blocks shared by the pixel decoder and the transformer decoder."""
from .blocks import MLP, conv_norm, group_norm, get_activation
from .position_encoding import SinePositionEncoding

__all__ = ["MLP", "conv_norm", "group_norm", "get_activation", "SinePositionEncoding"]
