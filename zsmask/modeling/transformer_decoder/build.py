"""Registry of transformer decoders (``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``)."""
from detectron2.utils.registry import Registry

TRANSFORMER_DECODER_REGISTRY = Registry("ZSMASK_TRANSFORMER_DECODER")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Transformer decoders turn multi-scale pixel features into per-query masks and class
embeddings in CLIP's text space. Builders take ``(cfg, in_channels, mask_dim, class_embed_dim)``.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_dim: int, class_embed_dim: int):
    """Build the decoder named by ``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODER_REGISTRY:
        raise KeyError(f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME={name!r} is not registered; "
                       f"registered decoders: {sorted(k for k, _ in TRANSFORMER_DECODER_REGISTRY)}")
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_dim, class_embed_dim)
